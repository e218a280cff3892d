"""Shared fixtures (one real local broker, Tansu, and one PostgreSQL server per test process), the markers, and
what keeps parallel test processes apart.

Markers (``pyproject.toml`` declares them):

* ``integration``: the test needs more than its own process: a Kafka broker, a PostgreSQL server, the package
  index, or Python processes running the project (``emd`` commands, workers, the whole pipeline, the signer's
  process pool, the image's SBOM steps). Quick tool children (``openssl``, ``kubectl``, ``promtool``) and HTTP
  servers inside the test's process do not count. ``make test-fast`` runs
  everything else (``-m "not integration"``); a test that asks for the ``broker`` or ``postgres_*`` fixtures
  without the marker errors before its fixtures start, and one that starts a broker, a PostgreSQL server, a
  pipeline or an ``emd`` process without it fails there: the marker cannot drift from what the test does.
* ``slow``: a long end-to-end run (the whole pipeline as processes, kills, outages; tens of seconds or more).
  Always also ``integration``. Under parallel workers the slow tests are handed out first, so no long test starts
  last while the other workers idle.

``make test`` runs the suite in parallel (pytest-xdist, ``--dist loadgroup``). Each worker process has its own
session broker and PostgreSQL server (a test pauses the server to make an outage), its own slice of ports
(``lab.broker.port_range``), and its own ``EMD_DATA_DIR``; tests that must share one expensive module fixture
carry ``pytest.mark.xdist_group`` so they run in one worker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lab.broker import LocalBroker

#: fixtures that start or reach a server: a test asking for one must be marked ``integration``
SERVER_FIXTURES = frozenset({"broker", "postgres_server", "postgres_url"})


#: the stash key under which a test carries why its markers are wrong
WRONG_MARKERS = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Find markers that do not match what a test uses; under parallel workers put the slow tests first."""
    for item in items:
        integration = item.get_closest_marker("integration") is not None
        servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if servers and not integration:
            item.stash[WRONG_MARKERS] = f"uses {', '.join(sorted(servers))} but is not marked integration"
        elif item.get_closest_marker("slow") is not None and not integration:
            item.stash[WRONG_MARKERS] = "is marked slow but not integration"
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # every worker sorts the same way, so they still agree on the collection; a stable sort keeps the rest
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose markers are wrong errors before any fixture starts a server (a collection error would stop
    every test, and under parallel workers only say that a worker crashed)."""
    if (wrong := item.stash.get(WRONG_MARKERS, None)) is not None:
        pytest.fail(f"{item.nodeid} {wrong} (tests/conftest.py says what the markers mean)", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _process_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What every test of this process (and every process it spawns) sees, whatever ran before it in this worker.

    ``EMD_DATA_DIR``: a directory of this test process, never the checkout's ``.emd-data`` (where ``make run``
    keeps its data, and which parallel workers would share). ``KAFKA_ENABLE_IDEMPOTENCE=false``: every
    ``Settings.from_env()`` in the tests, and the workers they spawn, must fit the local broker, which refuses
    idempotent producers (set from the start, not by whichever test first started the broker).
    """
    saved = {k: os.environ.get(k) for k in ("EMD_DATA_DIR", "KAFKA_ENABLE_IDEMPOTENCE")}
    os.environ["EMD_DATA_DIR"] = str(tmp_path_factory.mktemp("emd-data"))
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        os.environ["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _integration_marker_is_true(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``integration`` fails at once if it starts a broker, a PostgreSQL database, a pipeline or
    an ``emd`` process, naming what it started."""
    if request.node.get_closest_marker("integration") is not None:
        return
    from lab.dev.supervisor import Supervisor
    from tests.postgres_server import PostgresServer
    from tests.tls_front import TlsBroker

    def refuse(what: str):
        def refused(*args, **kwargs):
            pytest.fail(
                f"{request.node.nodeid} starts {what} but is not marked integration: add "
                "@pytest.mark.integration (tests/conftest.py says what the markers mean)",
                pytrace=False,
            )

        return refused

    monkeypatch.setattr(LocalBroker, "start", refuse("a local broker"))
    monkeypatch.setattr(TlsBroker, "start", refuse("a broker behind TLS"))
    monkeypatch.setattr(PostgresServer, "start", refuse("a PostgreSQL server"))
    monkeypatch.setattr(PostgresServer, "database", refuse("a PostgreSQL database"))
    monkeypatch.setattr(Supervisor, "start", refuse("a pipeline process"))
    popen_init = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if "services.cli" in map(str, argv) or os.path.basename(str(argv[0])) == "emd":
            refuse(f"an emd process ({' '.join(map(str, argv))[:200]})")()
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)


@pytest.fixture(scope="session")
def broker():
    """A Kafka-protocol broker on loopback: the configured cluster if KAFKA_BOOTSTRAP_SERVERS is set."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):

        class External:
            bootstrap_servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]

        yield External()
        return
    with LocalBroker() as b:
        yield b


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts and ends with default logging, so no test logs into another test's closed capture stream.

    Commands under test call services.logs.configure(), which binds the sys.stderr of that moment — pytest's
    capture stream, closed when the test ends.
    """
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on a loopback port for this test process (tests/postgres_server.py): one per
    parallel worker, since a test may pause it; fails, never skips, without it."""
    from tests.postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh empty database on the session's PostgreSQL server, dropped after the test."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture
def store(tmp_path):
    """A lifecycle store of the test's own (SQLite in tmp_path); modules with a store of another kind define theirs."""
    from services import lifecycle

    s = lifecycle.open_store(tmp_path)
    yield s
    s.close()
