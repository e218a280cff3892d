"""``emd bench`` end to end, small: the real pipeline as processes, its summary line read back. Nothing is timed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lab.dev.samples import REPOSITORY_SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUMMARY = re.compile(
    r"^e2e_docs_per_s=(?P<e2e>\S+) pipeline_cpu_ms_per_doc=(?P<pipeline>\S+) "
    r"emulator_cpu_ms_per_doc=(?P<emulator>\S+) producer_cpu_ms_per_doc=(?P<producer>\S+) "
    r"p99_s=(?P<p99>\S+) max_worker_rss_mb=(?P<rss>\S+) acknowledged=(?P<acknowledged>\d+) "
    r"documents=(?P<documents>\d+)$"
)


def test_bench_of_50_documents_prints_a_sane_summary_line(tmp_path):
    """``emd bench --documents 50`` acknowledges all 50, prints the tables, records the run where it is told, and
    its last line has every figure positive."""
    record = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "bench",
            "--documents",
            "50",
            "--latency-documents",
            "10",
            "--warm-up",
            "5",
            "--ceiling-seconds",
            "0.2",
            "--samples",
            str(REPOSITORY_SAMPLES),
            "--workdir",
            str(tmp_path / "bench"),
            "--record",
            str(record),
            "--timeout",
            "120",  # per phase (warm-up, latency, throughput): the phase that hangs is named
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, last
    figures = {k: float(v) for k, v in m.groupdict().items()}
    assert figures["acknowledged"] == figures["documents"] == 50
    assert all(v > 0 for v in figures.values()), figures
    assert "| signer |" in proc.stdout and "Slowest ceiling" in proc.stdout
    text = record.read_text()
    assert "emd bench" in text and "Machine:" in text and "| signer |" in text
