"""The librdkafka transport: confluent-kafka's consumer and producer behind the runtime's seam.

Chosen by ``EMD_KAFKA_CLIENT=confluent``. It keeps every promise of ``services.messaging.transport`` the
aiokafka transport keeps, with librdkafka's own means:

* **commits**: ``enable.auto.commit=false`` and ``enable.auto.offset.store=false``: librdkafka commits
  nothing by itself; ``commit`` sends exactly the offsets the runtime gives, synchronously, and a refusal (a
  rebalance took the partition) is ``CommitFailed``;
* **one thread calls the consumer**: librdkafka's Python consumer admits one thread at a time (a call from
  another waits until the running one returns), and it runs the rebalance callbacks only from inside
  ``consume``. So each consumer has a thread of its own that consumes all the time into a bounded buffer
  (``fetch`` takes from it; a full buffer pauses fetching, not consuming) and runs the calls the loop asks
  for (commit, seek, pause, resume) between two ``consume``\ s. A rebalance is therefore served even while
  the stage is busy and not fetching, as aiokafka's coordinator task serves it;
* **rebalances**: inside ``on_revoke`` the thread waits until the event loop has awaited the runtime's
  ``revoked`` (which finishes in-flight records and commits them), running meanwhile the commit the loop
  sends it: the partitions move on only after that. Buffered records of a revoked partition are dropped;
  the next owner starts from the committed offset. Leaving the group at stop is not a revocation (the
  runtime has drained and committed before; aiokafka and the memory broker do the same);
* **why a thread and not ``poll(0)`` on a timer in the loop**: the timer would save the hand-over between
  threads, but the rebalance callbacks would then run on the loop's own thread, inside a synchronous call,
  where ``revoked`` cannot be awaited: the partitions would move before in-flight records are committed.
  What the thread costs is measured in docs/benchmarks.md;
* **end offsets**: librdkafka reports a partition's end as an event (``enable.partition.eof``) when a fetch
  response shows nothing beyond the consumer's position; such an event after a seek to that position comes
  from a fetch sent after the seek, so the seek's time is when the broker said so. When the runtime asks
  for an end older than ``FRESH_END_SECONDS``, the thread re-seeks that partition to its position, once,
  for a fresh answer (burst runs wait for one; the lag report asks once a second). Nothing here asks
  ListOffsets "latest", which the local broker gets wrong after a batched produce;
* **producer**: idempotent (``enable.idempotence``, with ``acks=all``) unless the setting says no or the
  broker refuses it; ``send`` waits for every delivery report, served by a thread of its own;
* **security**: ``producer.kafka.KafkaSecurity.librdkafka_options`` (TLS files, SASL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from producer.errors import ConfigurationError
from producer.kafka import unreachable
from services.config import Settings
from services.logs import get_logger
from services.messaging.clients import security_from
from services.messaging.records import Output, Record
from services.messaging.transport import (
    CommitFailed,
    EndOffset,
    RebalanceListener,
    SendFailed,
    TopicPartition,
)

log = get_logger(__name__)

T = TypeVar("T")

#: the longest a rebalance callback waits for the runtime's ``revoked``/``assigned`` (they are bounded far
#: below it: in-flight records get at most 10 s): past it the partitions move on, and their next owner
#: redoes what was not committed (duplicates, no loss)
CALLBACK_TIMEOUT = 120.0
#: the consumer thread's ``consume``: at most this many records, waiting at most this long (also how long
#: a commit or a seek the loop asks for may wait for the thread)
CONSUME_BATCH = 500
CONSUME_WAIT_SECONDS = 0.05
#: records the thread keeps for ``fetch`` before it pauses fetching (and resumes under the low mark)
BUFFER_HIGH = 100
BUFFER_LOW = 25
#: an end offset older than this is refreshed (one seek to the position) when the runtime asks for it
FRESH_END_SECONDS = 0.05
#: how long a starting producer waits for the broker to grant or refuse idempotence (a refusal later on is
#: a fatal error every send reports: ``SendFailed``, retried by the runtime, logged)
IDEMPOTENCE_ANSWER_SECONDS = 0.2


def consumer_config(settings: Settings, *, group_id: str, client_id: str) -> dict[str, Any]:
    """librdkafka consumer properties: the aiokafka consumer's settings, spelt for librdkafka."""
    return {
        **security_from(settings).librdkafka_options(),
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": f"{settings.kafka_client_id}-{client_id}",
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        "max.poll.interval.ms": settings.kafka_max_poll_interval_ms,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # what librdkafka fetches ahead per partition: the runtime takes a few records at a time
        "queued.max.messages.kbytes": 16384,
        "log.connection.close": False,
    }


