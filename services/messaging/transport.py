"""The consumer/producer seam: what the runtime needs from a Kafka client, and nothing more.

The runtime (``services.messaging.runtime``) drives a ``Consumer`` and a ``Producer`` made by a ``Transport``;
it never imports a client library. The implementations live in ``services/messaging/_transports/`` (httpx's
layout): ``aiokafka`` (what is deployed) and ``memory`` (an in-process broker for tests and ``burst`` runs);
``services.messaging.transports`` picks one. A second client library is one new module there.

What an implementation promises:

* ``Consumer``: a member of one consumer group, auto-commit off. ``fetch`` returns records in offset order per
  partition; ``commit`` writes exactly the offsets it is given (or raises ``CommitFailed``: the group moved on,
  the next owner starts from the last commit); the rebalance listener's ``revoked`` is awaited before a
  partition leaves this member, so the runtime can finish and commit its work first; ``end_offset`` is the
  partition's end as the last fetch saw it (the high watermark, the last stable offset under
  ``read_committed``), never a ListOffsets "latest" (the local broker gets that wrong after a batched produce);
* ``Producer``: ``send`` returns only once the broker has acknowledged every output (``acks=all``), or raises
  ``SendFailed`` (unreachable, refused); sending again after a failure may duplicate an output, never lose one;
* ``Transport.producer`` starts the producer and raises ``producer.errors.ConfigurationError`` when something a
  deployment gets wrong (an unreachable broker after the start-up grace, a missing topic) keeps it from working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from services.messaging.records import Output, Record


class TopicPartition(NamedTuple):
    """One partition of one topic (equal to, and hashing like, aiokafka's and kafka-python's)."""

    topic: str
    partition: int


class EndOffset(NamedTuple):
    """A partition's end (the offset the next record will get) and when the broker said so (epoch seconds)."""

    offset: int
    seen_at: float


class CommitFailed(Exception):
    """The group refused the commit (a rebalance took the partition): its next owner redoes the rest."""


class SendFailed(Exception):
    """The broker did not acknowledge an output (unreachable, or it refused the write)."""


class RebalanceListener(Protocol):
    """What the consumer calls when the group moves partitions (the runtime implements it)."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Before ``partitions`` leave this member: finish or abandon their work, commit what is done."""
        ...

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """``partitions`` are this member's now; their positions come from the group's committed offsets."""
        ...


class Consumer(Protocol):
    """One member of a consumer group (auto-commit off)."""

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Subscribe to ``topics`` and join the group."""
        ...

    async def stop(self) -> None:
        """Leave the group (its partitions move on at once) and close."""
        ...

    async def fetch(self, *, timeout: float, max_records: int) -> Mapping[TopicPartition, Sequence[Record]]:
        """The next records of the assigned, unpaused partitions (waits up to ``timeout`` seconds for some)."""
        ...

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member holds now."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """The next fetch of ``partition`` starts at ``offset``."""
        ...

    def pause(self, partition: TopicPartition) -> None:
        """Fetch nothing more from ``partition`` until ``resume``."""
        ...

    def resume(self, partition: TopicPartition) -> None:
        """Fetch from ``partition`` again."""
        ...

    async def position(self, partition: TopicPartition) -> int | None:
        """The offset of the next record ``fetch`` returns for ``partition`` (None: not assigned any more)."""
        ...

    def end_offset(self, partition: TopicPartition) -> EndOffset | None:
        """The partition's end as the last fetch response said, and when (None: not fetched yet)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit exactly ``offsets`` (the next offset to read, per partition), or raise ``CommitFailed``."""
        ...


class Producer(Protocol):
    """A started producer: idempotent where the broker grants it, ``acks=all``."""

    async def send(self, outputs: Sequence[Output]) -> None:
        """Produce every output and return once the broker acknowledged them all, or raise ``SendFailed``."""
        ...

    async def stop(self) -> None:
        """Flush and close."""
        ...


class Transport(Protocol):
    """Makes the consumers and producers of one process, all with the same connection settings."""

    name: str

    def consumer(self, *, group_id: str, client_id: str) -> Consumer:
        """A consumer (not started) in ``group_id``."""
        ...

    async def producer(self, *, client_id: str, topics: Sequence[str] = ()) -> Producer:
        """A started producer, on a broker that has ``topics`` (else ``ConfigurationError``)."""
        ...
