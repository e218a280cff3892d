"""Which offsets of a partition are done: the commit position is the first one that is not.

The runtime hands records out in offset order and finishes them in any order (records of different keys
run concurrently). A partition's committed offset is its lowest offset not yet done, so a crash re-delivers
what was in flight and never skips a record that was fetched but not finished (at-least-once).

``InFlight`` is one record handed out; ``PartitionOffsets`` the bookkeeping of one partition; ``OffsetBook``
those of every partition a stage holds, and what to commit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from services.messaging.transport import TopicPartition


@dataclass(slots=True)
class InFlight:
    """One record handed to the handler (or, as ``PartitionOffsets.waiting``, a retry record not yet due)."""

    offset: int
    timestamp_ms: int
    done: bool = False


class PartitionOffsets:
    """Offsets handed out on one partition and which are done; the commit position is the first not done."""

    def __init__(self) -> None:
        self.pending: deque[InFlight] = deque()  # handed out, in offset order, done or not
        self.committed: int | None = None  # the last offset committed for this partition
        self.position: int | None = None  # one past the highest offset done with everything before it
        self.waiting: InFlight | None = None  # a retry record not yet due, its partition paused

    def add(self, offset: int, timestamp_ms: int = 0) -> InFlight:
        """Hand out ``offset``; its entry is marked ``done`` once its outputs are acknowledged."""
        entry = InFlight(offset, timestamp_ms)
        self.pending.append(entry)
        if self.waiting is not None and self.waiting.offset <= offset:
            self.waiting = None
        return entry

    def wait_for(self, offset: int, timestamp_ms: int) -> None:
        """The record at ``offset`` is not due yet: it counts as unprocessed until handed out."""
        self.waiting = InFlight(offset, timestamp_ms)

    def oldest_unprocessed(self) -> InFlight | None:
        """The first record handed out and not done, or else the record waiting for its due time."""
        return next((e for e in self.pending if not e.done), None) or self.waiting

    def advance(self) -> int | None:
        """Drop the done prefix; the position after it (what a commit would write), None if nothing is done."""
        while self.pending and self.pending[0].done:
            self.position = self.pending.popleft().offset + 1
        return self.position

    @property
    def in_flight(self) -> int:
        return sum(1 for e in self.pending if not e.done)

    @property
    def settled(self) -> bool:
        """Nothing handed out is unfinished or uncommitted, and no retry record is waiting."""
        return self.waiting is None and not self.pending and self.committed == self.position


class OffsetBook:
    """The ``PartitionOffsets`` of every partition a stage holds."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Fresh bookkeeping for newly assigned partitions (their positions come from the committed offsets)."""
        for tp in partitions:
            self._partitions[tp] = PartitionOffsets()

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions left this member."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def holds(self, tp: TopicPartition) -> bool:
        return tp in self._partitions

    def __getitem__(self, tp: TopicPartition) -> PartitionOffsets:
        return self._partitions.setdefault(tp, PartitionOffsets())

    def get(self, tp: TopicPartition) -> PartitionOffsets | None:
        return self._partitions.get(tp)

    def __iter__(self) -> Iterator[TopicPartition]:
        return iter(list(self._partitions))

    def to_commit(self, only: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Per partition (of ``only``, default all), the position to commit when it moved since the last commit."""
        wanted = set(self._partitions) if only is None else set(only)
        out = {}
        for tp, book in self._partitions.items():
            if tp not in wanted:
                continue
            position = book.advance()
            if position is not None and position != book.committed:
                out[tp] = position
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """The broker took ``offsets``."""
        for tp, position in offsets.items():
            book = self._partitions.get(tp)
            if book is not None:
                book.committed = position

    @property
    def in_flight(self) -> int:
        return sum(b.in_flight for b in self._partitions.values())
