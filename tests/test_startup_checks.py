"""Configuration fails loudly and fast: what a worker cannot work with stops it at start with one line that says
what to fix; what can be detected (a broker that refuses idempotent producers) is detected, logged, and worked
around unless the setting is explicit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest
from structlog.testing import capture_logs

from lab.broker import free_port
from producer.errors import ConfigurationError
from producer.topology import Topic, ensure_topics
from services.cli import main as emd
from services.config import Settings
from services.messaging.clients import start_producer
from services.messaging.runtime import Stage


def _settings(bootstrap: str, **overrides) -> Settings:
    return Settings.from_env({}, kafka_bootstrap_servers=bootstrap, **overrides)


@pytest.fixture(scope="module")
def topic(broker) -> str:
    name = f"startup.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, partitions=1, topics=(Topic(name, "test"),))
    return name


async def _start_and_stop(settings: Settings, topic: str = "") -> int:
    """Start a producer as a worker does; the offset of one record it delivers to ``topic``."""
    producer = await start_producer(settings, client_id="test")
    try:
        return (await producer.send_and_wait(topic, b"x")).offset if topic else -1
    finally:
        await producer.stop()


@pytest.mark.integration
def test_unset_idempotence_is_turned_off_with_a_warning_when_the_broker_refuses_it(broker, topic):
    """KAFKA_ENABLE_IDEMPOTENCE unset: the local broker's refusal is detected and logged, and the producer delivers."""
    with capture_logs() as logs:
        assert asyncio.run(_start_and_stop(_settings(broker.bootstrap_servers), topic)) >= 0
    assert [
        e
        for e in logs
        if e["event"].startswith("broker refuses idempotent producers")
        and e["log_level"] == "warning"
        and e["bootstrap"] == broker.bootstrap_servers
    ]


@pytest.mark.integration
def test_explicit_idempotence_on_a_broker_that_refuses_it_is_a_configuration_error(broker):
    """KAFKA_ENABLE_IDEMPOTENCE=true is never overridden: a refusing broker is a ConfigurationError naming the variable."""
    with pytest.raises(
        ConfigurationError, match="refuses idempotent producers.*KAFKA_ENABLE_IDEMPOTENCE=true"
    ):
        asyncio.run(_start_and_stop(_settings(broker.bootstrap_servers, kafka_enable_idempotence=True)))


@pytest.mark.integration
def test_explicit_idempotence_off_is_kept(broker, topic):
    """KAFKA_ENABLE_IDEMPOTENCE=false starts a plain producer, which delivers, without trying idempotence first."""
    with capture_logs() as logs:
        assert (
            asyncio.run(
                _start_and_stop(_settings(broker.bootstrap_servers, kafka_enable_idempotence=False), topic)
            )
            >= 0
        )
    assert not [e for e in logs if "idempotent" in e["event"]]


def test_a_broker_unreachable_after_the_grace_is_a_configuration_error():
    """Nobody listening at KAFKA_BOOTSTRAP_SERVERS: after the start-up grace, a ConfigurationError says what to check."""
    settings = _settings(f"127.0.0.1:{free_port()}", startup_grace_seconds=0.0)
    with pytest.raises(ConfigurationError, match="unreachable.*KAFKA_BOOTSTRAP_SERVERS"):
        asyncio.run(_start_and_stop(settings))


@pytest.mark.integration
def test_a_broker_that_comes_up_within_the_grace_is_waited_for(tmp_path):
    """A worker started before its broker keeps trying, and starts once the broker answers."""
    from lab.broker import LocalBroker

    late = LocalBroker(port=free_port())

    async def start_before_the_broker() -> set[int]:
        asyncio.get_running_loop().call_later(
            1.0, late.start
        )  # this thread: the broker dies with its starter
        producer = await start_producer(
            _settings(late.bootstrap_servers, startup_grace_seconds=60.0), client_id="test"
        )
        try:
            return {b.port for b in (await producer.client.fetch_all_metadata()).brokers()}
        finally:
            await producer.stop()

    try:
        assert asyncio.run(start_before_the_broker()) == {late.port}
    finally:
        late.stop()


