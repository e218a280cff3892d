"""An in-memory broker: the runtime tested in milliseconds, without Kafka (faststream's ``TestKafkaBroker``).

``MemoryBroker`` keeps what the runtime relies on a broker for, in one process and one event loop:

* topics of N partitions; a record goes to the partition of its key's hash (keyless records round-robin), so
  one key's records stay in one partition, in order;
* consumer groups with committed offsets: a member fetches from its partitions' positions, a new assignment
  starts at the group's committed offset (the earliest offset when none), commits are refused for partitions
  the member no longer holds;
* rebalances, eager like Kafka's classic protocol: when a member joins or leaves, or when a test calls
  ``rebalance(group)``, every member's ``revoked`` is awaited first (the runtime finishes and commits), then
  the partitions are dealt round-robin and every member's ``assigned`` is awaited;
* ``end_offset``: the partition's end as the member's last fetch saw it, and when, as a real consumer knows it.

It is not a model of replication, transactions, retention or timing. The same runtime tests run on it and on
the real broker (``tests/test_runtime.py``), which keeps it honest.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from producer.errors import ConfigurationError
from services.messaging.records import Output, Record
from services.messaging.transport import (
    CommitFailed,
    EndOffset,
    RebalanceListener,
    SendFailed,
    TopicPartition,
)


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 0
    lock: asyncio.Lock | None = None
    lock_loop: asyncio.AbstractEventLoop | None = None

    def locked(self) -> asyncio.Lock:
        """The group's rebalance lock, made for the running event loop (a test may run several)."""
        loop = asyncio.get_running_loop()
        if self.lock is None or self.lock_loop is not loop:
            self.lock, self.lock_loop = asyncio.Lock(), loop
        return self.lock


class MemoryBroker:
    """Topics, partitions and consumer groups in memory (one event loop at a time)."""

    def __init__(self) -> None:
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._round_robin = itertools.count()

    # ------------------------------------------------------------------------------ topics and records
    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` partitions (nothing happens if it exists)."""
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, not {partitions}")
        self._logs.setdefault(name, [[] for _ in range(partitions)])

    def topics(self) -> set[str]:
        return set(self._logs)

    def partitions(self, topic: str) -> int:
        return len(self._log(topic))

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Record:
        """Append one record (to its key's partition) and wake the consumers waiting for records."""
        log = self._log(topic)
        if key is not None:
            partition = zlib.crc32(key) % len(log)
        else:
            partition = next(self._round_robin) % len(log)
        record = Record(
            topic=topic,
            partition=partition,
            offset=len(log[partition]),
            key=key.decode("utf-8", "replace") if key is not None else None,
            value=value,
            headers=dict(headers),
            timestamp_ms=int(time.time() * 1000),
        )
        log[partition].append(record)
        self.wake()
        return record

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition, in offset order."""
        return [r for partition in self._log(topic) for r in partition]

    def read(self, tp: TopicPartition, offset: int, count: int) -> list[Record]:
        return self._log(tp.topic)[tp.partition][offset : offset + count]

    def end(self, tp: TopicPartition) -> int:
        return len(self._log(tp.topic)[tp.partition])

    def _log(self, topic: str) -> list[list[Record]]:
        try:
            return self._logs[topic]
        except KeyError:
            raise KeyError(f"no topic {topic!r} on the memory broker") from None

    # ------------------------------------------------------------------------------ waiting
    def wake(self) -> None:
        """Wake every fetch waiting for records (new records, a seek, a resume, a new assignment)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def changed(self, timeout: float) -> None:
        """Wait until ``wake`` or ``timeout`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    # ------------------------------------------------------------------------------ groups
    def group(self, group_id: str) -> _Group:
        return self._groups.setdefault(group_id, _Group())

    def committed(self, group_id: str) -> dict[TopicPartition, int]:
        """The offsets ``group_id`` has committed."""
        return dict(self.group(group_id).committed)

    async def join(self, member: MemoryConsumer) -> None:
        group = self.group(member.group_id)
        async with group.locked():
            group.members.append(member)
            await self._rebalance(group)

    async def leave(self, member: MemoryConsumer) -> None:
        group = self.group(member.group_id)
        async with group.locked():
            if member in group.members:
                group.members.remove(member)
                member.assigned = frozenset()
                await self._rebalance(group)

    async def rebalance(self, group_id: str) -> None:
        """A rebalance with no change of members (what a slow heartbeat or a broker restart causes)."""
        group = self.group(group_id)
        async with group.locked():
            await self._rebalance(group)

    async def _rebalance(self, group: _Group) -> None:
        for member in list(group.members):
            if member.assigned:
                await member.listener.revoked(member.assigned)
                member.assigned = frozenset()
        group.generation += 1
        deal: dict[int, set[TopicPartition]] = {id(m): set() for m in group.members}
        topics = sorted({t for m in group.members for t in m.topics if t in self._logs})
        for topic in topics:
            subscribed = [m for m in group.members if topic in m.topics]
            for partition in range(self.partitions(topic)):
                deal[id(subscribed[partition % len(subscribed)])].add(TopicPartition(topic, partition))
        for member in list(group.members):
            mine = frozenset(deal[id(member)])
            member.assigned = mine
            member.positions = {tp: group.committed.get(tp, 0) for tp in mine}
            member.paused &= mine
            await member.listener.assigned(mine)
        self.wake()


