"""Per-endpoint request rate limit (token bucket) and bounded concurrency.

РЭМД answers RATE_LIMIT ("retry in a minute or later") when a system sends too much; it is cheaper to
stay under the limit than to be told. ``EndpointLimiter.slot()`` waits for a token *and* a concurrency
slot; ``pause(seconds)`` empties the bucket after a RATE_LIMIT answer so the whole endpoint backs off,
not just the record that got it. Waiting happens per endpoint, so one clinic's limit never delays another's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up (default: a second's worth, at least 1)."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate = rate_per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, self.rate)
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._blocked_until = 0.0

    def _refill(self) -> None:
        now = self._clock()
        if now < self._blocked_until:
            self._updated = now
            return
        start = max(self._updated, self._blocked_until)
        self._tokens = min(self.capacity, self._tokens + (now - start) * self.rate)
        self._updated = now

    def take(self) -> float:
        """Take a token if there is one and return 0; else return the seconds until one is due."""
        self._refill()
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now + (0 if self._tokens >= 1 else (1 - self._tokens) / self.rate)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def pause(self, seconds: float) -> None:
        """No token for ``seconds``, and start empty afterwards."""
        self._refill()
        self._tokens = 0.0
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


class EndpointLimiter:
    """Token bucket + semaphore for one endpoint (or one organisation on a shared endpoint).

    :param rate_per_minute: requests a minute (the organisation's ``remd.rate_limit_per_minute``).
    :param max_concurrency: requests in flight at once (default 8).
    :param burst: tokens saved up at most (default one second's worth).
    """

    def __init__(
        self,
        rate_per_minute: float,
        *,
        max_concurrency: int = 8,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = TokenBucket(rate_per_minute, burst=burst, clock=clock)
        self.max_concurrency = max_concurrency
        self._sem = asyncio.Semaphore(max_concurrency)
        self._lock = asyncio.Lock()  # FIFO-ish fairness between waiters for tokens

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._sem:
            async with self._lock:
                while (wait := self.bucket.take()) > 0:
                    await asyncio.sleep(wait)
            yield

    def pause(self, seconds: float) -> None:
        self.bucket.pause(seconds)
