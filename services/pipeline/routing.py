"""Where a clinic's documents go: production only once the clinic is promoted (``emd clinic promote``).

The rule (docs/support.md), for a clinic's onboarding state (``services.lifecycle.support_tables``)::

    production                      → remd.endpoint, as configured (its remd.environment)
    onboarding / testing / suspended:
        remd.environment is "test"  → remd.endpoint (it is the test stand already)
        unpromoted = "test-stand"   → remd.test_endpoint, environment "test"; held when there is none
        unpromoted = "hold"         → held

Held = ``PermanentError(CLINIC_NOT_PROMOTED)``: the document waits on the sender's dead-letter topic and is
replayed after the promotion (``emd dlq replay --reason CLINIC_NOT_PROMOTED``); nothing left the pipeline.

``ClinicStates`` reads the states for the sender with a short cache (``ttl`` seconds, default 5): a
promotion takes effect within that; a suspension too (the one direction where the cache could let a
document through late, bounded by the same few seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from producer.errors import PermanentError
from services.lifecycle.support_tables import PRODUCTION

TEST_STAND, HOLD = "test-stand", "hold"
POLICIES = (TEST_STAND, HOLD)


@dataclass(frozen=True)
class Route:
    endpoint: str
    environment: str


def route(remd: Any, state: str, *, unpromoted: str = TEST_STAND) -> Route:
    """The endpoint and environment for a document of a clinic in ``state`` (``remd``: its РЭМД settings)."""
    if state == PRODUCTION or remd.environment == "test":
        return Route(remd.endpoint, remd.environment)
    if unpromoted == TEST_STAND and remd.test_endpoint:
        return Route(remd.test_endpoint, "test")
    raise PermanentError(
        f"the clinic is {state}, not promoted to production: its documents are held",
        reason="CLINIC_NOT_PROMOTED",
    )


class ClinicStates:
    """``states(oid) -> state`` over a reader (``SupportTables.clinic``), each answer cached for ``ttl`` seconds."""

    def __init__(
        self, read: Callable[[str], Any], *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read, self._ttl, self._clock = read, ttl, clock
        self._cache: dict[str, tuple[float, str]] = {}

    def __call__(self, oid: str) -> str:
        now = self._clock()
        hit = self._cache.get(oid)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        state = self._read(oid).state
        self._cache[oid] = (now, state)
        return state
