"""`emd broker` in one process and `emd demo` through KAFKA_BOOTSTRAP_SERVERS in another, as a new user runs them:
the workers detect that this broker refuses idempotent producers and go on; with idempotence required they stop,
and the demo says why instead of waiting for its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(**extra: str) -> dict[str, str]:
    # tests/conftest.py sets KAFKA_ENABLE_IDEMPOTENCE=false and EMD_DATA_DIR for the tests; a user has nothing set
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EMD_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def emd_broker() -> Iterator[str]:
    """`emd broker --port P` as its own process; its bootstrap address once it says it is ready."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "broker", "--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("broker ready: export KAFKA_BOOTSTRAP_SERVERS="):
                break
        else:
            pytest.fail(f"emd broker exited with {proc.wait()} before it was ready", pytrace=False)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def _demo(bootstrap: str, tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # the demo's own --timeout fires first and says which documents it waited for
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--workdir",
            str(tmp_path / "run"),
            "--timeout",
            "300",
            *args,
        ],
        env=_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, **env),
        capture_output=True,
        text=True,
        timeout=420,
    )


def test_demo_through_an_external_local_broker_acknowledges_every_document(emd_broker, tmp_path):
    """Twenty documents through `emd broker` named by KAFKA_BOOTSTRAP_SERVERS alone are all acknowledged, none twice,
    and each worker said in its own words (not aiokafka's ERROR) that it turned idempotence off for this broker."""
    done = _demo(emd_broker, tmp_path, "--documents", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "acknowledged=20 dead_lettered=0 unfinished=0 lost=0 duplicated=0"
    logs = {p.stem: p.read_text() for p in (tmp_path / "run" / "logs").glob("*.log")}
    for name in ("signer", "sender", "status", "callbacks"):
        assert "broker refuses idempotent producers" in logs[name], name
        assert "InitProducerIdRequest" not in logs[name], name  # aiokafka's own ERROR line is not printed


def test_demo_with_idempotence_required_stops_and_shows_why(emd_broker, tmp_path):
    """KAFKA_ENABLE_IDEMPOTENCE=true on a broker that refuses it: the demo exits 1 with the component's own line."""
    done = _demo(emd_broker, tmp_path, "--documents", "2", KAFKA_ENABLE_IDEMPOTENCE="true")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("emd demo: the ") and "refuses idempotent producers" in last, done.stderr[-3000:]
    assert "KAFKA_ENABLE_IDEMPOTENCE=true" in last
