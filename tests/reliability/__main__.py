"""``python -m tests.reliability`` (``make reliability``): the whole-system run; the table, then its last line.

Exit 0 only when nothing is lost, duplicated, unexplained or leaked and every planned kill happened.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from services.logs import configure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="make reliability", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--documents", type=int, default=2000, help="valid documents to publish (default 2000)")
    p.add_argument("--kills", type=int, default=24, help="kill -9 of pipeline components (default 24)")
    p.add_argument(
        "--pg-outage", type=float, default=30.0, help="seconds PostgreSQL is down mid-run (default 30)"
    )
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds over which documents, kills and the outage are spread (default: documents/6, "
        "at least 90)",
    )
    p.add_argument("--seed", type=int, default=11, help="seed of the schedule (default 11)")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for every document afterwards"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".emd-data/reliability"),
        help="logs, state and configuration of the run (emptied at start)",
    )
    args = p.parse_args(argv)
    if args.documents < 1 or args.kills < 0:
        p.error("--documents must be at least 1 and --kills not negative")
    from tests.reliability.harness import Plan, Run

    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    configure(fmt="json", level="info", stream=open(workdir / "harness.log", "a"))  # noqa: SIM115 - for the run
    plan = Plan(
        workdir=workdir,
        documents=args.documents,
        kills=args.kills,
        pg_outage_seconds=args.pg_outage,
        window=args.window or max(90.0, args.documents / 6),
        seed=args.seed,
        timeout=args.timeout,
    )
    result = Run(plan, say=lambda line: print(line, file=sys.stderr, flush=True)).execute()
    print(result.table())
    for problem in result.problems[:100]:
        print(f"  ! {problem}")
    print(result.last_line, flush=True)
    return 0 if result.ok and result.kills >= plan.kills else 1


if __name__ == "__main__":
    sys.exit(main())
