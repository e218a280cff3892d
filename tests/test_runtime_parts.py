"""The runtime's parts on their own: failure routing, the keyed scheduler, offset bookkeeping, health, and the
in-memory broker's groups. Plain functions and objects: no broker, no clock but the one given."""

from __future__ import annotations

import asyncio
import random

import pytest

from producer.errors import PermanentError, TransientError
from services.messaging import deadletter as dl
from services.messaging.failures import FailurePolicy, RetryPolicy, own_dead_letters, route
from services.messaging.health import StageHealth, combine
from services.messaging.offsets import OffsetBook, PartitionOffsets
from services.messaging.records import Output, Record
from services.messaging.scheduler import KeyedScheduler
from services.messaging.transport import CommitFailed, SendFailed, TopicPartition
from services.messaging.transports import MemoryBroker, MemoryTransport

NOW = 1_800_000_000.0


def _record(
    *, attempt: int | None = None, ids: str | None = None, topic: str = "in", origin: str | None = None
) -> Record:
    headers = {"emd-trace-id": b"t-1"}
    if origin is not None:
        headers[dl.RETRY_ORIGINAL_TOPIC] = origin.encode()
    if attempt is not None:
        headers[dl.ATTEMPTS] = str(attempt).encode()
    if ids is not None:
        headers[dl.MESSAGE_IDS] = ids.encode()
    return Record(
        topic=topic, partition=1, offset=7, key="doc-1", value=b"{}", headers=headers, timestamp_ms=5
    )


def _policy(**kw) -> FailurePolicy:
    return FailurePolicy(stage="sender", group_id="emd-sender", dead_letter_topic="in.dlt", **kw)


RETRY = RetryPolicy(
    topics=("in.retry.0", "in.retry.1"), base_delay=60, max_delay=600, max_attempts=4, jitter=0
)


