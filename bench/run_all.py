"""`make bench`: run every benchmark in bench/ and print its figures (record them in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        failed += rc != 0
    print(
        "\nRecord these figures in docs/benchmarks.md (with the machine and the date); `emd bench` records its own."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
