"""One replica at a time: the status worker's scanners run only on the holder of a lease in the lifecycle store.

Every status replica consumes its share of the partitions, but the periodic scans (overdue documents, N3 polls,
unhandled dead letters) look at the whole store: run on every replica, they would poll РЭМД once per replica.
So they run on one, the holder of a named lease (a row in the lifecycle store, ``acquire_lease``):

* :meth:`Lease.renew` is a ticker of its own, every third of the lease's length: it takes the lease when it is
  free, renews it while held, and takes it over once a holder that died has let it lapse (after at most
  ``ttl``). The holder counts its lease as held until ``ttl`` minus a sixth of it after the renewal started, so
  clocks a few seconds apart never make two holders;
* :func:`while_held` wraps a scanner's tick: nothing happens unless this replica holds the lease;
* :meth:`Lease.release` on shutdown hands the lease over at once (a rolling update moves it in seconds).

Liveness: a dependency outage is no reason to restart a pod (PostgreSQL or РЭМД down would still be down after
the restart). A renewal or a scan that fails with a ``TransientError`` (``LIFECYCLE_STORE_UNAVAILABLE``, a
transport error) is logged and counts as a finished tick, so the runtime's ticker freshness, which the liveness
probe reads, stays fresh; what is stuck for another reason (an unexpected exception) still goes stale.
``emd_lease_held{lease}`` says which replica holds it (1) and which do not (0).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Gauge

from producer.errors import TransientError
from services import lifecycle as lc
from services.logs import get_logger
from services.messaging.records import Output
from services.metrics import REGISTRY

log = get_logger(__name__)

LEASE_HELD = Gauge(
    "emd_lease_held",
    "1 on the replica holding the lease (it runs what the lease guards), 0 on the others.",
    ["lease"],
    registry=REGISTRY,
)


def default_holder() -> str:
    """Who this process is, for the lease row and the logs: the pod's name (its host name), the pid, a nonce."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Lease:
    """The lease ``name`` in ``store``, held for ``ttl`` seconds per renewal.

    :param store: the lifecycle store (``acquire_lease``, ``release_lease``).
    :param name: what the lease guards (``status-scanners``).
    :param ttl: seconds a holder keeps it without renewing (``EMD_SCANNER_LEASE_SECONDS``).
    :param holder: this process's identity (default :func:`default_holder`).
    """

    def __init__(
        self,
        store: lc.LifecycleStore,
        name: str,
        *,
        ttl: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.name, self.ttl = store, name, ttl
        self.holder = holder or default_holder()
        self._clock = clock
        self._valid_until = 0.0
        LEASE_HELD.labels(name).set(0)

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    def held(self) -> bool:
        return self._clock() < self._valid_until

    async def renew(self) -> Sequence[Output]:
        """Take or renew the lease (a ticker's tick: no outputs)."""
        started, was_held = self._clock(), self.held()
        try:
            got = await asyncio.to_thread(self.store.acquire_lease, self.name, self.holder, ttl=self.ttl)
        except (
            TransientError
        ) as exc:  # the database is down: what we hold lapses on its own, nobody else's starts
            log.warning(
                "lease not renewed: the lifecycle store is unavailable", lease=self.name, reason=exc.reason
            )
            got = False
        if got:
            self._valid_until = started + self.ttl - self.ttl / 6
            if not was_held:
                log.info(
                    "lease acquired: this replica runs the scanners", lease=self.name, holder=self.holder
                )
        else:
            self._valid_until = 0.0
            if was_held:
                log.warning(
                    "lease lost: another replica runs the scanners", lease=self.name, holder=self.holder
                )
        LEASE_HELD.labels(self.name).set(1 if self.held() else 0)
        return []

    async def renew_now(self) -> None:
        """Try for the lease at start (an ``App``'s on_start hook), not one renewal interval later."""
        await self.renew()

    async def release(self) -> None:
        """Hand the lease over (on shutdown); a failure leaves it to lapse."""
        held, self._valid_until = self.held(), 0.0
        LEASE_HELD.labels(self.name).set(0)
        if not held:
            return
        try:
            await asyncio.to_thread(self.store.release_lease, self.name, self.holder)
            log.info("lease released", lease=self.name, holder=self.holder)
        except TransientError as exc:
            log.warning("lease not released: it lapses on its own", lease=self.name, reason=exc.reason)


def while_held(
    lease: Lease, tick: Callable[[], Awaitable[Sequence[Output]]], *, job: str
) -> Callable[[], Awaitable[Sequence[Output]]]:
    """``tick`` run only while ``lease`` is held; a ``TransientError`` in it (a dependency down) is logged and the
    tick counts as done (see the module docstring: liveness)."""

    async def run() -> Sequence[Output]:
        if not lease.held():
            return []
        try:
            return await tick()
        except TransientError as exc:
            log.warning("periodic job waits for a dependency", job=job, reason=exc.reason)
            return []

    return run
