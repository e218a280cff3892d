"""The worker runtime: outputs, dead letters, retries, ordering, rebalances, shutdown and burst runs.

Every test body runs three times (the ``kafka`` fixture): on the in-memory broker, in milliseconds, and on the
real broker (Tansu) through aiokafka as deployed, which keeps the memory broker honest, and through librdkafka
(``EMD_KAFKA_CLIENT=confluent``), which must keep the same promises. A stage runs in an ``App``
in ``burst`` mode: ``run`` returns once every input is handled and every output acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from structlog.testing import capture_logs

from producer.errors import ConfigurationError, PermanentError, TransientError
from services.messaging import deadletter as dl
from services.messaging.app import App
from services.messaging.heartbeat import check_health
from services.messaging.records import Output, Record
from services.messaging.runtime import InPlaceRetry, RetryPolicy, Stage, Ticker
from services.messaging.transports import CLIENTS, for_settings
from services.metrics import REGISTRY
from services.pipeline.dead_letter_status import dead_letter_status
from tests.runtime_kafka import ConfluentKafka, MemoryKafka, TansuKafka, TestKafka

#: the longest a run may take on a loaded machine (a failure, not a measurement)
TIMEOUT = 180.0


@pytest.fixture(
    params=[
        "memory",
        pytest.param("tansu", marks=pytest.mark.integration),
        pytest.param("confluent", marks=pytest.mark.integration),
    ]
)
def kafka(request, tmp_path) -> TestKafka:
    """The broker a test body runs on: the in-memory one, then the real one through aiokafka and librdkafka
    (integration tests)."""
    if request.param == "memory":
        return MemoryKafka(tmp_path)
    real = TansuKafka if request.param == "tansu" else ConfluentKafka
    return real(tmp_path, request.getfixturevalue("broker").bootstrap_servers)


def test_the_kafka_client_is_chosen_by_a_setting_and_a_wrong_name_is_refused(tmp_path):
    """EMD_KAFKA_CLIENT picks the runtime's transport (aiokafka unless it says confluent); a name that is neither
    stops the worker at start with a ConfigurationError naming the variable and the choices."""
    from services.config import Settings

    chosen = {
        name: for_settings(Settings.from_env({"EMD_KAFKA_CLIENT": name, "EMD_DATA_DIR": str(tmp_path)})).name
        for name in ("aiokafka", "confluent", "Confluent")
    }
    assert chosen == {"aiokafka": "aiokafka", "confluent": "confluent", "Confluent": "confluent"}
    assert for_settings(Settings.from_env({"EMD_DATA_DIR": str(tmp_path)})).name == "aiokafka"
    with pytest.raises(
        ConfigurationError, match="EMD_KAFKA_CLIENT='librdkafka': expected one of aiokafka, confluent"
    ):
        for_settings(Settings.from_env({"EMD_KAFKA_CLIENT": "librdkafka"}))
    assert sorted(CLIENTS) == ["aiokafka", "confluent"]


def _stage(
    kafka: TestKafka, names, handler, *, settings: dict | None = None, name: str = "rt", **kw
) -> Stage:
    return Stage(
        name=kafka.stage_name(name),
        input_topic=names["in"],
        handler=handler,
        dead_letter_topic=names["dlt"],
        settings=kafka.settings(**(settings or {})),
        transport=kafka.transport,
        **kw,
    )


def _app(*stages: Stage, name: str = "rt", **kw) -> App:
    return App(name, stages[0].settings, stages, serve_metrics=False, **kw)


def _burst(*stages: Stage) -> App:
    """Run the stages in one app until every input is drained."""
    app = _app(*stages)
    asyncio.run(asyncio.wait_for(app.run(burst=True, signals=False), TIMEOUT))
    return app


def _values(records: list[Record]) -> list:
    return [json.loads(r.value) for r in records]


def test_outputs_are_produced_and_permanent_failures_dead_lettered(kafka):
    """Good records reach the output topic; a PermanentError sends the original record to the dead letter."""
    names = kafka.topics("in", "out", "dlt")

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

    kafka.send(
        names["in"], [(f"doc-{n}", {"n": n, "bad": n == 3}) for n in range(6)], [("emd-trace-id", b"t-1")]
    )
    stage = _stage(kafka, names, handle)
    _burst(stage)
    out, dead = kafka.read(names["out"], expect=5), kafka.read(names["dlt"], expect=1)
    assert sorted(v["n"] for v in _values(out)) == [0, 1, 2, 4, 5]
    assert len(dead) == 1
    h = {k: v.decode() for k, v in dead[0].headers.items()}
    assert dead[0].key == "doc-3" and json.loads(dead[0].value) == {"n": 3, "bad": True}
    assert h[dl.REASON] == "XSD_INVALID" and h[dl.STAGE] == stage.name and h[dl.ORIGINAL_TOPIC] == names["in"]
    assert h[dl.KIND] == "119" and h[dl.LOCAL_UID] == "doc-3" and h["emd-trace-id"] == "t-1"
    assert h[dl.EXCEPTION_FQCN] == "producer.errors.PermanentError"
    assert h[dl.ORIGINAL_CONSUMER_GROUP] == f"emd-{stage.name}"


def test_an_unexpected_exception_is_dead_lettered_not_fatal(kafka):
    """A bug in the handler dead-letters that record as UNEXPECTED_ERROR and the stage goes on."""
    names = kafka.topics("in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        if record.key == "doc-0":
            raise KeyError("patient")
        return [Output(names["out"], b"ok", key=record.key)]

    kafka.send(names["in"], [("doc-0", {}), ("doc-1", {})])
    _burst(_stage(kafka, names, handle))
    out, dead = kafka.read(names["out"], expect=1), kafka.read(names["dlt"], expect=1)
    assert [r.key for r in out] == ["doc-1"]
    assert dead[0].header(dl.REASON) == "UNEXPECTED_ERROR" and dead[0].header(dl.CATEGORY) == "internal"


def test_a_transient_failure_retried_in_place_too_long_is_dead_lettered_with_its_reason(kafka):
    """Without retry tiers a record that keeps failing transiently (a claim-check reference to a document the store
    never gets) is dead-lettered with its own reason once its in-place retry time has passed, instead of being
    retried forever; the records after it go on."""
    names = kafka.topics("in", "out", "dlt")
    attempts: list[str] = []

    async def handle(record: Record) -> list[Output]:
        if record.key == "doc-missing":
            attempts.append(record.key)
            raise TransientError("document abc is not in the store", reason="DOCUMENT_MISSING")
        return [Output(names["out"], {"ok": record.key}, key=record.key)]

    kafka.send(names["in"], [("doc-missing", {}), ("doc-fine", {})])
    _burst(_stage(kafka, names, handle, in_place=InPlaceRetry(max_seconds=0.1, first_delay=0.02)))
    dead, out = kafka.read(names["dlt"], expect=1), kafka.read(names["out"], expect=1)
    assert [(r.key, r.header(dl.REASON)) for r in dead] == [("doc-missing", "DOCUMENT_MISSING")]
    assert [r.key for r in out] == ["doc-fine"]
    assert len(attempts) > 1  # retried before giving up


def test_transient_failure_goes_through_a_retry_tier_and_succeeds(kafka):
    """A TransientError parks the record in a retry tier until due; the next attempt succeeds."""
    names = kafka.topics("in", "out", "dlt", "retry0", "retry1")
    attempts: list[tuple[int, float]] = []

    async def handle(record: Record) -> list[Output]:
        attempts.append((record.attempt, time.time()))
        if record.attempt == 0:
            raise TransientError("РЭМД busy", reason="RATE_LIMIT", message_id="m-1")
        return [
            Output(
                names["out"],
                {"attempt": record.attempt, "ids": record.header(dl.MESSAGE_IDS)},
                key=record.key,
            )
        ]

    retry = RetryPolicy(topics=(names["retry0"], names["retry1"]), base_delay=0.1, max_delay=1.0, jitter=0)
    kafka.send(names["in"], [("doc-1", {})])
    _burst(_stage(kafka, names, handle, retry=retry))
    out, parked = kafka.read(names["out"], expect=1), kafka.read(names["retry0"], expect=1)
    assert [a for a, _ in attempts] == [0, 1]
    assert _values(out) == [{"attempt": 1, "ids": "m-1"}]
    assert parked[0].header(dl.ATTEMPTS) == "1" and parked[0].header(dl.RETRY_REASON) == "RATE_LIMIT"
    assert parked[0].header(dl.RETRY_ORIGINAL_TOPIC) == names["in"]
    # the retry was not handled before its due time
    assert attempts[1][1] * 1000 >= int(parked[0].header(dl.RETRY_DUE) or 0)


def test_exhausted_retries_dead_letter_with_every_message_id(kafka):
    """After max_attempts the record is dead-lettered as RETRIES_EXHAUSTED, naming its origin and all MessageIDs."""
    names = kafka.topics("in", "out", "dlt", "retry0")

    async def handle(record: Record) -> list[Output]:
        raise TransientError("ИПС unreachable", reason="NETWORK_ERROR", message_id=f"m-{record.attempt}")

    retry = RetryPolicy(topics=(names["retry0"],), base_delay=0.05, max_delay=0.05, max_attempts=3, jitter=0)
    kafka.send(names["in"], [("doc-1", {})])
    _burst(_stage(kafka, names, handle, retry=retry))
    (dead,) = kafka.read(names["dlt"], expect=1)
    assert dead.header(dl.REASON) == "RETRIES_EXHAUSTED" and dead.header(dl.ATTEMPTS) == "3"
    assert dead.header(dl.MESSAGE_IDS) == "m-0,m-1,m-2"
    assert dead.header(dl.ORIGINAL_TOPIC) == names["in"]
    assert len(kafka.read(names["retry0"], expect=2)) == 2


def test_on_dead_letter_outputs_are_produced_with_the_dead_letter(kafka):
    """A stage's on_dead_letter outputs (the МИС's status) go out with the dead letter, with every MessageID so far."""
    names = kafka.topics("in", "dlt", "status")
    seen: list[dl.Failure] = []

    async def handle(record: Record) -> list[Output]:
        raise PermanentError(
            "РЭМД refused it", reason="REMD_REJECTED", remd_code="PERSON_NOT_FOUND", message_id="m-2"
        )

    def on_dead_letter(record: Record, failure: dl.Failure) -> list[Output]:
        seen.append(failure)
        status = dead_letter_status(
            failure,
            local_uid=record.key,
            organization="1.2.643.5.1.13.13.12.2.77.7831",
            mis_id="m",
            source="rt",
        )
        return [Output(names["status"], status["data"], key=record.key)]

    kafka.send(names["in"], [("doc-1", b"{}")], [(dl.MESSAGE_IDS, b"m-1")])
    stage = _stage(kafka, names, handle, on_dead_letter=on_dead_letter)
    _burst(stage)
    dead, status = kafka.read(names["dlt"], expect=1), kafka.read(names["status"], expect=1)
    assert len(dead) == 1 and len(status) == 1 and status[0].key == "doc-1"
    assert _values(status) == [
        {
            "localUid": "doc-1",
            "organizationOid": "1.2.643.5.1.13.13.12.2.77.7831",
            "misId": "m",
            "status": "rejected",
            "emdrId": None,
            "reason": "REMD_REJECTED",
            "remdCode": "PERSON_NOT_FOUND",
            "message": "РЭМД refused it",
            "messageIds": ["m-1", "m-2"],
        }
    ]
    assert seen[0].stage == stage.name and seen[0].message_ids == ("m-1", "m-2")


def test_a_failing_on_dead_letter_hook_does_not_lose_the_dead_letter(kafka):
    """When on_dead_letter raises, the record is still dead-lettered and the stage goes on."""
    names = kafka.topics("in", "out", "dlt")

    async def handle(record: Record) -> list[Output]:
        if json.loads(record.value)["bad"]:
            raise PermanentError("bad", reason="XSD_INVALID")
        return [Output(names["out"], b"ok", key=record.key)]

    def on_dead_letter(record: Record, failure: dl.Failure) -> list[Output]:
        raise RuntimeError("hook bug")

    kafka.send(names["in"], [("doc-1", {"bad": True}), ("doc-2", {"bad": False})])
    _burst(_stage(kafka, names, handle, on_dead_letter=on_dead_letter))
    dead, out = kafka.read(names["dlt"], expect=1), kafka.read(names["out"], expect=1)
    assert [r.key for r in dead] == ["doc-1"] and dead[0].header(dl.REASON) == "XSD_INVALID"
    assert [r.key for r in out] == ["doc-2"]


def test_a_dead_letter_the_handler_produces_itself_is_counted(kafka):
    """A handler that returns a dead letter (the status worker for a РЭМД rejection) is counted by its category."""
    names = kafka.topics("in", "dlt")

    async def handle(record: Record) -> list[Output]:
        return [Output(names["dlt"], record.value, key=record.key, headers={dl.CATEGORY: "data"})]

    kafka.send(names["in"], [("doc-0", {})])
    stage = _stage(kafka, names, handle, name="rt-own-dlt")

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"stage": stage.name, **labels}) or 0.0

    _burst(stage)
    assert len(kafka.read(names["dlt"], expect=1)) == 1
    assert (1.0, 1.0, 0.0) == (
        count("emd_dead_letters_total", category="data"),
        count("emd_records_total", outcome="dead_letter"),
        count("emd_records_total", outcome="ok"),
    )


def test_records_of_one_key_are_handled_one_at_a_time_in_order(kafka):
    """Records of different keys run concurrently, never more than the stage's concurrency; the records of one
    key run one at a time, in the order they were produced, and so do their outputs."""
    names = kafka.topics("in", "out", "dlt")
    keys = [f"doc-{k}" for k in range(8)]
    kafka.send(names["in"], [(key, {"n": n}) for n in range(10) for key in keys])
    running: set[str] = set()
    handled: dict[str, list[int]] = {key: [] for key in keys}
    overlaps: list[str] = []
    peak = [0]
    rng = random.Random(7)

    async def handle(record: Record) -> list[Output]:
        if record.key in running:
            overlaps.append(record.key)
        running.add(record.key)
        peak[0] = max(peak[0], len(running))
        await asyncio.sleep(rng.uniform(0.001, 0.004))
        n = json.loads(record.value)["n"]
        handled[record.key].append(n)
        running.discard(record.key)
        return [Output(names["out"], {"n": n}, key=record.key)]

    _burst(_stage(kafka, names, handle, settings={"worker_concurrency": 4}))
    out = kafka.read(names["out"], expect=80)
    assert overlaps == []
    assert 1 < peak[0] <= 4
    assert handled == {key: list(range(10)) for key in keys}
    assert {key: [json.loads(r.value)["n"] for r in out if r.key == key] for key in keys} == handled


def test_a_rebalance_while_records_are_in_flight_loses_nothing_and_keeps_each_keys_order(kafka):
    """A second member joins the group while the first holds records in flight, then each drains and leaves:
    every input has its output, and each key's outputs first appear in input order (a record redone by the
    partition's next owner is a duplicate, never a gap)."""
    names = kafka.topics("in", "out", "dlt", partitions=4)
    keys = [f"doc-{k}" for k in range(12)]
    kafka.send(names["in"], [(key, {"n": n}) for n in range(20) for key in keys])
    handled: list[tuple[str, str, int]] = []
    gate = asyncio.Event()  # opened once the second member has joined

    def member(label: str):
        async def handle(record: Record) -> list[Output]:
            if len(handled) >= 60 and not gate.is_set():
                await gate.wait()  # in flight when the rebalance comes
            n = json.loads(record.value)["n"]
            handled.append((label, record.key, n))
            await asyncio.sleep(0.001)
            return [Output(names["out"], {"n": n, "member": label}, key=record.key)]

        return handle

    settings = {"worker_concurrency": 4, "shutdown_grace_seconds": 0.2}
    first = _stage(kafka, names, member("a"), settings=settings)
    second = _stage(kafka, names, member("b"), settings=settings)
    assert first.group_id == second.group_id

    async def scenario() -> None:
        one = asyncio.create_task(_app(first, name="rt-a").run(burst=True, signals=False))
        while len(handled) < 60:
            await asyncio.sleep(0.005)
        two = asyncio.create_task(_app(second, name="rt-b").run(burst=True, signals=False))
        while not second.health_state.joined:
            await asyncio.sleep(0.005)
        gate.set()
        await asyncio.gather(one, two)

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    out = kafka.read(names["out"], expect=len(keys) * 20)
    assert {(r.key, json.loads(r.value)["n"]) for r in out} == {(k, n) for k in keys for n in range(20)}
    for key in keys:
        first_seen = list(dict.fromkeys(json.loads(r.value)["n"] for r in out if r.key == key))
        assert first_seen == list(range(20)), key
    assert {label for label, _, _ in handled} == {"a", "b"}


