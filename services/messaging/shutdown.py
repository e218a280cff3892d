"""Stopping a process the way Kubernetes stops a pod: SIGTERM, a grace period, then SIGKILL.

In a container the process is PID 1, and the kernel gives PID 1 no default action for SIGTERM: the process's
``App`` (``services.messaging.app``) installs the handler and asks each service to stop. For an HTTP service:

* :class:`HttpDrain` drains an aiohttp service: its middleware counts the requests in flight, and
  :meth:`HttpDrain.drain` closes the listening sockets at once (new connections are refused, so the Service's
  other pods take them), waits up to ``grace`` seconds for every request in flight to end (one whose body is
  still arriving included: aiohttp's own shutdown stops reading request bodies, so it is used only for what is
  left after the grace), then closes the connections.

The pod adds a ``preStop`` pause before SIGTERM, while its endpoint leaves the Service and the gateway stops
routing to it, and a ``terminationGracePeriodSeconds`` above pause + grace (``deploy/k8s/base/callbacks.yaml``).
The Kafka workers drain their records the same way in ``services.messaging.runtime`` (``request_stop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.logs import get_logger

log = get_logger(__name__)


class HttpDrain:
    """The graceful stop of an aiohttp service (see the module docstring).

    :param grace: seconds requests in flight may take to finish after the stop (``EMD_SHUTDOWN_GRACE_SECONDS``).
    """

    def __init__(self, *, grace: float) -> None:
        self.grace = grace
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    def runner(self, app: web.Application) -> web.AppRunner:
        """The app's runner; what is still running when the grace is over gets one more second, then is cut."""
        return web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def drain(self, runner: web.AppRunner, *, name: str) -> None:
        """Refuse new connections, let the requests in flight finish (up to the grace), then close everything."""
        for site in list(runner.sites):
            await site.stop()
        log.info(
            "draining: no new connections, requests in flight finish", process=name, in_flight=self.in_flight
        )
        try:
            await asyncio.wait_for(self._idle.wait(), self.grace)
        except TimeoutError:
            log.warning(
                "grace period over: cutting the requests still in flight",
                process=name,
                in_flight=self.in_flight,
            )
        await runner.cleanup()
        log.info("drained", process=name)