class TestFailureRouting:
    def test_a_transient_failure_goes_to_the_tier_of_its_next_attempt_with_its_due_time(self):
        """A first transient failure goes, unchanged, to the first tier, due base_delay after now, with its origin,
        reason, attempt and MessageID; a second one to the second tier, twice as late."""
        exc = TransientError("busy", reason="RATE_LIMIT", message_id="m-1")
        first = route(_record(), exc, _policy(retry=RETRY), now=NOW)
        (out,) = first.outputs
        assert (first.outcome, out.topic, out.value, out.key) == ("retry", "in.retry.0", b"{}", "doc-1")
        assert out.headers[dl.RETRY_DUE] == str(int((NOW + 60) * 1000)).encode()
        assert out.headers[dl.RETRY_ORIGINAL_TOPIC] == b"in" and out.headers[dl.RETRY_ORIGINAL_OFFSET] == b"7"
        assert (out.headers[dl.ATTEMPTS], out.headers[dl.MESSAGE_IDS]) == (b"1", b"m-1")
        second = route(_record(attempt=1, ids="m-1", topic="in.retry.0"), exc, _policy(retry=RETRY), now=NOW)
        assert second.outputs[0].topic == "in.retry.1" and second.delay == 120

    def test_a_deferred_failure_waits_at_least_what_it_asks(self):
        """A RATE_LIMIT that asks for 300 s is due no sooner, whatever the backoff says."""
        exc = TransientError("slow down", reason="RATE_LIMIT", defer=300)
        assert route(_record(), exc, _policy(retry=RETRY), now=NOW).delay == 300

    def test_jitter_stays_within_its_fraction(self):
        """Jittered delays of one attempt spread within ± jitter of the backoff."""
        policy = RetryPolicy(topics=("t",), base_delay=100, jitter=0.2)
        delays = {policy.delay(1, rng=random.Random(seed)) for seed in range(50)}
        assert len(delays) > 1 and all(80 <= d <= 120 for d in delays)

    def test_the_last_attempt_is_dead_lettered_as_retries_exhausted_with_every_message_id(self):
        """Once max_attempts are used up the record is dead-lettered, its real origin and every MessageID kept."""
        record = _record(attempt=3, ids="m-1,m-2,m-3", topic="in.retry.1", origin="in")
        routed = route(
            record,
            TransientError("down", reason="NETWORK_ERROR", message_id="m-4"),
            _policy(retry=RETRY),
            now=NOW,
        )
        (dead,) = routed.outputs
        assert (routed.outcome, routed.reason, dead.topic) == ("dead_letter", "RETRIES_EXHAUSTED", "in.dlt")
        assert dead.headers[dl.ATTEMPTS] == b"4" and dead.headers[dl.MESSAGE_IDS] == b"m-1,m-2,m-3,m-4"
        assert (
            dead.headers[dl.ORIGINAL_TOPIC] == b"in"
            and dead.headers[dl.ORIGINAL_CONSUMER_GROUP] == b"emd-sender"
        )

    def test_a_stage_without_tiers_dead_letters_a_transient_failure_with_its_own_reason(self):
        """When the in-place retry time is over, the dead letter carries the error's reason, not a generic one."""
        routed = route(_record(), TransientError("missing", reason="DOCUMENT_MISSING"), _policy(), now=NOW)
        assert (routed.outcome, routed.reason) == ("dead_letter", "DOCUMENT_MISSING")

    def test_a_bug_is_dead_lettered_as_unexpected_internal(self):
        """Any other exception is UNEXPECTED_ERROR, category internal, with its class named."""
        routed = route(_record(), KeyError("patient"), _policy(retry=RETRY), now=NOW)
        headers = routed.outputs[0].headers
        assert routed.reason == "UNEXPECTED_ERROR" and headers[dl.CATEGORY] == b"internal"
        assert headers[dl.EXCEPTION_FQCN] == b"builtins.KeyError"

    def test_the_failure_is_described_and_the_hooks_outputs_go_with_the_dead_letter(self):
        """describe_failure fills the document fields; on_dead_letter sees every MessageID and its outputs follow."""
        seen: list[dl.Failure] = []

        def on_dead_letter(record: Record, failure: dl.Failure) -> list[Output]:
            seen.append(failure)
            return [Output("status", {"localUid": failure.local_uid}, key=record.key)]

        policy = _policy(
            describe_failure=lambda record, exc: {"local_uid": "uid-9", "kind": "119"},
            on_dead_letter=on_dead_letter,
        )
        exc = PermanentError(
            "refused", reason="REMD_REJECTED", remd_code="PERSON_NOT_FOUND", message_id="m-2"
        )
        routed = route(_record(ids="m-1"), exc, policy, now=NOW)
        dead, status = routed.outputs
        assert (dead.headers[dl.LOCAL_UID], dead.headers[dl.KIND], dead.headers[dl.REMD_CODE]) == (
            b"uid-9",
            b"119",
            b"PERSON_NOT_FOUND",
        )
        assert status == Output("status", {"localUid": "uid-9"}, key="doc-1")
        assert seen[0].message_ids == ("m-1", "m-2") and seen[0].at.timestamp() == NOW

    def test_failing_hooks_never_lose_the_dead_letter(self):
        """A describe_failure or on_dead_letter that raises leaves the dead letter whole, without the hook's part."""

        def broken(*args: object) -> list[Output]:
            raise RuntimeError("hook bug")

        routed = route(
            _record(),
            PermanentError("bad", reason="XSD_INVALID"),
            _policy(describe_failure=broken, on_dead_letter=broken),
            now=NOW,
        )
        assert [o.topic for o in routed.outputs] == ["in.dlt"] and routed.reason == "XSD_INVALID"

    def test_a_handlers_own_dead_letters_are_told_by_their_category(self):
        """Dead letters a handler returns itself are counted by their category header, unknown without one."""
        outputs = [
            Output("in.dlt", b"", headers={dl.CATEGORY: b"data"}),
            Output("in.dlt", b""),
            Output("out", b""),
        ]
        assert own_dead_letters(outputs, "in.dlt") == ["data", "unknown"]