class MemoryConsumer:
    """One member of a consumer group on a ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.topics: tuple[str, ...] = ()
        self.assigned: frozenset[TopicPartition] = frozenset()
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.listener: RebalanceListener = _NoListener()
        self._seen_end: dict[TopicPartition, EndOffset] = {}

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.topics, self.listener = tuple(topics), listener
        await self.broker.join(self)

    async def stop(self) -> None:
        await self.broker.leave(self)

    async def fetch(self, *, timeout: float, max_records: int) -> Mapping[TopicPartition, Sequence[Record]]:
        deadline = time.monotonic() + timeout
        while True:
            batch = self._take(max_records)
            left = deadline - time.monotonic()
            if batch or left <= 0:
                return batch
            await self.broker.changed(left)

    def _take(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        room = max_records
        now = time.time()
        for tp in sorted(self.assigned):
            self._seen_end[tp] = EndOffset(self.broker.end(tp), now)
            if tp in self.paused or room <= 0:
                continue
            records = self.broker.read(tp, self.positions[tp], room)
            if records:
                out[tp] = records
                self.positions[tp] += len(records)
                room -= len(records)
        return out

    def assignment(self) -> frozenset[TopicPartition]:
        return self.assigned

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition in self.assigned:
            self.positions[partition] = offset
            self.broker.wake()

    def pause(self, partition: TopicPartition) -> None:
        if partition in self.assigned:
            self.paused.add(partition)

    def resume(self, partition: TopicPartition) -> None:
        self.paused.discard(partition)
        self.broker.wake()

    async def position(self, partition: TopicPartition) -> int | None:
        return self.positions.get(partition) if partition in self.assigned else None

    def end_offset(self, partition: TopicPartition) -> EndOffset | None:
        return self._seen_end.get(partition) if partition in self.assigned else None

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        group = self.broker.group(self.group_id)
        foreign = sorted(tp for tp in offsets if tp not in self.assigned)
        if self not in group.members or foreign:
            raise CommitFailed(f"{self.group_id}: partitions not assigned to this member: {foreign}")
        group.committed.update(offsets)


class MemoryProducer:
    """Appends to the broker's logs; ``send`` is acknowledged at once (or refused for a missing topic)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def send(self, outputs: Sequence[Output]) -> None:
        missing = sorted({o.topic for o in outputs} - self.broker.topics())
        if missing:
            raise SendFailed(f"unknown topics: {', '.join(missing)}")
        for out in outputs:
            key, value, headers = out.encoded()
            self.broker.produce(out.topic, value, key=key, headers=headers)
        await asyncio.sleep(0)  # a send is a suspension point, as on a real broker

    async def stop(self) -> None:
        return None


class MemoryTransport:
    """The transport of a ``MemoryBroker``: its consumers and producers."""

    name = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    def consumer(self, *, group_id: str, client_id: str) -> MemoryConsumer:
        return MemoryConsumer(self.broker, group_id)

    async def producer(self, *, client_id: str, topics: Iterable[str] = ()) -> MemoryProducer:
        missing = sorted(set(topics) - self.broker.topics())
        if missing:
            raise ConfigurationError(
                f"topics missing on the Kafka broker at memory: {', '.join(missing)}; create them with `emd topics`"
            )
        return MemoryProducer(self.broker)


class _NoListener:
    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        return None

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        return None
