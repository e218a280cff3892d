"""One process's runtime: its services (stages, an HTTP endpoint), signals, shutdown, health and metrics.

A worker is ``build(settings) -> App`` (``workers/<name>/worker.py``) and ``emd worker NAME`` awaits
``app.run()``, which:

1. installs SIGTERM/SIGINT handlers that ask every service to stop (a stage drains its in-flight records for
   ``EMD_SHUTDOWN_GRACE_SECONDS`` and commits);
2. serves ``/metrics``, ``/healthz`` (every service live) and ``/readyz`` (every service ready) on
   ``EMD_METRICS_PORT`` (``services.metrics.MetricsServer``), and writes the heartbeat file that
   ``emd worker NAME --check`` reads (``services.messaging.heartbeat``), named after the app;
3. awaits the ``on_start`` hooks, runs every service until one ends (stopped, or failed: then the others are
   stopped too and the failure is raised), then awaits the ``on_stop`` hooks, last first, whatever happened:
   what ``build`` opened (stores, HTTP clients, process pools) is closed there.

``await app.run(burst=True)`` (arq's burst mode) returns once every stage has drained its input: nothing in
flight, every output acknowledged, every offset committed, every partition read to the end a fetch response
reported after that moment (a stage's output may be another stage's input). Tests run whole workers that way.

A service is anything with ``name``, ``run(burst=...)``, ``request_stop()``, ``health()`` and ``ready()``
(``Service``); ``services.messaging.runtime.Stage`` is one, the callback service's HTTP endpoint another.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from services import metrics
from services.config import Settings
from services.logs import get_logger
from services.messaging.health import Check, combine
from services.messaging.heartbeat import heartbeat_path, write_heartbeat
from services.messaging.runtime import Stage

log = get_logger(__name__)

#: what ``on_start``/``on_stop`` take: a function or a coroutine function of no arguments (``store.close``)
Hook = Callable[[], Awaitable[None] | None]

#: seconds between two heartbeat writes
HEARTBEAT_INTERVAL = 2.0
#: burst: how much later than the moment every stage was drained the broker must confirm it (a fetch response
#: built before a stage's last output was appended, and received after, is older than this)
BURST_CONFIRM_SECONDS = 0.05


class Service(Protocol):
    """What an ``App`` runs."""

    name: str

    async def run(self, *, burst: bool = False) -> None:
        """Work until ``request_stop()`` (raise what keeps it from working)."""
        ...

    def request_stop(self) -> None: ...

    def health(self) -> Check: ...

    def ready(self) -> Check: ...


@runtime_checkable
class Drains(Protocol):
    """A service with input to drain (a ``Stage``): what a burst run waits for."""

    drained: bool
    drained_as_of: float | None


class App:
    """One process: its services, and what they share.

    :param name: the process (``signer``, ``status``…): heartbeat file, logs.
    :param settings: the deployment settings (metrics host and port, data directory for the heartbeat).
    :param services: what runs (stages, endpoints), concurrently.
    :param on_start: hooks awaited before the services start.
    :param on_stop: hooks awaited after every service has ended, last first (each failure logged, none skipped).
    :param serve_metrics: start the /metrics server (off for an app embedded in a test).
    :param heartbeat_interval: seconds between two writes of the heartbeat file.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        services: Sequence[Service],
        *,
        on_start: Sequence[Hook] = (),
        on_stop: Sequence[Hook] = (),
        serve_metrics: bool = True,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        if not services:
            raise ValueError(f"app {name!r} has nothing to run")
        self.name = name
        self.settings = settings
        self.services = tuple(services)
        self.on_start = list(on_start)
        self.on_stop = list(on_stop)
        self.serve_metrics = serve_metrics
        self.heartbeat_interval = heartbeat_interval
        self.metrics_server: metrics.MetricsServer | None = None
        self.health_file = heartbeat_path(settings, name)

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The services that are stages."""
        return tuple(s for s in self.services if isinstance(s, Stage))

    def request_stop(self) -> None:
        """Stop every service (what SIGTERM does)."""
        for service in self.services:
            service.request_stop()

    def health(self) -> Check:
        return combine([(s.name, s.health()) for s in self.services])

    def ready(self) -> Check:
        return combine([(s.name, s.ready()) for s in self.services])

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every service to be ready; whether they are."""
        deadline = time.monotonic() + timeout
        while not self.ready()[0]:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def run(self, *, burst: bool = False, signals: bool = True) -> None:
        """Run every service until stopped (a signal, ``request_stop()``, or with ``burst`` drained)."""
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT) if signals else ()
        for sig in handled:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            if self.serve_metrics:
                self.metrics_server = metrics.MetricsServer(
                    host=self.settings.metrics_host,
                    port=self.settings.metrics_port,
                    health=self.health,
                    ready=self.ready,
                ).start()
                log.info("metrics", app=self.name, url=self.metrics_server.url)
            for hook in self.on_start:
                await _call(hook)
            await self._run_services(burst=burst)
        finally:
            await self.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.metrics_server is not None:
                self.metrics_server.stop()

    async def _run_services(self, *, burst: bool) -> None:
        tasks = [asyncio.create_task(s.run(burst=burst), name=f"{self.name}:{s.name}") for s in self.services]
        watchers = [asyncio.create_task(self._heartbeat())]
        if burst:
            watchers.append(asyncio.create_task(self._stop_when_drained()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.request_stop()  # one service ended (stopped or failed): the others stop too
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, *tasks, return_exceptions=True)
        for task in tasks:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    async def close(self) -> None:
        """Await the ``on_stop`` hooks, last first (``run`` does, whatever happened; an app built and never run
        is closed with this)."""
        for hook in reversed(self.on_stop):
            try:
                await _call(hook)
            except Exception:  # one failing close must not keep the others from running
                log.exception(
                    "stop hook failed", app=self.name, hook=getattr(hook, "__qualname__", repr(hook))
                )

    async def _heartbeat(self) -> None:
        while True:
            self._write_heartbeat()
            await asyncio.sleep(self.heartbeat_interval)

    def _write_heartbeat(self) -> None:
        ok, text = self.health()
        in_flight = sum(s.in_flight for s in self.stages)
        write_heartbeat(
            self.health_file, stage=self.name, at=time.time(), in_flight=in_flight, ok=ok, health=text
        )

    async def _stop_when_drained(self) -> None:
        """Burst: stop once every stage is drained, and the broker confirmed it after that moment: a stage's
        last output may be another's input, which that one's earlier look at its partitions could not see."""
        drains = [s for s in self.services if isinstance(s, Drains)]
        while True:
            await asyncio.sleep(0.005)
            if not all(s.drained for s in drains):
                continue
            since = time.time() + BURST_CONFIRM_SECONDS
            while all(s.drained for s in drains) and not all(
                (s.drained_as_of or 0.0) > since for s in drains
            ):
                await asyncio.sleep(0.005)
            if all(s.drained for s in drains):
                log.info("burst: every input drained", app=self.name)
                self.request_stop()
                return


async def _call(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result