class TestKeyedScheduler:
    def test_one_keys_work_runs_alone_and_in_order_while_other_keys_run_beside_it(self):
        """Work of one key never overlaps and ends in submission order; different keys overlap, never beyond the bound."""
        events: list[tuple[str, int]] = []
        running: set[str] = set()
        overlap: list[str] = []
        peak = [0]

        async def main() -> None:
            scheduler = KeyedScheduler(3)
            rng = random.Random(1)

            def work(key: str, n: int):
                async def run() -> None:
                    if key in running:
                        overlap.append(key)
                    running.add(key)
                    peak[0] = max(peak[0], len(running))
                    await asyncio.sleep(rng.uniform(0, 0.003))
                    running.discard(key)
                    events.append((key, n))

                return run

            for n in range(5):
                for key in "abcd":
                    await scheduler.reserve()
                    scheduler.start(key, work(key, n))
            assert await scheduler.wait(10) == 0

        asyncio.run(main())
        assert overlap == [] and 1 < peak[0] <= 3
        assert {k: [n for key, n in events if key == k] for k in "abcd"} == {
            k: list(range(5)) for k in "abcd"
        }

    def test_a_failed_work_frees_its_slot_and_the_keys_next_work_still_runs(self):
        """Work that raises still releases its slot, and the next work of its key runs after it."""
        done: list[str] = []

        async def main() -> None:
            scheduler = KeyedScheduler(1)

            async def fails() -> None:
                raise RuntimeError("boom")

            async def fine() -> None:
                done.append("next")

            await scheduler.reserve()
            scheduler.start("k", fails)
            await scheduler.reserve()  # waits for the failed work's slot
            scheduler.start("k", fine)
            await scheduler.wait(5)

        asyncio.run(main())
        assert done == ["next"]

    def test_drain_cancels_what_outlives_the_grace(self):
        """drain lets quick work end and cancels work still running after the grace period."""
        finished: list[str] = []

        async def main() -> int:
            scheduler = KeyedScheduler(4)

            def work(name: str, seconds: float):
                async def run() -> None:
                    await asyncio.sleep(seconds)
                    finished.append(name)

                return run

            for name, seconds in (("quick", 0.01), ("slow", 30)):
                await scheduler.reserve()
                scheduler.start(name, work(name, seconds))
            return await scheduler.drain(0.2)

        assert asyncio.run(main()) == 1 and finished == ["quick"]


class TestOffsets:
    def test_the_commit_position_is_the_lowest_offset_not_done(self):
        """Offsets finished out of order move the position only up to the first one still running."""
        book = PartitionOffsets()
        entries = [book.add(offset, timestamp_ms=offset * 10) for offset in (10, 11, 12, 13)]
        entries[1].done = entries[3].done = True
        assert book.advance() is None and book.oldest_unprocessed() == entries[0]
        entries[0].done = True
        assert book.advance() == 12 and book.in_flight == 1 and book.oldest_unprocessed() == entries[2]
        entries[2].done = True
        assert book.advance() == 14 and book.in_flight == 0

    def test_a_retry_record_not_yet_due_counts_as_unprocessed_until_handed_out(self):
        """The waiting retry record is the oldest unprocessed one, and no longer once it is handed out."""
        book = PartitionOffsets()
        book.wait_for(5, 1234)
        assert book.oldest_unprocessed() is not None and book.oldest_unprocessed().offset == 5
        assert not book.settled
        book.add(5, 1234).done = True
        assert book.waiting is None and book.advance() == 6

    def test_the_book_commits_only_what_moved_and_forgets_revoked_partitions(self):
        """to_commit names each partition whose position moved since its last commit; a revoked one is gone."""
        a, b = TopicPartition("t", 0), TopicPartition("t", 1)
        book = OffsetBook()
        book.assign([a, b])
        book[a].add(0).done = True
        book[b].add(0)
        assert book.to_commit() == {a: 1}
        book.committed({a: 1})
        assert book.to_commit() == {} and book[a].settled and not book[b].settled
        book.forget([b])
        assert not book.holds(b) and list(book) == [a]


class TestHealth:
    def test_a_stalled_loop_or_a_failing_job_fails_liveness_and_not_joined_fails_readiness(self):
        """Liveness needs a recent poll and each started job's recent success; readiness also the group."""
        now = [100.0]
        health = StageHealth(max_idle=60, jobs={"scanner": 30}, clock=lambda: now[0])
        assert health.liveness(in_flight=0)[0]  # a job not started yet is not failing
        assert health.readiness(in_flight=0) == (False, "not ready: has not joined the consumer group yet\n")
        health.joined = True
        health.job_succeeded("scanner")
        now[0] += 31
        health.polled()
        ok, text = health.liveness(in_flight=2)
        assert (
            not ok and text.startswith("ok: last poll 0.0s ago, in flight 2") and "scanner: failing" in text
        )
        health.job_succeeded("scanner")
        now[0] += 61
        assert health.liveness(in_flight=0)[1].startswith("stalled: last poll 61.0s ago")

    def test_several_services_answer_as_one_each_line_named(self):
        """combine is ok only when every service is, and names each one's lines."""
        assert combine([("a", (True, "ok\n"))]) == (True, "ok\n")
        assert combine([("a", (True, "ok\n")), ("b", (False, "stalled\nx\n"))]) == (
            False,
            "a ok\nb stalled\nb x\n",
        )


