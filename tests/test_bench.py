"""``emd bench``'s arithmetic and its /proc readings (no pipeline here; tests/test_bench_e2e.py runs one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lab.dev import bench, procstat
from services.cli import main


def test_percentile_interpolates_between_ranks():
    """The quantile of 1..5 at 0.5 is 3, at 0.99 it lies between the two largest, and no values give 0."""
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert bench.percentile(values, 0.5) == 3.0
    assert 4.9 < bench.percentile(values, 0.99) < 5.0
    assert bench.percentile([], 0.99) == 0.0


def test_steady_rate_leaves_out_the_ramp_and_the_tail():
    """Completions one every 100 ms between a slow start and a slow end read as 10 documents/s."""
    times = [0, 5000] + [10_000 + 100 * i for i in range(96)] + [30_000, 40_000]
    assert bench.steady_rate(times) == pytest.approx(10.0, rel=0.05)


def test_usage_counts_the_cpu_of_a_child_process():
    """A child that burns CPU shows it in its parent's tree: live children are read, not only reaped ones."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tree = procstat.usage(os.getpid())
            alone = procstat.usage(child.pid)
            if alone is not None and alone.cpu_seconds >= 0.3:
                break
            time.sleep(0.1)
        assert alone is not None and alone.cpu_seconds >= 0.3
        assert tree is not None and tree.processes >= 2
        assert tree.cpu_seconds >= alone.cpu_seconds
        assert alone.peak_rss_mb >= alone.rss_mb > 0
    finally:
        child.kill()
        child.wait()


def test_usage_of_a_process_that_is_gone_is_none():
    """A pid with no process behind it has no usage."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert procstat.usage(child.pid) is None


def test_summary_line_names_every_figure():
    """The last line carries each figure of the issue's format, then acknowledged and documents."""
    result = bench.E2EResult(
        documents=10,
        acknowledged=10,
        dead_lettered=0,
        lost=0,
        docs_per_s=12.5,
        publish_per_s=40.0,
        latency_s={"p50": 0.5, "p95": 0.9, "p99": 1.25},
        offered_rate=20,
        processes=[
            bench.ProcessFigures(n, 2.0, 100.0 + i, 1)
            for i, n in enumerate(("signer", "sender", "status", "callbacks", "emulator", "broker"))
        ],
        producer_cpu_ms_per_doc=3.0,
        seconds=5,
        load_before=(1, 1, 1),
        load_after=(1, 1, 1),
    )
    assert bench.summary_line(result) == (
        "e2e_docs_per_s=12.5 pipeline_cpu_ms_per_doc=8.0 emulator_cpu_ms_per_doc=2.0 producer_cpu_ms_per_doc=3.0 "
        "p99_s=1.25 max_worker_rss_mb=103 acknowledged=10 documents=10"
    )


@pytest.mark.parametrize(
    "argv", [["bench", "--documents", "0"], ["bench", "--rate", "-1"], ["bench", "--documents", "many"]]
)
def test_bad_numbers_are_refused(argv, capsys):
    """A document count or rate that is not a positive number is a usage error, exit 2, saying which."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "emd bench: error: argument" in capsys.readouterr().err


def test_a_missing_sample_folder_is_a_clear_error(tmp_path, capsys):
    """A --samples folder that does not exist: exit 2 and a message naming it, before anything starts."""
    assert main(["bench", "--samples", str(tmp_path / "none"), "--no-record"]) == 2
    assert "no sample folder" in capsys.readouterr().err