@pytest.mark.integration
def test_missing_topics_are_named(broker, topic):
    """A producer asked for topics the broker lacks is a ConfigurationError listing each and how to create them."""
    run = uuid.uuid4().hex[:8]
    missing = [f"missing.{run}.{n}" for n in ("a", "b")]
    settings = _settings(broker.bootstrap_servers, kafka_enable_idempotence=False)
    with pytest.raises(
        ConfigurationError, match=f": {missing[0]}, {missing[1]}; create them with `emd topics`"
    ):
        asyncio.run(start_producer(settings, client_id="test", topics=[topic, *missing]))


@pytest.mark.integration
def test_a_stage_on_missing_topics_stops_at_start(broker, tmp_path):
    """A Stage whose input and dead-letter topics do not exist raises ConfigurationError from run() instead of waiting."""
    run = uuid.uuid4().hex[:8]

    async def handler(record):
        return []

    stage = Stage(
        name="t",
        input_topic=f"absent.{run}",
        handler=handler,
        dead_letter_topic=f"absent.{run}.dlt",
        settings=_settings(broker.bootstrap_servers, data_dir=tmp_path),
    )
    with pytest.raises(ConfigurationError, match=f"absent.{run}, absent.{run}.dlt"):
        asyncio.run(stage.run())


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        (b'{"organizations": [', "not readable JSON"),
    ],
)
def test_a_worker_with_a_bad_organisations_file_exits_with_one_line(
    tmp_path, monkeypatch, capsys, content, says
):
    """`emd worker signer` with a missing or broken organisations file exits 2 with one line naming the file."""
    path = tmp_path / "organizations.json"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("EMD_ORGANIZATIONS", str(path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert emd(["worker", "signer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emd worker signer: ") and str(path) in err and says in err and err.count("\n") == 1


def test_an_unreadable_key_stops_the_worker_naming_it(tmp_path, monkeypatch, capsys):
    """A doctor's key file that is not a key: `emd worker signer` exits 2 naming the organisation and the field."""
    from lab.dev.config import write_dev_config

    config = write_dev_config(tmp_path / "cfg")
    key = next((tmp_path / "cfg").glob("doctor-*.key"))
    key.write_bytes(b"not a key")
    monkeypatch.setenv("EMD_ORGANIZATIONS", str(config))
    monkeypatch.setenv("EMD_LOG_LEVEL", "warning")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert emd(["worker", "signer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emd worker signer: ") and f"{key.stem.removeprefix('doctor-')}].key" in err
    assert err.count("\n") == 1


def test_a_malformed_setting_stops_the_worker_naming_the_variable(monkeypatch, capsys):
    """A boolean setting that is neither true nor false is refused rather than read as off."""
    monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "ture")
    assert emd(["worker", "sender"]) == 2
    assert (
        capsys.readouterr().err
        == "emd worker sender: KAFKA_ENABLE_IDEMPOTENCE='ture' is neither true nor false\n"
    )


@pytest.mark.integration
def test_a_worker_on_a_broker_refusing_what_it_needs_exits_with_a_clear_line(broker, tmp_path):
    """`emd worker sender` with KAFKA_ENABLE_IDEMPOTENCE=true on the local broker exits 2 at start with one line
    (the bound below only keeps a hang from stalling the suite)."""
    from lab.dev.config import write_dev_config

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "true",
        "EMD_ORGANIZATIONS": str(write_dev_config(tmp_path / "cfg")),
        "EMD_DATA_DIR": str(tmp_path / "data"),
        "EMD_LOG_LEVEL": "warning",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "sender"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    said = [line for line in done.stderr.splitlines() if line.startswith("emd worker sender: ")]
    assert (
        len(said) == 1 and "refuses idempotent producers" in said[0] and "KAFKA_ENABLE_IDEMPOTENCE" in said[0]
    )


def test_an_unreadable_ips_certificate_stops_the_callback_service_naming_it(tmp_path, monkeypatch, capsys):
    """`emd callbacks` with an ИПС certificate file that is missing exits 2 with one line naming the variable."""
    from lab.dev.config import write_dev_config

    monkeypatch.setenv("EMD_ORGANIZATIONS", str(write_dev_config(tmp_path / "cfg")))
    monkeypatch.setenv("EMD_IPS_CERTIFICATES", str(tmp_path / "absent.pem"))
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMD_LOG_LEVEL", "warning")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert emd(["callbacks", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("emd callbacks: EMD_IPS_CERTIFICATES: ")
        and "absent.pem" in err
        and err.count("\n") == 1
    )


def test_a_callback_service_without_the_signers_document_store_exits_with_one_line(
    tmp_path, monkeypatch, capsys
):
    """`emd callbacks` on a document store no signer has marked (another data dir, an unshared volume) exits 2
    after the grace with one line naming EMD_DOCUMENT_STORE, instead of failing every getDocumentFile later."""
    from lab.dev.config import write_dev_config
    from lab.dev.pki import DevCA, SubjectInfo, write_pem

    _, cert = DevCA.create("ИПС CA").issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    write_pem(None, cert, cert_path=tmp_path / "ips.pem")
    monkeypatch.setenv("EMD_ORGANIZATIONS", str(write_dev_config(tmp_path / "cfg")))
    monkeypatch.setenv("EMD_IPS_CERTIFICATES", str(tmp_path / "ips.pem"))
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMD_STARTUP_GRACE_SECONDS", "0")
    monkeypatch.setenv("EMD_LOG_LEVEL", "warning")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert emd(["callbacks", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emd callbacks: the document store ") and "holds no mark of a signer" in err
    assert "EMD_DOCUMENT_STORE" in err and err.count("\n") == 1


def test_a_demo_on_an_unreachable_broker_exits_with_one_line(tmp_path, monkeypatch, capsys):
    """`emd demo` with KAFKA_BOOTSTRAP_SERVERS where nobody listens exits 2 after the grace, saying what to check."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("EMD_STARTUP_GRACE_SECONDS", "1")
    assert emd(["demo", "--documents", "1", "--workdir", str(tmp_path / "run")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("emd demo: the Kafka broker at ") and "unreachable" in last
    assert "KAFKA_BOOTSTRAP_SERVERS" in last


def test_a_lifecycle_database_unreachable_after_the_grace_is_a_configuration_error(tmp_path):
    """open_store with a wait: a PostgreSQL nobody serves is a ConfigurationError naming EMD_LIFECYCLE_STORE,
    and never the URL (it may carry a password)."""
    from services.lifecycle import open_store

    url = f"postgresql://emd:s3cret@127.0.0.1:{free_port()}/emd"
    with pytest.raises(ConfigurationError, match="unreachable.*EMD_LIFECYCLE_STORE") as info:
        open_store(tmp_path, url=url, wait=1.0)
    assert "s3cret" not in str(info.value) and "127.0.0.1" not in str(info.value)


@pytest.mark.integration
def test_a_lifecycle_database_back_within_the_grace_is_waited_for(tmp_path):
    """A worker that opens its store while PostgreSQL is down gets the store once the server is back."""
    import threading

    from services.lifecycle import open_store
    from tests.postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        server.pause()
        opened: list = []
        opener = threading.Thread(
            target=lambda: opened.append(open_store(tmp_path, url=server.url, wait=120.0))
        )
        opener.start()
        time.sleep(
            2.0
        )  # the opener is trying meanwhile; the server starts from this thread, which outlives it
        server.resume()
        opener.join(150)
        assert len(opened) == 1 and opened[0].get("nothing-here", organization="1.2.3") is None
        opened[0].close()
    finally:
        server.stop()
