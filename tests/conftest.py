"""Shared fixtures: one real local broker (Tansu) for the whole test session."""

from __future__ import annotations

import os

import pytest

from lab.broker import LocalBroker


@pytest.fixture(scope="session")
def broker():
    """A Kafka-protocol broker on loopback: the configured cluster if KAFKA_BOOTSTRAP_SERVERS is set."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):

        class External:
            bootstrap_servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]

        yield External()
        return
    # Every Settings.from_env() in the tests (and the workers they spawn) must fit the local broker.
    os.environ["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
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
    """A throwaway PostgreSQL server on a loopback port for the session (tests/postgres_server.py); fails, never skips, without it."""
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