def producer_config(settings: Settings, *, client_id: str, idempotent: bool) -> dict[str, Any]:
    """librdkafka producer properties: the aiokafka producer's settings, spelt for librdkafka."""
    return {
        **security_from(settings).librdkafka_options(),
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": f"{settings.kafka_client_id}-{client_id}",
        "acks": "all",
        "enable.idempotence": idempotent,
        "linger.ms": 5,
        "message.max.bytes": 1024 * 1024,
        "request.timeout.ms": 30000,
        "delivery.timeout.ms": 30000,
        "log.connection.close": False,
    }


class ConfluentTransport:
    """librdkafka consumers and producers of one process on the cluster ``settings`` names."""

    name = "confluent"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def consumer(self, *, group_id: str, client_id: str) -> ConfluentConsumer:
        return ConfluentConsumer(consumer_config(self.settings, group_id=group_id, client_id=client_id))

    async def producer(self, *, client_id: str, topics: Sequence[str] = ()) -> ConfluentProducer:
        return await start_producer(self.settings, client_id=client_id, topics=topics)


# ------------------------------------------------------------------------------------------ consumer
Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class ConfluentConsumer:
    """One member of a consumer group. librdkafka is called from one thread of its own, which consumes all
    the time into a bounded buffer that ``fetch`` takes from: a rebalance is served while the runtime is busy
    (librdkafka calls ``on_revoke`` only from inside ``consume``), and the loop never blocks on the library."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._consumer: confluent_kafka.Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: RebalanceListener | None = None
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._closing = False
        self._failure: BaseException | None = None
        self._wakeup: asyncio.Event | None = None
        # the buffer and what the consumer thread saw; ``_lock`` guards the buffer against a seek
        self._lock = threading.Lock()
        self._buffer: dict[TopicPartition, deque[Record]] = {}
        self._buffered = 0
        self._stale: set[TopicPartition] = set()  # sought by the loop, the seek not yet applied
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._next: dict[TopicPartition, int] = {}  # the offset the thread's next record of a partition has
        self._ends: dict[TopicPartition, EndOffset] = {}
        self._asked_at: dict[TopicPartition, float] = {}  # when the partition's last fetch was set off
        self._probing: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()  # by the runtime
        self._flow_paused = False  # by the buffer being full
        self._want_fresh: set[TopicPartition] = set()

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._loop, self._listener = asyncio.get_running_loop(), listener
        self._wakeup = asyncio.Event()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(list(topics), started), name=f"rdkafka-{self._config['group.id']}"
        )
        self._thread.daemon = True
        self._thread.start()
        await asyncio.wrap_future(started)

    async def stop(self) -> None:
        self._stop_requested.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _run(self, topics: list[str], started: concurrent.futures.Future[None]) -> None:
        try:
            self._consumer = confluent_kafka.Consumer(self._config)
            self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            while not self._stop_requested.is_set():
                self._serve_jobs()
                self._flow()
                self._take(self._consumer.consume(CONSUME_BATCH, CONSUME_WAIT_SECONDS))
                self._probe_ends()
        except BaseException as exc:  # fetch raises it in the loop
            self._failure = exc
            self._wake()
        finally:
            # as the seam says (and aiokafka does), leaving is not a revocation: the runtime has drained and
            # committed before it stops the consumer
            self._closing = True
            self._serve_jobs()
            self._consumer.close()

    def _serve_jobs(self) -> None:
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            _execute(job, future)

    def _call(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._failure is not None or (self._thread is not None and not self._thread.is_alive()):
            future.set_exception(KafkaException(KafkaError(KafkaError._STATE, "the consumer is closed")))
        else:
            self._jobs.put((job, future))
        return future

    def _wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:  # the loop is closed: nobody waits
                pass

    # ---------------------------------------------------------------------------- the consumer thread
    def _take(self, messages: list[confluent_kafka.Message]) -> None:
        added = False
        with self._lock:
            for message in messages:
                tp = TopicPartition(message.topic() or "", message.partition() or 0)
                offset = message.offset()
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("Kafka consumer error", error=str(error), topic=tp.topic)
                    continue
                if offset is None or tp in self._stale or tp not in self._assigned:
                    continue
                self._probing.discard(tp)
                if error is not None:  # the end of the partition: nothing beyond ``offset`` when it was said
                    self._next[tp] = offset
                    self._ends[tp] = EndOffset(offset, self._asked_at.get(tp, 0.0))
                    continue
                self._buffer.setdefault(tp, deque()).append(_record(message, tp, offset))
                self._buffered += 1
                self._next[tp] = offset + 1
                added = True
        if added:
            self._wake()

    def _flow(self) -> None:
        """Pause fetching while the buffer is full (the thread goes on consuming: rebalances are served)."""
        assert self._consumer is not None
        if not self._flow_paused and self._buffered >= BUFFER_HIGH:
            self._flow_paused = True
            self._apply("pause", self._assigned - self._paused)
        elif self._flow_paused and self._buffered <= BUFFER_LOW:
            self._flow_paused = False
            self._apply("resume", self._assigned - self._paused)

    def _probe_ends(self) -> None:
        """Re-seek the partitions the runtime wants a fresh end of and that sit at their end: the answer to
        the fetch that follows is younger than the seek."""
        if not self._want_fresh:
            return
        wanted, self._want_fresh = tuple(self._want_fresh), set()
        for tp in wanted:
            end, position = self._ends.get(tp), self._next.get(tp)
            if (
                tp in self._probing
                or tp in self._paused
                or self._flow_paused
                or tp not in self._assigned
                or end is None
                or position != end.offset
            ):
                continue
            self._seek(tp, position)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        at = time.time()
        try:
            self._consumer.seek(confluent_kafka.TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:  # not fetching (yet, or any more): the next assignment decides
            log.debug("seek refused", topic=tp.topic, partition=tp.partition, error=str(exc))
            return
        self._asked_at[tp] = at
        self._probing.add(tp)

    def _apply(self, method: str, partitions: Iterable[TopicPartition]) -> None:
        wanted = [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not wanted or self._consumer is None:
            return
        try:
            getattr(self._consumer, method)(wanted)
        except KafkaException as exc:
            log.warning(f"{method} refused", error=str(exc))

    def _on_revoke(self, consumer: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        revoked = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        try:
            self._await_listener("revoked", revoked)
        finally:
            with self._lock:
                self._assigned = self._assigned - revoked
                for tp in revoked:
                    self._forget(tp)
                self._flow_paused = False  # librdkafka's next assignment starts unpaused

    def _on_assign(self, consumer: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        assigned = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        now = time.time()
        with self._lock:
            for tp in assigned:
                self._forget(tp)
                self._asked_at[tp] = now  # what is fetched from now on was asked after this moment
            self._assigned = assigned
            self._flow_paused = False
        # librdkafka keeps a partition's pause across a revocation: a partition paused before (the buffer
        # was full) would come back paused and never be fetched. Assigned here, then resumed, it starts
        # fetching from the group's committed offset.
        consumer.assign(partitions)
        self._apply("resume", assigned)
        self._await_listener("assigned", assigned)

    def _forget(self, tp: TopicPartition) -> None:
        self._buffered -= len(self._buffer.pop(tp, ()))
        for book in (self._next, self._ends, self._asked_at):
            book.pop(tp, None)
        for flags in (self._probing, self._paused, self._stale):
            flags.discard(tp)

    def _await_listener(self, which: str, partitions: frozenset[TopicPartition]) -> None:
        """Run the runtime's ``revoked``/``assigned`` on the loop; serve its consumer calls meanwhile."""
        assert self._loop is not None and self._listener is not None
        if self._closing:
            return
        call = self._listener.revoked if which == "revoked" else self._listener.assigned
        try:
            done = asyncio.run_coroutine_threadsafe(call(partitions), self._loop)
        except RuntimeError:  # the event loop is gone (the process is ending): nothing to wait for
            return
        deadline = time.monotonic() + CALLBACK_TIMEOUT
        while not done.done() and time.monotonic() < deadline:
            try:
                job, future = self._jobs.get(timeout=0.01)
            except queue.Empty:
                continue
            _execute(job, future)
        if not done.done():
            log.error("rebalance callback did not finish in time", callback=which, seconds=CALLBACK_TIMEOUT)
        elif done.exception() is not None:
            log.error("rebalance callback failed", callback=which, error=repr(done.exception()))

    # ---------------------------------------------------------------------------- the loop's side
    async def fetch(self, *, timeout: float, max_records: int) -> Mapping[TopicPartition, Sequence[Record]]:
        assert self._wakeup is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._failure is not None:
                raise self._failure
            self._wakeup.clear()
            batch = self._hand_out(max_records)
            left = deadline - time.monotonic()
            if batch or left <= 0:
                return batch
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                pass

    def _hand_out(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        room = max_records
        with self._lock:
            for tp, records in self._buffer.items():
                if room <= 0:
                    break
                if tp in self._paused or not records:
                    continue
                taken = [records.popleft() for _ in range(min(room, len(records)))]
                out[tp] = taken
                room -= len(taken)
            self._buffered -= max_records - room
        return out

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assigned

    def seek(self, partition: TopicPartition, offset: int) -> None:
        with self._lock:
            if partition not in self._assigned:
                return
            self._buffered -= len(self._buffer.pop(partition, ()))
            self._stale.add(partition)  # what the thread consumes before the seek is applied is dropped
            self._next[partition] = offset
            self._ends.pop(partition, None)  # an end seen before the seek says nothing of what follows it

        def seek() -> None:
            with self._lock:
                self._stale.discard(partition)
                if partition in self._assigned:
                    self._seek(partition, offset)

        self._call(seek)

    def pause(self, partition: TopicPartition) -> None:
        if partition in self._assigned:
            self._paused.add(partition)
            self._call(lambda: self._apply("pause", [partition]))

    def resume(self, partition: TopicPartition) -> None:
        if partition in self._paused:
            self._paused.discard(partition)
            self._call(lambda: None if self._flow_paused else self._apply("resume", [partition]))

    async def position(self, partition: TopicPartition) -> int | None:
        with self._lock:
            if partition not in self._assigned:
                return None
            buffered = self._buffer.get(partition)
            known = buffered[0].offset if buffered else self._next.get(partition)
        if known is not None:
            return known
        # nothing fetched yet: the group's committed offset is where the fetch starts
        committed = await self._committed(partition)
        return committed if partition in self._assigned else None

    async def _committed(self, partition: TopicPartition) -> int | None:
        tp = confluent_kafka.TopicPartition(partition.topic, partition.partition)

        def committed() -> list[confluent_kafka.TopicPartition]:
            assert self._consumer is not None
            return self._consumer.committed([tp], timeout=10.0)

        try:
            (answer,) = await asyncio.wrap_future(self._call(committed))
        except KafkaException:
            return None
        return answer.offset if answer.offset >= 0 else None

    def end_offset(self, partition: TopicPartition) -> EndOffset | None:
        if partition not in self._assigned:
            return None
        end = self._ends.get(partition)
        if end is None or time.time() - end.seen_at > FRESH_END_SECONDS:
            self._want_fresh.add(partition)
        return end

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        wanted = [confluent_kafka.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]

        def commit() -> list[confluent_kafka.TopicPartition]:
            assert self._consumer is not None
            return self._consumer.commit(offsets=wanted, asynchronous=False)

        try:
            answers = await asyncio.wrap_future(self._call(commit))
        except KafkaException as exc:
            raise CommitFailed(str(exc)) from exc
        refused = [f"{a.topic}[{a.partition}]: {a.error}" for a in answers or () if a.error is not None]
        if refused:
            raise CommitFailed("; ".join(refused))


def _execute(job: Callable[[], Any], future: concurrent.futures.Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(job())
    except BaseException as exc:  # handed to whoever awaits it
        future.set_exception(exc)


def _record(message: Any, tp: TopicPartition, offset: int) -> Record:
    key = message.key()
    return Record(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=message.value() or b"",
        headers=dict(message.headers() or ()),
        timestamp_ms=message.timestamp()[1],
    )


# ------------------------------------------------------------------------------------------ producer
class ConfluentProducer:
    """A started librdkafka producer; its delivery reports are served by a thread of its own."""

    def __init__(self, producer: confluent_kafka.Producer, errors: _Errors) -> None:
        self._producer = producer
        self._errors = errors
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="rdkafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    async def send(self, outputs: Sequence[Output]) -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        try:
            for out in outputs:
                key, value, headers = out.encoded()
                future: asyncio.Future[None] = loop.create_future()
                await self._produce(out.topic, key, value, headers, _delivery(loop, future))
                futures.append(future)
            await asyncio.gather(*futures)
        except KafkaException as exc:
            raise SendFailed(str(exc)) from exc

    async def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        on_delivery: Callable[[KafkaError | None, Any], None],
    ) -> None:
        while True:
            fatal = self._errors.fatal
            if fatal is not None:
                raise SendFailed(f"the producer failed for good: {fatal}")
            try:
                wire: list[tuple[str, str | bytes | None]] = [*headers]
                self._producer.produce(topic, value=value, key=key, headers=wire, on_delivery=on_delivery)
                return
            except BufferError:  # librdkafka's queue is full: wait for deliveries to make room
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        try:
            await asyncio.to_thread(self._producer.flush, 30.0)
        finally:
            self._stopping.set()
            await asyncio.to_thread(self._poller.join)
            await asyncio.to_thread(self._producer.close)


def _delivery(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
) -> Callable[[KafkaError | None, Any], None]:
    def delivered(error: KafkaError | None, message: Any) -> None:  # on the delivery thread
        loop.call_soon_threadsafe(_settle, future, error)

    return delivered


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(SendFailed(str(error)))


class _Errors:
    """librdkafka's error callback: a fatal error (an idempotent producer the broker refused) is kept."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.fatal: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error
            log.error("Kafka producer failed", client=self.client, error=str(error))
        elif error.code() != KafkaError._TRANSPORT:  # a broker going away is retried, and said elsewhere
            log.warning("Kafka client error", client=self.client, error=str(error))


async def start_producer(
    settings: Settings, *, client_id: str, topics: Sequence[str] = ()
) -> ConfluentProducer:
    """A started producer on a broker that has ``topics``, or ``ConfigurationError`` (as aiokafka's)."""
    idempotent = settings.kafka_enable_idempotence is not False
    deadline = time.monotonic() + settings.startup_grace_seconds
    while True:
        errors = _Errors(client_id)
        config = producer_config(settings, client_id=client_id, idempotent=idempotent)
        producer = confluent_kafka.Producer({**config, "error_cb": errors})
        try:
            metadata = await asyncio.to_thread(producer.list_topics, None, 5.0)
            if idempotent:  # the broker's answer to InitProducerId comes a round trip later
                await asyncio.to_thread(producer.poll, IDEMPOTENCE_ANSWER_SECONDS)
        except KafkaException as exc:
            await asyncio.to_thread(producer.close)
            if time.monotonic() >= deadline:
                raise unreachable(
                    settings.kafka_bootstrap_servers, exc, after=settings.startup_grace_seconds
                ) from None
            await asyncio.sleep(1.0)
            continue
        missing = sorted(set(topics) - set(metadata.topics))
        if missing or (idempotent and errors.fatal is not None):
            await asyncio.to_thread(producer.close)
        if missing:
            raise ConfigurationError(
                f"topics missing on the Kafka broker at {settings.kafka_bootstrap_servers}: "
                f"{', '.join(missing)}; create them with `emd topics`"
            )
        if idempotent and errors.fatal is not None:
            if settings.kafka_enable_idempotence:
                raise ConfigurationError(
                    f"the Kafka broker at {settings.kafka_bootstrap_servers} refuses idempotent producers "
                    f"({errors.fatal}); KAFKA_ENABLE_IDEMPOTENCE=true requires them: use a broker that "
                    "grants them (IdempotentWrite), or unset the variable"
                )
            log.warning(
                "broker refuses idempotent producers: producing without idempotence (acks=all; "
                "downstream is idempotent by localUid)",
                bootstrap=settings.kafka_bootstrap_servers,
                error=str(errors.fatal),
                client=client_id,
            )
            idempotent = False
            continue
        return ConfluentProducer(producer, errors)
