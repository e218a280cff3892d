"""Which offsets of a partition are done: the commit position is the first one that is not.

The runtime hands records out in offset order and finishes them in any order (records of different keys
run concurrently). A partition's committed offset is its lowest offset not yet done, so a crash re-delivers
what was in flight and never skips a record that was fetched but not finished (at-least-once).
"""

from __future__ import annotations

from collections import deque
from typing import Any


class PartitionTracker:
    """Offsets handed out on one partition and which are done; the commit position is the first not done."""

    def __init__(self) -> None:
        self.pending: deque[list[Any]] = deque()  # [offset, done, timestamp_ms]
        self.committed: int | None = None
        self.position: int | None = None  # one past the highest offset fully done
        self.waiting: tuple[int, int] | None = None  # (offset, timestamp_ms) of a retry record not yet due

    def add(self, offset: int, timestamp_ms: int = 0) -> list[Any]:
        entry = [offset, False, timestamp_ms]
        self.pending.append(entry)
        if self.waiting is not None and self.waiting[0] <= offset:
            self.waiting = None
        return entry

    def oldest_unprocessed(self) -> tuple[int, int] | None:
        """(offset, timestamp_ms) of the first record handed out and not done, or of the record waiting."""
        first = next((e for e in self.pending if not e[1]), None)
        return (first[0], first[2]) if first is not None else self.waiting

    def advance(self) -> int | None:
        while self.pending and self.pending[0][1]:
            self.position = self.pending.popleft()[0] + 1
        return self.position

    @property
    def in_flight(self) -> int:
        return sum(1 for e in self.pending if not e[1])