def test_a_stop_request_lets_in_flight_records_finish(kafka):
    """A stop requested while records are being handled lets each of them finish and produce its output
    (the stage says it is draining them), and no record is left half-done."""
    names = kafka.topics("in", "out", "dlt")
    started: list[str] = []
    app: App | None = None

    def draining() -> list[dict]:
        return [e for e in logs if e["event"] == "draining in-flight records"]

    async def handle(record: Record) -> list[Output]:
        started.append(record.key)
        if len(started) == 1:
            app.request_stop()  # the stop arrives while this record (at least) is in flight
        while not draining():  # still in flight when the stage begins to drain
            await asyncio.sleep(0.005)
        return [Output(names["out"], b"done", key=record.key)]

    kafka.send(names["in"], [(f"doc-{n}", {}) for n in range(4)])
    app = _app(_stage(kafka, names, handle))
    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(app.run(signals=False), TIMEOUT))
    out = kafka.read(names["out"], expect=len(started))
    assert started and sorted(r.key for r in out) == sorted(started)
    assert [e["count"] for e in draining()] == [len(started)]


def test_a_tickers_outputs_are_produced_and_a_failing_ticker_fails_liveness(kafka):
    """A periodic job's outputs reach their topic through the stage's producer; when the job then keeps
    failing, the app's /healthz and its --check heartbeat say so, while the poll loop still turns."""
    names = kafka.topics("in", "out", "dlt")
    ticks = {"n": 0}

    async def tick() -> list[Output]:
        ticks["n"] += 1
        if ticks["n"] > 1:
            raise RuntimeError("the store is gone")
        return [Output(names["out"], {"tick": 1}, key="k")]

    async def handle(record: Record) -> list[Output]:
        return []

    stage = _stage(
        kafka, names, handle, tickers=[Ticker(name="scanner", interval=0.05, stale_after=0.25, tick=tick)]
    )
    app = _app(stage, name=stage.name, heartbeat_interval=0.05)
    seen: dict[str, object] = {}

    async def scenario() -> None:
        task = asyncio.create_task(app.run(signals=False))
        while app.health()[0] or check_health(stage.settings, app.name)[0]:
            assert not task.done(), task
            await asyncio.sleep(0.05)
        seen["health"], seen["check"] = app.health(), check_health(stage.settings, app.name)
        app.request_stop()
        await task

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    ok, text = seen["health"]
    assert _values(kafka.read(names["out"], expect=1)) == [{"tick": 1}]
    assert not ok and "scanner: failing" in text and text.startswith("ok: last poll")
    ok, said = seen["check"]
    assert not ok and "unhealthy" in said and "scanner: failing" in said


