"""The keyed scheduler: bounded concurrency, and the records of one key one at a time, in the order given.

A stage hands records out in offset order. Records with different keys run concurrently, up to
``concurrency`` at once (waiting for a slot is what slows fetching down: backpressure); a record whose key
is already running waits for the one before it, so one document's events are handled in order. A record
without a key waits for nothing.

``reserve()`` takes a slot (and may wait for one), ``start(key, work)`` runs ``work`` in it; the slot is freed
when the work ends, however it ends. ``drain`` waits for what runs, for at most a grace period, then cancels
the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.logs import get_logger

log = get_logger(__name__)

Work = Callable[[], Awaitable[None]]


class KeyedScheduler:
    """Runs work items as tasks: at most ``concurrency`` at once, one at a time per key, in submission order."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._tails: dict[str, asyncio.Task[None]] = {}  # key → its latest task
        self._tasks: set[asyncio.Task[None]] = set()

    async def reserve(self) -> None:
        """Wait for a free slot and take it; hand it to ``start`` or give it back with ``release``."""
        await self._slots.acquire()

    def release(self) -> None:
        """Give back a slot taken by ``reserve`` and not used."""
        self._slots.release()

    def start(self, key: str | None, work: Work) -> asyncio.Task[None]:
        """Run ``work`` in the reserved slot, after every earlier work of the same ``key`` has ended."""
        previous = self._tails.get(key) if key is not None else None
        task = asyncio.create_task(self._run(previous, work))
        self._tasks.add(task)
        if key is not None:
            self._tails[key] = task

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._slots.release()
            if key is not None and self._tails.get(key) is t:
                del self._tails[key]
            if not t.cancelled() and t.exception() is not None:
                log.error("scheduled work failed", error=repr(t.exception()))

        task.add_done_callback(finished)
        return task

    @staticmethod
    async def _run(previous: asyncio.Task[None] | None, work: Work) -> None:
        if previous is not None:  # same key: strictly after the one before it, however that one ended
            await asyncio.wait([previous])
        await work()

    @property
    def in_flight(self) -> int:
        """Work items started and not ended (running, or waiting for their key)."""
        return len(self._tasks)

    async def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every work item running now; how many are still running."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return len(pending)

    async def drain(self, grace: float) -> int:
        """Let running work end for ``grace`` seconds, then cancel the rest; how many were cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)
