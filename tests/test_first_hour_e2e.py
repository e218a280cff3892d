"""The first hour of a new user (issue #22): a local start says nothing alarming, `emd demo` tells documents still on
their way from lost ones, and after `make run` the commands its summary prints find that run's documents and dead
letters. Real broker, real processes, the commands as processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.dev.samples import REPOSITORY_SAMPLES
from lab.emulator.faults import REJECTION_CODES
from tests.pipeline_lab import pipeline_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
#: a plain stdlib log line (aiokafka, httpx…) at error level: "2026-12-07 10:01:02,071 ERROR aiokafka…"
_STDLIB_ERROR = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (ERROR|CRITICAL) ")


def _fresh_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh clone: nothing of the pipeline's set (the test session sets some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EMD_"))}
    return {**env, **extra}


def error_lines(text: str) -> list[str]:
    """Every line of a child's log at error level or above, JSON (structlog) or plain (stdlib), and tracebacks."""
    found = []
    for line in text.splitlines():
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = None
        if level in ("error", "critical", "exception") or _STDLIB_ERROR.match(line) or "Traceback" in line:
            found.append(line)
    return found


def test_error_lines_are_recognised_in_both_log_forms():
    """The scan below finds a structlog JSON error, a stdlib ERROR line and a traceback, and passes a warning."""
    log = "\n".join(
        [
            '{"event": "x", "level": "error"}',
            "2026-12-07 10:01:02,071 ERROR aiokafka.producer.sender: Unexpected error",
            '{"event": "y", "level": "warning"}',
            "Traceback (most recent call last):",
        ]
    )
    assert len(error_lines(log)) == 3


@pytest.mark.parametrize(
    "idempotence", ["", "false"], ids=["only-the-bootstrap-exported", "as-emd-run-and-emd-broker-configure"]
)
def test_a_healthy_local_start_logs_no_error_line(tmp_path, idempotence):
    """Every component on the local broker, which refuses aiokafka's idempotent producer, works through two documents
    without one ERROR line: configured as `emd run` and `emd broker`'s line configure it (idempotence off) nothing is
    said about it; with only the bootstrap exported (the production default, idempotence on) each producer says so
    in one warning, and aiokafka's own ERROR about the refused InitProducerId is not printed."""
    with pipeline_lab(tmp_path, count=2, env={"KAFKA_ENABLE_IDEMPOTENCE": idempotence}) as lab:
        lab.publish()
        snap = lab.wait(timeout=300)
        assert snap.per_stage["acknowledged"] == 2
        logs = {
            name: child.log_path.read_text(errors="replace")
            for name, child in lab.pipeline.supervisor.children.items()
        }
    for name, text in logs.items():
        assert error_lines(text) == [], (name, error_lines(text)[:3])
    for name in ("signer", "sender", "status", "callbacks"):
        warned = "broker refuses idempotent producers" in logs[name]
        assert warned == (idempotence == ""), name
        assert "InitProducerIdRequest" not in logs[name]


def _emd(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 540
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_emd_demo_says_unfinished_apart_from_lost(tmp_path):
    """Documents still on their way at the timeout (ИПС down for its first 30 s, a resend only after a minute, a
    20 s timeout) are reported unfinished, not lost, by the summary and the last line, and the exit is 1."""
    done = _emd(
        "demo",
        "--documents",
        "2",
        "--timeout",
        "20",
        "--scenario",
        "outage",
        "--workdir",
        str(tmp_path / "run"),
        cwd=REPO,
        env=_fresh_env(),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "acknowledged=0 dead_lettered=0 unfinished=2 lost=0 duplicated=0"
    assert "2 unfinished (still on their way at the timeout), 0 lost (on no topic)" in done.stderr


def test_make_run_then_status_and_dlq_show_read_that_run(tmp_path):
    """`emd run` on a fresh clone, РЭМД refusing about one document in ten (the ``rejections`` scenario), ends by
    printing the commands that read its data; run as printed, `emd status` shows a registered document's history
    and `emd dlq show` a refused document's signed request, with no cluster left (the run's broker is gone)."""
    samples = tmp_path / "samples"
    samples.mkdir()
    # each document gets a fresh localUid and sha256(localUid) picks the refused ones: with 50 documents the chance
    # that none is refused is 0.9**50, 0.5 %
    for n in range(50):
        shutil.copy(REPOSITORY_SAMPLES / "CertOnPayForMedServ.xml", samples / f"doc-{n:02}.xml")
    clone = tmp_path / "clone"
    clone.mkdir()
    run = _emd(
        "run",
        "--samples",
        str(samples),
        "--scenario",
        "rejections",
        "--timeout",
        "420",
        cwd=clone,
        env=_fresh_env(),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    printed = {}
    for line in run.stdout.splitlines():
        m = re.match(r"\s+(one document's history|one of them in full):\s+(.*)$", line)
        if m:
            printed[m.group(1)] = shlex.split(m.group(2))
    status, show = printed["one document's history"], printed["one of them in full"]
    assert status[0].startswith("EMD_DATA_DIR=") and status[1:3] == ["emd", "status"]
    data_dir = status[0].split("=", 1)[1]
    assert Path(data_dir).is_relative_to(clone / ".emd-data" / "run")
    env = _fresh_env(EMD_DATA_DIR=data_dir)

    history = _emd("status", *status[3:], cwd=clone, env=env, timeout=120)
    assert history.returncode == 0, history.stderr
    assert "state=registered" in history.stdout and re.search(
        r"#1\s+\S+\s+sent .*→ registered", history.stdout
    )
    assert re.search(r"emdrId \S+\s+registered \S+\s+stored till \d{4}-\d\d-\d\d\+03:00", history.stdout)

    assert show[1:4] == ["emd", "dlq", "show"]
    listed = _emd("dlq", "list", cwd=clone, env=env, timeout=120)
    assert listed.returncode == 0 and show[4] in listed.stdout, listed.stderr
    assert "dead letters a local run kept" in listed.stderr
    letter = _emd("dlq", "show", show[4], cwd=clone, env=env, timeout=120)
    assert letter.returncode == 0, letter.stderr
    assert "signed request: not kept" not in letter.stdout
    assert re.search(r"signed request:\n\s+<", letter.stdout), letter.stdout[-2000:]
    assert any(code in letter.stdout for code, _ in REJECTION_CODES), letter.stdout[-2000:]
    unknown = _emd("status", "no-such-document", cwd=clone, env=_fresh_env(), timeout=120)
    assert unknown.returncode == 1 and "EMD_DATA_DIR their last lines print" in unknown.stderr