def test_a_burst_run_returns_once_a_chain_of_stages_has_drained(kafka):
    """Two stages in one app, the second consuming what the first produces: ``run(burst=True)`` returns only
    once every input has gone through both, every output acknowledged and every offset committed."""
    names = kafka.topics("in", "mid", "out", "dlt")

    async def forward(record: Record) -> list[Output]:
        await asyncio.sleep(0.001)
        return [Output(names["mid"], record.value, key=record.key)]

    async def finish(record: Record) -> list[Output]:
        return [Output(names["out"], record.value, key=record.key)]

    kafka.send(names["in"], [(f"doc-{n}", {"n": n}) for n in range(50)])
    first = _stage(kafka, names, forward, name="rt-first")
    second = _stage(kafka, {**names, "in": names["mid"]}, finish, name="rt-second")
    _burst(first, second)
    assert sorted(v["n"] for v in _values(kafka.read(names["out"]))) == list(range(50))
    for stage in (first, second):
        assert stage.offsets.in_flight == 0 and stage.drained


def test_a_simulated_rebalance_lets_in_flight_records_finish_so_none_is_handled_twice(tmp_path):
    """The memory broker forces a rebalance of a running stage's group (a real broker does on a slow heartbeat):
    the stage finishes and commits its in-flight records before the revocation completes and drops what it had
    fetched but not handed out, so every record is handled exactly once, each key in order."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "out", "dlt", partitions=3)
    keys = [f"doc-{k}" for k in range(6)]
    kafka.send(names["in"], [(key, {"n": n}) for n in range(15) for key in keys])
    handled: list[tuple[str, int]] = []
    revocations: list[int] = []

    async def handle(record: Record) -> list[Output]:
        await asyncio.sleep(0.002)
        handled.append((record.key, json.loads(record.value)["n"]))
        return [Output(names["out"], record.value, key=record.key)]

    stage = _stage(kafka, names, handle, settings={"worker_concurrency": 4})
    revoked = stage.revoked

    async def counting(partitions):  # how many records were in flight when each revocation began
        revocations.append(stage.in_flight)
        await revoked(partitions)

    stage.revoked = counting  # type: ignore[method-assign]  # observe the stage's own rebalance callback

    async def scenario() -> None:
        task = asyncio.create_task(_app(stage).run(burst=True, signals=False))
        for threshold in (20, 50):
            while len(handled) < threshold:
                await asyncio.sleep(0.001)
            await kafka.broker.rebalance(stage.group_id)
        await task

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert sorted(handled) == sorted((key, n) for key in keys for n in range(15))  # each exactly once
    assert {key: [n for k, n in handled if k == key] for key in keys} == {
        key: list(range(15)) for key in keys
    }
    assert len(kafka.read(names["out"])) == len(keys) * 15
    assert len(revocations) == 2 and any(revocations)  # the rebalances did find records in flight
