"""The worker runtime's stage: consume → handle → produce → commit, so a worker is only its handler.

A stage is ``async def handle(record: Record) -> Sequence[Output]`` plus its topics. ``Stage.run()``:

1. consumes the input topic (and the stage's retry tiers) in the consumer group ``emd-<name>``, auto-commit
   off, through a ``Transport`` (``services.messaging.transport``: aiokafka deployed, in memory in tests);
2. runs the handler in a ``KeyedScheduler`` (``services.messaging.scheduler``): bounded concurrency, and
   records with the same key never at once, so one document's events stay in order;
3. produces the outputs and **waits for the broker's acknowledgement**;
4. only then marks the input done (``services.messaging.offsets``). A partition's committed offset is its lowest
   offset not yet done: a crash re-delivers what was in flight (at-least-once; downstream is idempotent by
   localUid), and never skips a record that was fetched but not finished;
5. a failure goes where ``services.messaging.failures.route`` says: a retry tier with a due time, or the
   dead-letter topic; a stage without tiers retries a transient failure in place first (``InPlaceRetry``);
6. on a rebalance, lets in-flight records finish (bounded) and commits before the partitions move on;
7. on ``request_stop()``: stops fetching, lets in-flight records finish (``shutdown_grace_seconds``), commits,
   leaves the group;
8. reports its health (``services.messaging.health``) and its consumer lag (``services.messaging.lag``) every
   ``lag_interval`` seconds, and runs its ``Ticker``\\ s, whose outputs it produces like a handler's.

A process runs its stages in an ``App`` (``services.messaging.app``), which owns signals, the metrics server,
the heartbeat file and ``burst`` runs. Why aiokafka and not faust's consumer: see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from producer.errors import PermanentError, TransientError
from services import metrics, telemetry
from services.config import Settings
from services.logs import get_logger
from services.messaging import deadletter as dl
from services.messaging import failures, lag, tracing, transports
from services.messaging.failures import (
    DescribeFailure,
    FailurePolicy,
    InPlaceRetry,
    OnDeadLetter,
    RetryPolicy,
)
from services.messaging.health import Check, StageHealth
from services.messaging.offsets import InFlight, OffsetBook
from services.messaging.records import Output, Record
from services.messaging.scheduler import KeyedScheduler
from services.messaging.transport import (
    CommitFailed,
    Consumer,
    Producer,
    SendFailed,
    TopicPartition,
    Transport,
)

log = get_logger(__name__)

Handler = Callable[[Record], Awaitable[Sequence[Output]]]

#: seconds a fetch waits for records: short in a burst run, which ends on the first empty fetches
POLL_TIMEOUT = 0.2
BURST_POLL_TIMEOUT = 0.02

__all__ = ["Handler", "InPlaceRetry", "RetryPolicy", "Stage", "Ticker", "consumer_group"]


def consumer_group(stage: str) -> str:
    """The consumer group of the stage named ``stage``: ``emd-<name>``, one name for both (``tests/test_workers.py``)."""
    return f"emd-{stage}"


@dataclass(frozen=True, kw_only=True)
class Ticker:
    """A periodic job beside a stage's consumer (the status worker's deadline scanner).

    Every ``interval`` seconds ``tick()`` returns outputs; the stage produces them like a handler's (acks
    awaited). A tick that raises is logged and tried again at the next interval. The stage's liveness
    fails when no tick has succeeded for ``stale_after`` seconds (default: three intervals).
    """

    name: str
    interval: float
    tick: Callable[[], Awaitable[Sequence[Output]]]
    stale_after: float | None = None

    @property
    def max_age(self) -> float:
        return self.stale_after if self.stale_after is not None else 3 * self.interval


class Stage:
    """A pipeline stage: one consumer group, one handler, its dead-letter topic and optional retry tiers.

    :param name: the stage name: metrics label, consumer group ``emd-<name>``, health line.
    :param input_topic: the topic the stage consumes, or several (the signer: every МИС's created topic).
    :param handler: ``async (Record) -> Sequence[Output]``.
    :param dead_letter_topic: where failures go.
    :param settings: deployment settings (timeouts, concurrency, grace period, in-place retry time).
    :param retry: non-blocking retry tiers; ``None``: transient errors are retried in place.
    :param describe_failure: maps (record, exception) to extra dead-letter fields (localUid, kind, org...).
    :param on_dead_letter: ``(record, failure) -> outputs`` produced together with the dead letter, before the
        commit (the МИС's ``failed`` status); ``failure.message_ids`` holds every MessageID so far.
    :param tickers: periodic jobs whose outputs the stage produces; part of its liveness.
    :param transport: where records come from and go (default: ``transports.for_settings(settings)``).
    :param in_place: the in-place retry of a stage without tiers (default: ``EMD_RETRY_IN_PLACE_MAX_SECONDS``).
    """

    def __init__(
        self,
        *,
        name: str,
        input_topic: str | Sequence[str],
        handler: Handler,
        dead_letter_topic: str,
        settings: Settings,
        retry: RetryPolicy | None = None,
        describe_failure: DescribeFailure | None = None,
        on_dead_letter: OnDeadLetter | None = None,
        tickers: Sequence[Ticker] = (),
        transport: Transport | None = None,
        in_place: InPlaceRetry | None = None,
        commit_interval: float = 0.5,
        lag_interval: float = 1.0,
    ) -> None:
        self.name = name
        self.group_id = consumer_group(name)
        inputs = (input_topic,) if isinstance(input_topic, str) else tuple(input_topic)
        if not inputs:
            raise ValueError(f"stage {name}: no input topic")
        self.input_topic = inputs[0]  #: the first input (the only one of every stage but the signer)
        self.handler = handler
        self.dead_letter_topic = dead_letter_topic
        self.settings = settings
        self.retry = retry
        self.topics = (*inputs, *(retry.topics if retry else ()))
        self.policy = FailurePolicy(
            stage=name,
            group_id=self.group_id,
            dead_letter_topic=dead_letter_topic,
            retry=retry,
            describe_failure=describe_failure,
            on_dead_letter=on_dead_letter,
        )
        self.in_place = in_place or InPlaceRetry(max_seconds=settings.retry_in_place_max_seconds)
        self.tickers = tuple(tickers)
        self.transport = transport
        self.commit_interval = commit_interval
        self.lag_interval = lag_interval
        self.concurrency = settings.worker_concurrency
        self.health_state = StageHealth(
            max_idle=settings.health_max_idle_seconds, jobs={t.name: t.max_age for t in self.tickers}
        )
        self.offsets = OffsetBook()
        self.scheduler = KeyedScheduler(self.concurrency)
        #: burst runs: the last poll found nothing to do and everything done is committed (``App`` reads it)
        self.drained = False
        #: when the broker last confirmed ``drained``: the oldest of the partitions' end offsets it checked
        self.drained_as_of: float | None = None
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None
        self._paused_until: dict[TopicPartition, float] = {}
        self._generation = 0  # bumped by every rebalance: a batch fetched before one is not dispatched
        # between a revocation and the next assignment: nothing is known to be drained
        self._rebalancing = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def request_stop(self) -> None:
        """Ask the stage to drain and stop (what SIGTERM does)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    async def run(self, *, burst: bool = False) -> None:
        """Consume until ``request_stop()``; with ``burst``, keep ``drained`` up to date for the ``App``."""
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self.scheduler = KeyedScheduler(self.concurrency)
        self.health_state.polled()  # the loop's idle time counts from the start
        transport = self.transport or transports.for_settings(self.settings)
        metrics.init_stage(self.name, self.topics)
        metrics.LAST_PROGRESS.labels(self.name).set(time.time())  # "not progressing" counts from the start
        # what configuration can get wrong fails here, in seconds, as a ConfigurationError
        self._producer = await transport.producer(
            client_id=self.name, topics=[*self.topics, self.dead_letter_topic]
        )
        try:
            self._consumer = transport.consumer(group_id=self.group_id, client_id=self.name)
            await self._consumer.start(self.topics, _Rebalance(self))
            log.info("stage started", stage=self.name, topics=list(self.topics), group=self.group_id)
            background = [
                asyncio.create_task(self._report_lag()),
                *(asyncio.create_task(self._tick_forever(t)) for t in self.tickers),
            ]
            try:
                await self._loop(burst=burst)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self._drain()
        finally:
            try:
                if self._consumer is not None:
                    await self._consumer.stop()  # leaves the group: the partitions move on at once
            finally:
                await self._producer.stop()
                log.info("stage stopped", stage=self.name)

    async def _loop(self, *, burst: bool) -> None:
        assert self._consumer is not None and self._stopping is not None
        last_commit = time.monotonic()
        timeout = BURST_POLL_TIMEOUT if burst else POLL_TIMEOUT
        while not self._stopping.is_set():
            self._resume_due()
            batches = await self._consumer.fetch(timeout=timeout, max_records=self.concurrency * 2)
            self.health_state.polled()
            if batches:
                self.drained = False
            generation = self._generation
            for tp, records in batches.items():
                if not await self._dispatch_batch(tp, records, generation):
                    break
            if burst and not batches:
                self.drained = await self._settled()
            elif time.monotonic() - last_commit >= self.commit_interval:
                await self._commit()
                last_commit = time.monotonic()

    async def _dispatch_batch(self, tp: TopicPartition, records: Sequence[Record], generation: int) -> bool:
        """Hand out one partition's records in order; False when the rest of the fetch is not to be handed out."""
        assert self._consumer is not None and self._stopping is not None
        for record in records:
            if self._rebalancing or self._generation != generation:
                # a rebalance since the fetch: what was fetched is read again from the committed offsets
                return False
            if self._not_due(tp, record):
                return True  # the rest of this partition's batch is later still
            await self.scheduler.reserve()
            if self._stopping.is_set() or self._rebalancing or self._generation != generation:
                self.scheduler.release()
                if self._stopping.is_set():
                    self._consumer.seek(tp, record.offset)
                return False
            entry = self.offsets[tp].add(record.offset, record.timestamp_ms)
            self.scheduler.start(record.key, _work(self, record, entry))
        return True

    async def _tick_forever(self, ticker: Ticker) -> None:
        self.health_state.job_succeeded(
            ticker.name
        )  # a fresh start counts: the first tick is one interval away
        while not await self._sleep_or_stop(ticker.interval):
            try:
                await self._produce(await ticker.tick())
            except _ProduceFailed:
                return
            except Exception:  # the next tick tries again; liveness shows a ticker that keeps failing
                log.exception("periodic job failed", stage=self.name, job=ticker.name)
                continue
            self.health_state.job_succeeded(ticker.name)

    async def _drain(self) -> None:
        if self.scheduler.in_flight:
            log.info(
                "draining in-flight records",
                stage=self.name,
                count=self.scheduler.in_flight,
                grace_seconds=self.settings.shutdown_grace_seconds,
            )
            # what does not finish in time is not marked done: re-delivered to the partition's next owner
            await self.scheduler.drain(self.settings.shutdown_grace_seconds)
        await self._commit()

    # ----------------------------------------------------------------------------- handling
    def _not_due(self, tp: TopicPartition, record: Record) -> bool:
        """A retry-tier record whose time has not come: rewind and pause its partition until then."""
        if self.retry is None or tp.topic not in self.retry.topics:
            return False
        due_ms = record.header(dl.RETRY_DUE)
        if not due_ms:
            return False
        wait = int(due_ms) / 1000 - time.time()
        if wait <= 0:
            return False
        assert self._consumer is not None
        self.offsets[tp].wait_for(record.offset, record.timestamp_ms)
        self._consumer.seek(tp, record.offset)
        self._consumer.pause(tp)
        self._paused_until[tp] = time.time() + wait
        return True

    def _resume_due(self) -> None:
        now = time.time()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[tp]
                if self._consumer is not None:
                    self._consumer.resume(tp)

    async def process(self, record: Record, entry: InFlight) -> None:
        """Handle one record until it is settled (outputs, a retry or a dead letter acknowledged): then done."""
        with tracing.handling(self.name, self.group_id, record) as span:
            metrics.IN_FLIGHT.labels(self.name).inc()
            started = time.perf_counter()
            outcome: str | None = None
            try:
                outcome = await self._settle(record)
                if outcome is None:
                    return  # stopping: left not done, re-delivered after restart
                entry.done = True
                metrics.RECORDS.labels(self.name, outcome).inc()
            except _ProduceFailed:
                return  # stopping while the broker was unreachable: not done, re-delivered later
            finally:
                metrics.IN_FLIGHT.labels(self.name).dec()
                metrics.DURATION.labels(self.name).observe(
                    time.perf_counter() - started, exemplar=telemetry.exemplar()
                )
                telemetry.set_outcome(span, outcome or "stopped")

    async def _settle(self, record: Record) -> str | None:
        """The record's outcome once its outputs are acknowledged; None if the stage stopped first."""
        delay, give_up = self.in_place.first_delay, time.monotonic() + self.in_place.max_seconds
        while True:
            try:
                outputs = await self.handler(record)
                await self._produce(outputs)
                own = failures.own_dead_letters(outputs, self.dead_letter_topic)
                for category in own:  # the handler decided it (the status worker: РЭМД rejected it)
                    metrics.DEAD_LETTERS.labels(self.name, category).inc()
                return "dead_letter" if own else "ok"
            except TransientError as exc:
                if self.retry is not None or time.monotonic() >= give_up:
                    return await self._route(record, exc)
                metrics.RETRIES.labels(self.name, exc.reason).inc()
                log.warning(
                    "transient failure, retrying in place",
                    stage=self.name,
                    reason=exc.reason,
                    error=exc.message,
                    local_uid=record.key,
                    delay=delay,
                )
                if await self._sleep_or_stop(exc.defer or delay):
                    return None
                delay = self.in_place.next_delay(delay)
            except PermanentError as exc:
                return await self._route(record, exc)
            except (asyncio.CancelledError, _ProduceFailed):
                raise
            except Exception as exc:  # a bug: dead-letter it rather than block the partition forever
                log.exception("unexpected error in handler", stage=self.name, local_uid=record.key)
                return await self._route(record, exc)

    async def _route(self, record: Record, exc: BaseException) -> str:
        routed = failures.route(record, exc, self.policy, now=time.time())
        telemetry.annotate(reason=routed.reason)
        await self._produce(routed.outputs)
        if routed.outcome == "retry":
            metrics.RETRIES.labels(self.name, routed.reason).inc()
            log.info(
                "scheduled retry",
                stage=self.name,
                local_uid=record.key,
                reason=routed.reason,
                attempt=routed.attempt,
                delay_seconds=round(routed.delay or 0.0, 1),
                message_ids=list(routed.message_ids[-1:]) or None,
            )
            return "retry"
        failure = routed.failure
        assert failure is not None
        metrics.DEAD_LETTERS.labels(self.name, failure.category or "unknown").inc()
        log.warning(
            "dead-lettered",
            stage=self.name,
            local_uid=record.key,
            reason=failure.reason,
            error=failure.message,
            remd_code=failure.remd_code,
            message_ids=list(routed.message_ids) or None,
            topic=self.dead_letter_topic,
        )
        return "dead_letter"

    async def _produce(self, outputs: Sequence[Output]) -> None:
        """Send every output and wait for the broker's acks; retry while the broker is unreachable."""
        if not outputs:
            return
        assert self._producer is not None
        outputs = tracing.stamped(outputs)
        backoff = 0.5
        while True:
            try:
                await self._producer.send(outputs)
                return
            except SendFailed as exc:
                # Re-sending after a partial failure may duplicate an output; downstream is idempotent.
                log.warning("produce failed, retrying", stage=self.name, error=str(exc), delay=backoff)
                if await self._sleep_or_stop(backoff):
                    raise _ProduceFailed() from exc
                backoff = min(backoff * 2, 10.0)

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep, or return True at once if the stage is stopping."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    # ----------------------------------------------------------------------------- offsets
    async def _commit(self, only: frozenset[TopicPartition] | None = None) -> None:
        offsets = self.offsets.to_commit(only)
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailed as exc:
            # Lost the partition in a rebalance: its new owner starts from the last commit (duplicates, no loss).
            log.warning("commit failed", stage=self.name, error=str(exc))
            return
        self.offsets.committed(offsets)
        metrics.COMMITS.labels(self.name).inc()
        metrics.LAST_PROGRESS.labels(self.name).set(time.time())

    async def _settled(self) -> bool:
        """Nothing in flight, everything done committed, every partition read to its end (burst runs); sets
        ``drained_as_of``."""
        assert self._consumer is not None
        if not self.health_state.joined or self._rebalancing or self.scheduler.in_flight:
            return False
        await self._commit()
        as_of = time.time()
        for tp in self._consumer.assignment():
            book = self.offsets.get(tp)
            if book is not None and not book.settled:
                return False
            end, position = self._consumer.end_offset(tp), await self._consumer.position(tp)
            if end is None or position is None or position < end.offset:
                return False
            as_of = min(as_of, end.seen_at)
        self.drained_as_of = as_of
        return True

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Before the partitions move on: let what runs finish (bounded), so the next owner does not redo it.
        Nothing new is handed out until the next assignment (``_dispatch_batch``)."""
        self._generation += 1
        self._rebalancing, self.drained = True, False
        await self.scheduler.wait(min(10.0, self.settings.shutdown_grace_seconds))
        await self._commit(only=partitions)
        self.offsets.forget(partitions)
        for tp in partitions:
            self._paused_until.pop(tp, None)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self._generation += 1
        self._rebalancing = False
        self.health_state.joined = True
        metrics.REBALANCES.labels(self.name).inc()
        self.offsets.assign(partitions)  # positions come from the committed offsets
        log.info("partitions assigned", stage=self.name, count=len(partitions))

    # ----------------------------------------------------------------------------- health
    async def _report_lag(self) -> None:
        assert self._consumer is not None
        while True:
            now_ms = int(time.time() * 1000)
            lags = {}
            for tp in self._consumer.assignment():
                book = self.offsets.get(tp)
                oldest = book.oldest_unprocessed() if book is not None else None
                end = self._consumer.end_offset(tp)
                lags[(tp.topic, tp.partition)] = lag.partition_lag(
                    end=end.offset if end is not None else None,
                    oldest=(oldest.offset, oldest.timestamp_ms) if oldest is not None else None,
                    done_position=book.advance() if book is not None else None,
                    now_ms=now_ms,
                )
            lag.report(self.name, self.topics, lags)
            await asyncio.sleep(self.lag_interval)

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    def health(self) -> Check:
        """Liveness: the poll loop is turning and every periodic job succeeds. (Kafka or РЭМД being down is
        not a reason to restart.)"""
        return self.health_state.liveness(in_flight=self.in_flight)

    def ready(self) -> Check:
        """Readiness: joined the consumer group (and still live), so a rolling update may go on."""
        return self.health_state.readiness(in_flight=self.in_flight)


class _ProduceFailed(Exception):
    """Internal: gave up producing because the stage is stopping."""


class _Rebalance:
    """The stage as the consumer's rebalance listener."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        await self.stage.revoked(partitions)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        await self.stage.assigned(partitions)


def _work(stage: Stage, record: Record, entry: InFlight) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        await stage.process(record, entry)

    return work
