"""The circuit breaker per endpoint and the per-endpoint rate limiter, on fake clocks."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from services.remd.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.remd.ratelimit import EndpointLimiter, TokenBucket


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_consecutive_failures():
    """The circuit opens after N consecutive transport failures, and a success in between resets the count."""
    c = Clock()
    b = CircuitBreaker("e1", failure_threshold=3, cool_down=10, clock=c)
    for event in (b.record_failure, b.record_failure, b.record_success, b.record_failure, b.record_failure):
        event()
    assert b.state == CLOSED and b.try_acquire()
    b.record_failure()
    assert b.state == OPEN and not b.try_acquire() and b.remaining() == 10


def test_the_circuit_says_once_when_it_opens_and_when_it_closes():
    """Operators see one "circuit opened" (endpoint, failures, cool-down) however many failures follow, even a
    failed probe, and one "circuit closed" when a probe succeeds."""
    c = Clock()
    b = CircuitBreaker("e9", failure_threshold=2, cool_down=10, clock=c)
    with capture_logs() as logs:
        for _ in range(4):
            b.record_failure()
        c.t += 10
        assert b.try_acquire()
        b.record_failure()  # the probe fails: open again, said already
        c.t += 20
        assert b.try_acquire()
        b.record_success()
        b.record_success()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("circuit opened", "warning"),
        ("circuit closed", "info"),
    ]
    assert {k: logs[0][k] for k in ("endpoint", "failures", "cool_down")} == {
        "endpoint": "e9",
        "failures": 2,
        "cool_down": 10,
    }


def test_half_open_allows_one_probe_then_closes_on_success():
    """After the cool-down exactly one probe may go; its success closes the circuit."""
    c = Clock()
    b = CircuitBreaker("e2", failure_threshold=1, cool_down=10, clock=c)
    b.record_failure()
    c.t += 10
    assert b.state == HALF_OPEN
    assert b.try_acquire() is True
    assert b.try_acquire() is False  # the probe is in flight
    b.record_success()
    assert b.state == CLOSED and b.try_acquire()


def test_failed_probe_reopens_with_longer_cool_down():
    """A failed probe opens the circuit again for twice the cool-down (bounded by the maximum)."""
    c = Clock()
    b = CircuitBreaker("e3", failure_threshold=1, cool_down=10, max_cool_down=15, clock=c)
    b.record_failure()
    c.t += 10
    assert b.try_acquire()
    b.record_failure()
    assert b.state == OPEN and b.remaining() == 15


def test_late_failures_of_requests_sent_before_opening_do_not_extend():
    """Failures arriving while open (requests sent before it opened) do not push the probe back."""
    c = Clock()
    b = CircuitBreaker("e4", failure_threshold=1, cool_down=10, clock=c)
    b.record_failure()
    c.t += 4
    b.record_failure()
    assert b.remaining() == 6


def test_release_frees_the_probe_slot():
    """A probe cancelled without a verdict lets another probe go."""
    c = Clock()
    b = CircuitBreaker("e5", failure_threshold=1, cool_down=1, clock=c)
    b.record_failure()
    c.t += 1
    assert b.try_acquire() and not b.try_acquire()
    b.release()
    assert b.try_acquire()


def test_wait_returns_once_circuit_probes():
    """wait() holds the caller while open and returns when the probe may go (real clock, short cool-down)."""

    async def go():
        b = CircuitBreaker("e6", failure_threshold=1, cool_down=0.2)
        b.record_failure()
        assert b.state == OPEN
        await asyncio.wait_for(b.wait(), timeout=5)
        return b.state

    assert asyncio.run(go()) == HALF_OPEN


def test_token_bucket_rate_and_pause():
    """The bucket gives its burst, then one token per 1/rate, and nothing during a pause."""
    c = Clock()
    tb = TokenBucket(60, burst=2, clock=c)  # one a second
    assert tb.take() == 0 and tb.take() == 0
    assert tb.take() == 1.0
    c.t += 1
    assert tb.take() == 0
    tb.pause(60)
    c.t += 30
    assert tb.take() > 30
    c.t += 31
    assert tb.take() == 0


def test_limiter_bounds_concurrency():
    """No more than max_concurrency requests are inside slot() at once."""

    async def go():
        lim = EndpointLimiter(60000, max_concurrency=2, burst=100)
        inside = peak = 0

        async def one():
            nonlocal inside, peak
            async with lim.slot():
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(one() for _ in range(10)))
        return peak

    assert asyncio.run(go()) == 2
