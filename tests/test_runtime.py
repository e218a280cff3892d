"""The worker runtime: outputs, dead letters, retry tiers and shutdown, on the real broker."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaProducer

from producer.errors import PermanentError, TransientError
from producer.topology import Topic, ensure_topics
from services.config import Settings
from services.messaging import deadletter as dl
from services.messaging.heartbeat import check_health
from services.messaging.records import Output, Record
from services.messaging.runtime import RetryPolicy, Stage, Ticker
from services.pipeline.status import dead_letter_status
from tests.kafka_helpers import read_all, wait_until
from tests.stage_helpers import running

pytestmark = pytest.mark.integration


def _topics(broker, *suffixes: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    names = {s: f"rt.{run}.{s}" for s in suffixes}
    ensure_topics(
        broker.bootstrap_servers, partitions=2, topics=tuple(Topic(n, "test") for n in names.values())
    )
    return names


def _send(broker, topic: str, items: list[tuple[str, dict]]) -> None:
    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for key, value in items:
        p.send(topic, key=key.encode(), value=json.dumps(value).encode(), headers=[("emd-trace-id", b"t-1")])
    p.flush()
    p.close()


def _stage(broker, tmp_path, names, handler, settings: dict | None = None, **kw) -> Stage:
    settings = Settings.from_env(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        data_dir=tmp_path,
        kafka_enable_idempotence=False,
        shutdown_grace_seconds=5.0,
        **(settings or {}),
    )
    return Stage(
        name="rt",
        input_topic=names["in"],
        handler=handler,
        dead_letter_topic=names["dlt"],
        settings=settings,
        group_id=f"g-{names['in']}",
        serve_metrics=False,
        **kw,
    )


def _headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def test_outputs_are_produced_and_permanent_failures_dead_lettered(broker, tmp_path):
    """Good records reach the output topic; a PermanentError sends the original record to the dead letter."""
    names = _topics(broker, "in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        body = json.loads(record.value)
        if body["bad"]:
            raise PermanentError(
                "document is not valid",
                reason="XSD_INVALID",
                kind="119",
                organization="1.2.643.5.1.13.13.12.2.77.7831",
            )
        return [Output(names["out"], {"n": body["n"]}, key=record.key)]

    _send(broker, names["in"], [(f"doc-{n}", {"n": n, "bad": n == 3}) for n in range(6)])
    with running(_stage(broker, tmp_path, names, handle)):
        out = read_all(broker.bootstrap_servers, names["out"], expect=5, timeout=60)
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=30)
    assert sorted(json.loads(r.value)["n"] for r in out) == [0, 1, 2, 4, 5]
    assert len(dead) == 1
    h = _headers(dead[0])
    assert dead[0].key == b"doc-3" and json.loads(dead[0].value) == {"n": 3, "bad": True}
    assert h[dl.REASON] == "XSD_INVALID" and h[dl.STAGE] == "rt" and h[dl.ORIGINAL_TOPIC] == names["in"]
    assert h[dl.KIND] == "119" and h[dl.LOCAL_UID] == "doc-3" and h["emd-trace-id"] == "t-1"
    assert h[dl.EXCEPTION_FQCN] == "producer.errors.PermanentError"


def test_an_unexpected_exception_is_dead_lettered_not_fatal(broker, tmp_path):
    """A bug in the handler dead-letters that record as UNEXPECTED_ERROR and the stage goes on."""
    names = _topics(broker, "in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        if record.key == "doc-0":
            raise KeyError("patient")
        return [Output(names["out"], b"ok", key=record.key)]

    _send(broker, names["in"], [("doc-0", {}), ("doc-1", {})])
    with running(_stage(broker, tmp_path, names, handle)):
        out = read_all(broker.bootstrap_servers, names["out"], expect=1, timeout=60)
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=30)
    assert [r.key for r in out] == [b"doc-1"]
    assert _headers(dead[0])[dl.REASON] == "UNEXPECTED_ERROR"
    assert _headers(dead[0])[dl.CATEGORY] == "internal"


def test_a_transient_failure_retried_in_place_too_long_is_dead_lettered_with_its_reason(broker, tmp_path):
    """Without retry tiers a record that keeps failing transiently (a claim-check reference to a document the store
    never gets) is dead-lettered with its own reason once EMD_RETRY_IN_PLACE_MAX_SECONDS has passed, instead of
    being retried forever; the records after it go on."""
    names = _topics(broker, "in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        if record.key == "doc-missing":
            raise TransientError("document abc is not in the store", reason="DOCUMENT_MISSING")
        return [Output(names["out"], {"ok": record.key}, key=record.key)]

    _send(broker, names["in"], [("doc-missing", {}), ("doc-fine", {})])
    with running(_stage(broker, tmp_path, names, handle, settings={"retry_in_place_max_seconds": 2.0})):
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=60)
        out = read_all(broker.bootstrap_servers, names["out"], expect=1, timeout=60)
    assert [(r.key, _headers(r)[dl.REASON]) for r in dead] == [(b"doc-missing", "DOCUMENT_MISSING")]
    assert [r.key for r in out] == [b"doc-fine"]


def test_transient_failure_goes_through_a_retry_tier_and_succeeds(broker, tmp_path):
    """A TransientError parks the record in a retry tier until due; the next attempt succeeds."""
    names = _topics(broker, "in", "out", "dlt", "retry0", "retry1")
    attempts: list[int] = []

    async def handle(record: Record) -> list[Output]:
        attempts.append(record.attempt)
        if record.attempt == 0:
            raise TransientError("РЭМД busy", reason="RATE_LIMIT", message_id="m-1")
        return [
            Output(
                names["out"],
                {"attempt": record.attempt, "ids": record.header(dl.MESSAGE_IDS)},
                key=record.key,
            )
        ]

    retry = RetryPolicy(topics=(names["retry0"], names["retry1"]), base_delay=0.5, max_delay=1.0, jitter=0)
    _send(broker, names["in"], [("doc-1", {})])
    with running(_stage(broker, tmp_path, names, handle, retry=retry)):
        out = read_all(broker.bootstrap_servers, names["out"], expect=1, timeout=60)
        parked = read_all(broker.bootstrap_servers, names["retry0"], expect=1, timeout=10)
    assert attempts == [0, 1]
    assert json.loads(out[0].value) == {"attempt": 1, "ids": "m-1"}
    h = _headers(parked[0])
    assert (
        h[dl.ATTEMPTS] == "1"
        and h[dl.RETRY_REASON] == "RATE_LIMIT"
        and h[dl.RETRY_ORIGINAL_TOPIC] == names["in"]
    )


def test_exhausted_retries_dead_letter_with_every_message_id(broker, tmp_path):
    """After max_attempts the record is dead-lettered as RETRIES_EXHAUSTED, naming its origin and all MessageIDs."""
    names = _topics(broker, "in", "out", "dlt", "retry0")

    async def handle(record: Record) -> list[Output]:
        raise TransientError("ИПС unreachable", reason="NETWORK_ERROR", message_id=f"m-{record.attempt}")

    retry = RetryPolicy(topics=(names["retry0"],), base_delay=0.2, max_delay=0.2, max_attempts=3, jitter=0)
    _send(broker, names["in"], [("doc-1", {})])
    with running(_stage(broker, tmp_path, names, handle, retry=retry)):
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=60)
    h = _headers(dead[0])
    assert h[dl.REASON] == "RETRIES_EXHAUSTED" and h[dl.ATTEMPTS] == "3"
    assert h[dl.MESSAGE_IDS] == "m-0,m-1,m-2"
    assert h[dl.ORIGINAL_TOPIC] == names["in"]


def test_stop_request_lets_in_flight_records_finish(broker, tmp_path):
    """A stop requested while records are being handled lets each of them finish and produce its output
    (the stage says it is draining them), and no record is left half-done."""
    import asyncio
    import time

    from structlog.testing import capture_logs

    names = _topics(broker, "in", "out", "dlt")
    started: list[str] = []
    holder: dict[str, Stage] = {}

    async def handle(record: Record) -> list[Output]:
        started.append(record.key)
        if len(started) == 1:
            holder["stage"].request_stop()  # the stop arrives while this record (at least) is in flight
        await asyncio.sleep(2.0)
        return [Output(names["out"], b"done", key=record.key)]

    _send(broker, names["in"], [(f"doc-{n}", {}) for n in range(4)])
    stage = holder["stage"] = _stage(broker, tmp_path, names, handle)
    with capture_logs() as logs, running(stage):
        deadline = time.monotonic() + 60
        while not started and time.monotonic() < deadline:  # the stage stops itself once a record is in
            time.sleep(0.05)
    out = read_all(broker.bootstrap_servers, names["out"], idle=1)
    draining = [e for e in logs if e["event"] == "draining in-flight records"]
    assert started and sorted(r.key.decode() for r in out) == sorted(started)
    assert [e["count"] for e in draining] == [len(started)]


def test_on_dead_letter_outputs_are_produced_with_the_dead_letter(broker, tmp_path):
    """A stage's on_dead_letter outputs (the МИС's status) go out with the dead letter, with every MessageID so far."""
    names = _topics(broker, "in", "dlt", "status")
    seen: list[dl.Failure] = []

    async def handle(record: Record) -> list[Output]:
        raise PermanentError(
            "РЭМД refused it", reason="REMD_REJECTED", remd_code="PERSON_NOT_FOUND", message_id="m-2"
        )

    def on_dead_letter(record: Record, failure: dl.Failure) -> list[Output]:
        seen.append(failure)
        status = dead_letter_status(failure, local_uid=record.key, source="rt")
        return [Output(names["status"], status["data"], key=record.key)]

    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    p.send(names["in"], key=b"doc-1", value=b"{}", headers=[(dl.MESSAGE_IDS, b"m-1")])
    p.flush()
    p.close()
    with running(_stage(broker, tmp_path, names, handle, on_dead_letter=on_dead_letter)):
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=60)
        status = read_all(broker.bootstrap_servers, names["status"], expect=1, timeout=30)
    assert len(dead) == 1 and len(status) == 1 and status[0].key == b"doc-1"
    assert json.loads(status[0].value) == {
        "localUid": "doc-1",
        "status": "rejected",
        "emdrId": None,
        "reason": "REMD_REJECTED",
        "remdCode": "PERSON_NOT_FOUND",
        "message": "РЭМД refused it",
        "messageIds": ["m-1", "m-2"],
    }
    assert seen[0].stage == "rt" and seen[0].message_ids == ("m-1", "m-2")


def test_a_failing_on_dead_letter_hook_does_not_lose_the_dead_letter(broker, tmp_path):
    """When on_dead_letter raises, the record is still dead-lettered and the stage goes on."""
    names = _topics(broker, "in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        if json.loads(record.value)["bad"]:
            raise PermanentError("bad", reason="XSD_INVALID")
        return [Output(names["out"], b"ok", key=record.key)]

    def on_dead_letter(record: Record, failure: dl.Failure) -> list[Output]:
        raise RuntimeError("hook bug")

    _send(broker, names["in"], [("doc-1", {"bad": True}), ("doc-2", {"bad": False})])
    with running(_stage(broker, tmp_path, names, handle, on_dead_letter=on_dead_letter)):
        dead = read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=60)
        out = read_all(broker.bootstrap_servers, names["out"], expect=1, timeout=30)
    assert [r.key for r in dead] == [b"doc-1"] and _headers(dead[0])[dl.REASON] == "XSD_INVALID"
    assert [r.key for r in out] == [b"doc-2"]


def test_a_tickers_outputs_are_produced_and_a_failing_ticker_fails_liveness(broker, tmp_path):
    """A periodic job's outputs reach their topic through the stage's producer; when the job then keeps
    failing, the stage's /healthz and its --check heartbeat say so, while the poll loop still turns."""
    names = _topics(broker, "in", "out", "dlt")
    ticks = {"n": 0}

    async def tick() -> list[Output]:
        ticks["n"] += 1
        if ticks["n"] > 1:
            raise RuntimeError("the store is gone")
        return [Output(names["out"], {"tick": 1}, key="k")]

    async def handle(record: Record) -> list[Output]:
        return []

    stage = _stage(
        broker,
        tmp_path,
        names,
        handle,
        tickers=[Ticker(name="scanner", interval=0.2, stale_after=1.0, tick=tick)],
    )
    with running(stage):
        out = read_all(broker.bootstrap_servers, names["out"], expect=1, timeout=60)
        assert wait_until(lambda: not stage.health()[0], timeout=60)
        ok, text = stage.health()
        assert wait_until(lambda: not check_health(stage.settings, "rt")[0], timeout=30)
    assert [json.loads(r.value) for r in out] == [{"tick": 1}]
    assert "scanner: failing" in text and text.startswith("ok: last poll")


def test_a_dead_letter_the_handler_produces_itself_is_counted(broker, tmp_path):
    """A handler that returns a dead letter (the status worker for a РЭМД rejection) is counted by its category."""
    from services.metrics import REGISTRY

    names = _topics(broker, "in", "dlt")

    async def handle(record: Record) -> list[Output]:
        return [Output(names["dlt"], record.value, key=record.key, headers={dl.CATEGORY: "data"})]

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"stage": "rt-own-dlt", **labels}) or 0.0

    _send(broker, names["in"], [("doc-0", {})])
    stage = _stage(broker, tmp_path, names, handle)
    stage.name = "rt-own-dlt"
    with running(stage):
        read_all(broker.bootstrap_servers, names["dlt"], expect=1, timeout=60)
        deadline = time.monotonic() + 30
        while count("emd_records_total", outcome="dead_letter") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert (1.0, 1.0, 0.0) == (
        count("emd_dead_letters_total", category="data"),
        count("emd_records_total", outcome="dead_letter"),
        count("emd_records_total", outcome="ok"),
    )
