"""The worker runtime: what every stage shares, so a worker is only its handler.

A stage is ``async def handle(record: Record) -> Sequence[Output]`` plus its topics. ``Stage.run()``:

1. consumes the input topic (and the stage's retry tiers) in a consumer group, auto-commit off;
2. runs the handler with bounded concurrency; records with the same key never run at once, so one
   document's events stay in order;
3. produces the outputs (idempotent producer, ``acks=all``) and **waits for the broker's acknowledgement**;
4. only then marks the input done. A partition's committed offset is its lowest offset not yet done: a
   crash re-delivers what was in flight (at-least-once; downstream is idempotent by localUid), and never
   skips a record that was fetched but not finished;
5. ``PermanentError`` or an unexpected exception → dead-letter topic (``services.messaging.deadletter``);
   ``TransientError`` → the next retry tier with a due time (or the dead letter once attempts run out), or,
   for a stage without retry tiers, an in-place retry with backoff (a dead letter with its reason after
   EMD_RETRY_IN_PLACE_MAX_SECONDS);
6. SIGTERM/SIGINT: stop fetching, let in-flight records finish (``shutdown_grace_seconds``), commit, leave
   the group;
7. ``/metrics``, ``/healthz`` (liveness: the poll loop turns) and ``/readyz`` (readiness: joined the group)
   (``services.metrics.MetricsServer``), a heartbeat file for ``--check``, and the consumer lag in records and
   seconds (``services.messaging.lag``), reported every ``lag_interval`` seconds.

Why aiokafka and not faust's consumer: see docs/architecture.md. In short, faust acks records on its own
schedule (including records whose agent raised) and was measured skipping offsets after restarts with a
backlog on this broker; here the committed offset comes only from our own done-tracking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from producer.errors import EmdError, PermanentError, TransientError
from services import metrics
from services.config import Settings
from services.logs import get_logger
from services.messaging import deadletter as dl
from services.messaging import lag
from services.messaging.clients import aio_consumer_config, start_producer
from services.messaging.heartbeat import heartbeat_path, write_heartbeat
from services.messaging.offsets import PartitionTracker
from services.messaging.records import Output, Record
from services.reasons import reason_info

log = get_logger(__name__)


Handler = Callable[[Record], Awaitable[Sequence[Output]]]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Non-blocking retries through tier topics, exponential backoff with jitter.

    :param topics: the tier topics, shortest delay first (``producer.topology.SENDER_RETRIES``).
    :param base_delay: seconds before the first retry (default 60).
    :param max_delay: the longest wait between attempts (default 6 h).
    :param max_attempts: attempts in all, the first included, before the dead letter (default 12).
    :param jitter: ± fraction of the delay, so a burst of failures does not come back as a burst.
    """

    topics: tuple[str, ...]
    base_delay: float = 60.0
    max_delay: float = 6 * 3600.0
    max_attempts: int = 12
    jitter: float = 0.2

    def delay(self, attempt: int, *, at_least: float | None = None) -> float:
        d = min(self.max_delay, self.base_delay * (2.0 ** max(0, attempt - 1)))
        d *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(d, at_least or 0.0)

    def topic_for(self, attempt: int) -> str:
        return self.topics[min(attempt - 1, len(self.topics) - 1)]


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

    :param name: the stage name (metrics label, consumer group suffix, health file name).
    :param input_topic: the topic the stage consumes.
    :param handler: ``async (Record) -> Sequence[Output]``.
    :param dead_letter_topic: where failures go.
    :param settings: deployment settings (bootstrap servers, timeouts, concurrency, grace period).
    :param retry: non-blocking retry tiers; ``None``: transient errors are retried in place.
    :param group_id: consumer group (default ``emd-<name>``).
    :param on_start / on_stop: async hooks to open and close what the handler needs (HTTP clients...).
    :param describe_failure: maps (record, exception) to extra dead-letter fields (localUid, kind, org...).
    :param on_dead_letter: ``(record, failure) -> outputs`` produced together with the dead letter, before the
        commit (the МИС's ``failed`` status event); ``failure.message_ids`` holds every MessageID so far.
    :param serve_metrics: start the /metrics server (off in embedded uses such as tests of a handler).
    :param tickers: periodic jobs whose outputs the stage produces; part of its liveness.
    """

    def __init__(
        self,
        *,
        name: str,
        input_topic: str,
        handler: Handler,
        dead_letter_topic: str,
        settings: Settings,
        retry: RetryPolicy | None = None,
        group_id: str | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        describe_failure: Callable[[Record, BaseException], Mapping[str, Any]] | None = None,
        on_dead_letter: Callable[[Record, dl.Failure], Sequence[Output]] | None = None,
        serve_metrics: bool = True,
        commit_interval: float = 0.5,
        lag_interval: float = 1.0,
        tickers: Sequence[Ticker] = (),
    ) -> None:
        self.name = name
        self.input_topic = input_topic
        self.handler = handler
        self.dead_letter_topic = dead_letter_topic
        self.settings = settings
        self.retry = retry
        self.group_id = group_id or f"emd-{name}"
        self.on_start, self.on_stop = on_start, on_stop
        self.describe_failure = describe_failure
        self.on_dead_letter = on_dead_letter
        self.serve_metrics = serve_metrics
        self.commit_interval = commit_interval
        self.lag_interval = lag_interval
        self._joined = False
        self.tickers = tuple(tickers)
        self._ticked: dict[str, float] = {}  # ticker name → time of its last successful tick
        self.concurrency = settings.worker_concurrency
        self._stopping = asyncio.Event()
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        self._key_tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._paused_until: dict[TopicPartition, float] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.metrics_server: metrics.MetricsServer | None = None
        self.health_file = heartbeat_path(settings, name)
        self._last_poll = time.time()
        self._last_heartbeat_write = 0.0

    # ----------------------------------------------------------------------------- lifecycle
    def request_stop(self) -> None:
        """Ask the stage to drain and stop (what SIGTERM does)."""
        self._stopping.set()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self._slots = asyncio.Semaphore(self.concurrency)
        if self.serve_metrics:
            self.metrics_server = metrics.MetricsServer(
                host=self.settings.metrics_host,
                port=self.settings.metrics_port,
                health=self.health,
                ready=self.ready,
            ).start()
            log.info("metrics", stage=self.name, url=self.metrics_server.url)
        topics = [self.input_topic, *(self.retry.topics if self.retry else ())]
        metrics.init_stage(self.name, tuple(topics))
        metrics.LAST_PROGRESS.labels(self.name).set(time.time())  # "not progressing" counts from the start
        try:  # what configuration can get wrong fails here, in seconds, as a ConfigurationError
            self._producer = await start_producer(
                self.settings, client_id=self.name, topics=[*topics, self.dead_letter_topic]
            )
        except BaseException:
            if self.metrics_server:
                self.metrics_server.stop()
            raise
        self._consumer = AIOKafkaConsumer(
            **aio_consumer_config(self.settings, group_id=self.group_id, client_id=self.name)
        )
        try:
            if self.on_start:
                await self.on_start()
            self._consumer.subscribe(topics, listener=_Rebalance(self))
            await self._consumer.start()
            log.info("stage started", stage=self.name, topics=topics, group=self.group_id)
            background = [
                asyncio.create_task(self._report_lag(tuple(topics))),
                *(asyncio.create_task(self._tick_forever(t)) for t in self.tickers),
            ]
            try:
                await self._loop()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
        finally:
            await self._drain()
            try:
                await self._consumer.stop()  # leaves the group: the partitions move on at once
            finally:
                if self.on_stop:
                    await self.on_stop()
                await self._producer.stop()
                if self.metrics_server:
                    self.metrics_server.stop()
                log.info("stage stopped", stage=self.name)

    async def _loop(self) -> None:
        assert self._consumer is not None and self._slots is not None
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            self._resume_due()
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self.concurrency * 2)
            self._heartbeat()
            for tp, records in batches.items():
                for raw in records:
                    if self._not_due(tp, raw):
                        break  # the rest of this partition's batch is later still
                    await self._slots.acquire()
                    if self._stopping.is_set():
                        self._slots.release()
                        self._consumer.seek(tp, raw.offset)
                        break
                    self._dispatch(tp, raw)
            if time.monotonic() - last_commit >= self.commit_interval:
                await self._commit()
                last_commit = time.monotonic()

    async def _tick_forever(self, ticker: Ticker) -> None:
        self._ticked[ticker.name] = time.time()  # a fresh start counts: the first tick is one interval away
        while not await self._sleep_or_stop(ticker.interval):
            try:
                await self._produce(await ticker.tick())
            except _ProduceFailed:
                return
            except Exception:  # the next tick tries again; liveness shows a ticker that keeps failing
                log.exception("periodic job failed", stage=self.name, job=ticker.name)
                continue
            self._ticked[ticker.name] = time.time()

    async def _drain(self) -> None:
        if self._tasks:
            log.info(
                "draining in-flight records",
                stage=self.name,
                count=len(self._tasks),
                grace_seconds=self.settings.shutdown_grace_seconds,
            )
            done, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace_seconds)
            for t in pending:
                t.cancel()  # not marked done: re-delivered to whoever owns the partition next
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self._commit()

    # ----------------------------------------------------------------------------- dispatch
    def _not_due(self, tp: TopicPartition, raw: Any) -> bool:
        """A retry-tier record whose time has not come: rewind and pause its partition until then."""
        if self.retry is None or tp.topic not in self.retry.topics:
            return False
        due_ms = _header(raw, dl.RETRY_DUE)
        if not due_ms:
            return False
        wait = int(due_ms) / 1000 - time.time()
        if wait <= 0:
            return False
        assert self._consumer is not None
        self._trackers.setdefault(tp, PartitionTracker()).waiting = (raw.offset, raw.timestamp)
        self._consumer.seek(tp, raw.offset)
        self._consumer.pause(tp)
        self._paused_until[tp] = time.time() + wait
        return True

    def _resume_due(self) -> None:
        now = time.time()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[tp]
                if self._consumer is not None and tp in self._consumer.assignment():
                    self._consumer.resume(tp)

    def _dispatch(self, tp: TopicPartition, raw: Any) -> None:
        tracker = self._trackers.setdefault(tp, PartitionTracker())
        entry = tracker.add(raw.offset, raw.timestamp)
        record = Record(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key.decode("utf-8", "replace") if raw.key is not None else None,
            value=raw.value or b"",
            headers={k: v for k, v in (raw.headers or ())},
            timestamp_ms=raw.timestamp,
        )
        previous = self._key_tails.get(record.key) if record.key is not None else None
        task = asyncio.create_task(self._process(record, entry, previous))
        self._tasks.add(task)
        if record.key is not None:
            self._key_tails[record.key] = task

        def finished(t: asyncio.Task[None], key: str | None = record.key) -> None:
            self._tasks.discard(t)
            assert self._slots is not None
            self._slots.release()
            if key is not None and self._key_tails.get(key) is t:
                del self._key_tails[key]

        task.add_done_callback(finished)

    async def _process(self, record: Record, entry: list[Any], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # same key: strictly after the record before it
            await asyncio.wait([previous])
        metrics.IN_FLIGHT.labels(self.name).inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            backoff, give_up = 1.0, time.monotonic() + self.settings.retry_in_place_max_seconds
            while True:
                try:
                    outputs = await self.handler(record)
                    await self._produce(outputs)
                    if self._count_dead_letters(outputs):
                        outcome = (
                            "dead_letter"  # the handler decided it (the status worker: РЭМД rejected it)
                        )
                    break
                except TransientError as exc:
                    if self.retry is not None:
                        outcome = await self._to_retry(record, exc)
                        break
                    # No retry tiers: retry in place (the partition's other records go on meanwhile), for a
                    # bounded time: a record that never succeeds must not hold its partition's commits forever
                    if time.monotonic() >= give_up:
                        await self._to_dead_letter(record, exc)
                        outcome = "dead_letter"
                        break
                    metrics.RETRIES.labels(self.name, exc.reason).inc()
                    log.warning(
                        "transient failure, retrying in place",
                        stage=self.name,
                        reason=exc.reason,
                        error=exc.message,
                        local_uid=record.key,
                        delay=backoff,
                    )
                    if await self._sleep_or_stop(exc.defer or backoff):
                        return  # stopping: left not done, re-delivered after restart
                    backoff = min(backoff * 2, 60.0)
                except PermanentError as exc:
                    await self._to_dead_letter(record, exc)
                    outcome = "dead_letter"
                    break
                except asyncio.CancelledError:
                    raise
                except _ProduceFailed:
                    raise
                except Exception as exc:  # a bug: dead-letter it rather than block the partition forever
                    log.exception("unexpected error in handler", stage=self.name, local_uid=record.key)
                    await self._to_dead_letter(record, exc)
                    outcome = "dead_letter"
                    break
            entry[1] = True  # done: outputs (or retry / dead letter) acknowledged by the broker
            metrics.RECORDS.labels(self.name, outcome).inc()
        except _ProduceFailed:
            return  # stopping while the broker was unreachable: not done, re-delivered later
        finally:
            metrics.IN_FLIGHT.labels(self.name).dec()
            metrics.DURATION.labels(self.name).observe(time.perf_counter() - started)

    async def _produce(self, outputs: Sequence[Output]) -> None:
        """Send every output and wait for the broker's acks; retry while the broker is unreachable."""
        if not outputs:
            return
        assert self._producer is not None
        backoff = 0.5
        while True:
            try:
                futures = []
                for out in outputs:
                    key, value, headers = out.encoded()
                    futures.append(
                        await self._producer.send(out.topic, value=value, key=key, headers=headers)
                    )
                await asyncio.gather(*futures)
                return
            except KafkaError as exc:
                # Re-sending after a partial failure may duplicate an output; downstream is idempotent.
                log.warning("produce failed, retrying", stage=self.name, error=str(exc), delay=backoff)
                if await self._sleep_or_stop(backoff):
                    raise _ProduceFailed() from exc
                backoff = min(backoff * 2, 10.0)

    async def _to_retry(self, record: Record, exc: TransientError) -> str:
        assert self.retry is not None
        attempt = record.attempt + 1
        if attempt >= self.retry.max_attempts:
            await self._to_dead_letter(record, exc, reason="RETRIES_EXHAUSTED", attempts=attempt)
            return "dead_letter"
        delay = self.retry.delay(attempt, at_least=exc.defer)
        ids = dl.merge_ids(dl.split_ids(record.headers.get(dl.MESSAGE_IDS)), _ids(exc))
        headers = dl.retry_headers(
            record.headers,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            delay=delay,
            reason=exc.reason,
            attempt=attempt,
            message_ids=ids,
        )
        await self._produce([Output(self.retry.topic_for(attempt), record.value, record.key, headers)])
        metrics.RETRIES.labels(self.name, exc.reason).inc()
        log.info(
            "scheduled retry",
            stage=self.name,
            local_uid=record.key,
            reason=exc.reason,
            attempt=attempt,
            delay_seconds=round(delay, 1),
            message_ids=ids[-1:] or None,
        )
        return "retry"

    async def _to_dead_letter(
        self, record: Record, exc: BaseException, *, reason: str | None = None, attempts: int | None = None
    ) -> None:
        details = dict(getattr(exc, "details", {}) or {})
        if self.describe_failure:
            try:
                details = {**self.describe_failure(record, exc), **details}
            except Exception:  # describing must never lose the dead letter
                log.exception("describe_failure failed", stage=self.name)
        code = reason or (exc.reason if isinstance(exc, EmdError) else None) or "UNEXPECTED_ERROR"
        # who must act: the РЭМД code's own category when the failure carries one, else the catalogue's
        known = reason_info(code) or reason_info("UNEXPECTED_ERROR")
        failure = dl.Failure(
            stage=self.name,
            reason=code,
            message=str(exc) or exc.__class__.__name__,
            exception_fqcn=f"{type(exc).__module__}.{type(exc).__qualname__}",
            remd_code=details.get("remd_code"),
            remd_message=details.get("remd_message"),
            category=details.get("category") or (known.category if known else None),
            hint=details.get("hint") or (known.hint if known else None),
            message_ids=tuple(_ids(exc)),
            local_uid=details.get("local_uid") or record.key,
            kind=details.get("kind"),
            organization=details.get("organization"),
        )
        headers = dl.dead_letter_headers(
            original_headers=record.headers,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            consumer_group=self.group_id,
            failure=failure,
        )
        hdrs = dict(headers)
        hdrs[dl.ATTEMPTS] = str(attempts if attempts is not None else record.attempt + 1).encode()
        extra: Sequence[Output] = ()
        if self.on_dead_letter:
            try:
                ids = tuple(dl.split_ids(hdrs.get(dl.MESSAGE_IDS)))
                extra = self.on_dead_letter(record, dataclasses.replace(failure, message_ids=ids)) or ()
            except Exception:  # the hook must never lose the dead letter
                log.exception("on_dead_letter failed", stage=self.name, local_uid=record.key)
        await self._produce([Output(self.dead_letter_topic, record.value, record.key, hdrs), *extra])
        metrics.DEAD_LETTERS.labels(self.name, failure.category or "unknown").inc()
        log.warning(
            "dead-lettered",
            stage=self.name,
            local_uid=record.key,
            reason=failure.reason,
            error=failure.message,
            remd_code=failure.remd_code,
            message_ids=dl.split_ids(hdrs.get(dl.MESSAGE_IDS)) or None,
            topic=self.dead_letter_topic,
        )

    def _count_dead_letters(self, outputs: Sequence[Output]) -> int:
        """Dead letters a handler produced itself, counted like the runtime's own (by their category header)."""
        dead = [o for o in outputs if o.topic == self.dead_letter_topic]
        for out in dead:
            category = out.headers.get(dl.CATEGORY)
            category = category.decode() if isinstance(category, bytes) else category
            metrics.DEAD_LETTERS.labels(self.name, category or "unknown").inc()
        return len(dead)

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep, or return True at once if the stage is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    # ----------------------------------------------------------------------------- offsets
    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = {}
        for tp, tracker in self._trackers.items():
            if only is not None and tp not in only:
                continue
            pos = tracker.advance()
            if pos is not None and pos != tracker.committed:
                offsets[tp] = pos
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Lost the partition in a rebalance: its new owner starts from the last commit (duplicates, no loss).
            log.warning("commit failed", stage=self.name, error=str(exc))
            return
        for tp, pos in offsets.items():
            self._trackers[tp].committed = pos
        metrics.COMMITS.labels(self.name).inc()
        metrics.LAST_PROGRESS.labels(self.name).set(time.time())

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        mine = [t for t in self._tasks]
        if mine:  # let what is running finish (bounded), so the next owner does not redo it
            await asyncio.wait(mine, timeout=min(10.0, self.settings.shutdown_grace_seconds))
        await self._commit(only=set(revoked))
        for tp in revoked:
            self._trackers.pop(tp, None)
            self._paused_until.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joined = True
        metrics.REBALANCES.labels(self.name).inc()
        for tp in assigned:
            self._trackers[tp] = PartitionTracker()  # positions come from the committed offsets
        log.info("partitions assigned", stage=self.name, count=len(assigned))

    # ----------------------------------------------------------------------------- health
    async def _report_lag(self, topics: tuple[str, ...]) -> None:
        assert self._consumer is not None
        while True:
            now_ms = int(time.time() * 1000)
            lags = {}
            for tp in self._consumer.assignment():
                tracker = self._trackers.get(tp) or PartitionTracker()
                end = self._consumer.last_stable_offset(tp) or self._consumer.highwater(tp)
                lags[(tp.topic, tp.partition)] = lag.partition_lag(
                    end=end,
                    oldest=tracker.oldest_unprocessed(),
                    done_position=tracker.advance(),
                    now_ms=now_ms,
                )
            lag.report(self.name, topics, lags)
            await asyncio.sleep(self.lag_interval)

    def _heartbeat(self) -> None:
        now = self._last_poll = time.time()
        if now - self._last_heartbeat_write < 2:
            return
        self._last_heartbeat_write = now
        ok, text = self.health()
        write_heartbeat(
            self.health_file, stage=self.name, at=now, in_flight=len(self._tasks), ok=ok, health=text
        )

    def health(self) -> tuple[bool, str]:
        """Liveness: the poll loop is turning and every periodic job succeeds. (Kafka or РЭМД being down is
        not a reason to restart.)"""
        now = time.time()
        age = now - self._last_poll
        ok = age < self.settings.health_max_idle_seconds
        lines = [f"{'ok' if ok else 'stalled'}: last poll {age:.1f}s ago, in flight {len(self._tasks)}"]
        for ticker in self.tickers:
            tick_age = now - self._ticked.get(ticker.name, now)
            fresh = tick_age < ticker.max_age
            ok = ok and fresh
            lines.append(f"{ticker.name}: {'ok' if fresh else 'failing'}, last success {tick_age:.1f}s ago")
        return ok, "\n".join(lines) + "\n"

    def ready(self) -> tuple[bool, str]:
        """Readiness: joined the consumer group (and still live), so a rolling update may go on."""
        ok, text = self.health()
        if not self._joined:
            return False, "not ready: has not joined the consumer group yet\n"
        return ok, text


class _ProduceFailed(Exception):
    """Internal: gave up producing because the stage is stopping."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no types: its base is Any
    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.stage._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.stage._on_assigned(set(assigned))


def _header(raw: Any, name: str) -> str | None:
    for k, v in raw.headers or ():
        if k == name:
            value: bytes = v  # aiokafka has no types: a header's value is bytes
            return value.decode()
    return None


def _ids(exc: BaseException) -> list[str]:
    details = getattr(exc, "details", {}) or {}
    ids = list(details.get("message_ids") or ())
    if details.get("message_id"):
        ids.append(details["message_id"])
    return ids