class TestMemoryBroker:
    def test_one_keys_records_share_a_partition_in_order(self):
        """Records of one key land in one partition in the order produced; keys spread over the partitions."""
        broker = MemoryBroker()
        broker.create_topic("t", 4)
        for n in range(40):
            broker.produce("t", str(n).encode(), key=f"k{n % 10}".encode())
        records = broker.records("t")
        partitions = {r.key: {x.partition for x in records if x.key == r.key} for r in records}
        assert all(len(p) == 1 for p in partitions.values()) and len({r.partition for r in records}) > 1
        for key in partitions:
            assert [int(r.value) for r in records if r.key == key] == sorted(
                int(r.value) for r in records if r.key == key
            )

    def test_a_group_deals_its_partitions_and_resumes_from_its_commits(self):
        """Two members split the partitions; one leaving hands its partitions, from the committed offsets, to the other."""
        broker = MemoryBroker()
        broker.create_topic("t", 4)
        for _ in range(8):
            broker.produce("t", b"x", key=None)
        transport = MemoryTransport(broker)
        calls: list[tuple[str, str, frozenset[TopicPartition]]] = []

        class Listener:
            def __init__(self, name: str) -> None:
                self.name = name

            async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
                calls.append((self.name, "revoked", partitions))

            async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
                calls.append((self.name, "assigned", partitions))

        async def main() -> tuple[int, dict[TopicPartition, int]]:
            one, two = (
                transport.consumer(group_id="g", client_id="1"),
                transport.consumer(group_id="g", client_id="2"),
            )
            await one.start(["t"], Listener("one"))
            first = await one.fetch(timeout=0, max_records=100)
            await one.commit({tp: len(rs) for tp, rs in first.items()})
            await two.start(["t"], Listener("two"))
            assert one.assignment() | two.assignment() == {TopicPartition("t", p) for p in range(4)}
            assert not one.assignment() & two.assignment()
            with pytest.raises(CommitFailed):  # no longer its partitions
                await one.commit({tp: 0 for tp in two.assignment()})
            await one.stop()
            left = await two.fetch(timeout=0, max_records=100)
            return sum(len(rs) for rs in left.values()), broker.committed("g")

        fetched_after, committed = asyncio.run(main())
        assert fetched_after == 0  # everything was committed by the first member: nothing is read twice
        assert sum(committed.values()) == 8
        assert [(who, what) for who, what, _ in calls] == [
            ("one", "assigned"),
            ("one", "revoked"),
            ("one", "assigned"),
            ("two", "assigned"),
            ("two", "revoked"),
            ("two", "assigned"),
        ]

    def test_a_producer_refuses_missing_topics(self):
        """A producer asked for a missing topic fails at start, a send to one is refused."""
        transport = MemoryTransport()
        transport.broker.create_topic("here")

        async def main() -> None:
            from producer.errors import ConfigurationError

            with pytest.raises(ConfigurationError, match="missing on the Kafka broker at memory: gone"):
                await transport.producer(client_id="p", topics=["here", "gone"])
            producer = await transport.producer(client_id="p", topics=["here"])
            with pytest.raises(SendFailed):
                await producer.send([Output("gone", b"x")])

        asyncio.run(main())


class TestApp:
    def test_a_failing_service_stops_the_others_and_the_hooks_close_everything_last_first(self, tmp_path):
        """When one service fails, the app stops the others, awaits every stop hook (last first, a failing one
        too) and raises the failure; its health names each service's lines."""
        from services.config import Settings
        from services.messaging.app import App

        calls: list[str] = []

        class Service:
            def __init__(self, name: str, fails: bool) -> None:
                self.name, self.fails = name, fails
                self.stop = asyncio.Event()

            async def run(self, *, burst: bool = False) -> None:
                if self.fails:
                    await asyncio.sleep(0.01)
                    raise RuntimeError(f"{self.name} broke")
                await self.stop.wait()
                calls.append(f"{self.name} stopped")

            def request_stop(self) -> None:
                self.stop.set()

            def health(self) -> tuple[bool, str]:
                return not self.fails, "ok\n"

            def ready(self) -> tuple[bool, str]:
                return True, "ok\n"

        async def closing() -> None:
            calls.append("async hook")

        def broken() -> None:
            calls.append("broken hook")
            raise OSError("already closed")

        app = App(
            "two",
            Settings.from_env({}, data_dir=tmp_path),
            [Service("steady", False), Service("fragile", True)],
            on_stop=[lambda: calls.append("first hook"), broken, closing],
            serve_metrics=False,
        )
        assert app.health() == (False, "steady ok\nfragile ok\n")
        with pytest.raises(RuntimeError, match="fragile broke"):
            asyncio.run(app.run(signals=False))
        assert calls == ["steady stopped", "async hook", "broken hook", "first hook"]
