"""A circuit breaker per РЭМД endpoint: stop hammering an endpoint that is down, probe it after a cool-down.

States::

    closed ──N consecutive transport failures──▶ open ──cool-down elapsed──▶ half_open
      ▲                                            ▲                          │ one probe request
      └──────────────── probe succeeded ───────────┼──────────────────────────┤
                                                   └──── probe failed ────────┘ (cool-down doubles, up to max)

Only *transport* failures count (network errors, timeouts, 5xx, malformed answers, server-side faults):
a РЭМД rejection of a document proves the endpoint works and counts as a success. While the circuit is
open the sender holds its records (``wait()``) instead of burning retry attempts or dead-lettering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import Gauge

from services.logs import get_logger
from services.metrics import REGISTRY

log = get_logger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

BREAKER_STATE = Gauge(
    "emd_sender_circuit_state",
    "Circuit breaker per РЭМД endpoint: 0 closed, 1 half-open, 2 open.",
    ["endpoint"],
    registry=REGISTRY,
)


class CircuitBreaker:
    """One endpoint's breaker.

    :param name: the endpoint (metric label; endpoints are few, one per environment/bus).
    :param failure_threshold: consecutive transport failures that open the circuit (default 5).
    :param cool_down: seconds open before the first probe (default 30).
    :param max_cool_down: the cool-down doubles after each failed probe, up to this (default 300).
    :param clock: monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cool_down: float = 30.0,
        max_cool_down: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_cool_down = cool_down
        self.max_cool_down = max_cool_down
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._cool_down = cool_down
        self._opened_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self._cool_down:
            return HALF_OPEN
        return self._state

    def remaining(self) -> float:
        """Seconds until a probe may go (0 when a request may go now)."""
        if self._state != OPEN:
            return 0.0
        return max(0.0, self._cool_down - (self._clock() - self._opened_at))

    def try_acquire(self) -> bool:
        """May a request go now? In half-open, only one (the probe) until its outcome is recorded."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            self._set(HALF_OPEN)
            return True
        return False

    async def wait(self, *, poll: float = 0.5) -> None:
        """Return when a request may go (holding the caller while the circuit is open)."""
        while not self.try_acquire():
            self._changed.clear()
            timeout = self.remaining() or poll
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(timeout, 5.0))
            except TimeoutError:
                pass

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._state != CLOSED:
            log.info("circuit closed", endpoint=self.name)
        self._cool_down = self.base_cool_down
        self._set(CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing:  # the probe failed: open again, for longer
            self._probing = False
            self._cool_down = min(self.max_cool_down, self._cool_down * 2)
            self._open()
        elif self._state == CLOSED and self._failures >= self.failure_threshold:
            self._open()
        # failures of requests that left before the circuit opened change nothing more

    def release(self) -> None:
        """A request that went out and came back without a verdict on the endpoint (cancelled)."""
        if self._probing:
            self._probing = False
            self._changed.set()

    def _open(self) -> None:
        self._opened_at = self._clock()
        if self._state == CLOSED:
            log.warning(
                "circuit opened", endpoint=self.name, failures=self._failures, cool_down=self._cool_down
            )
        self._set(OPEN)

    def _set(self, state: str) -> None:
        self._state = state
        BREAKER_STATE.labels(self.name).set(_STATE_VALUE[state])
        self._changed.set()
