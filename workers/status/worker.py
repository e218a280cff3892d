"""The status worker (sent → acknowledged): thin wiring of ``services.pipeline.acknowledgment``.

One process runs two runtime Stages (the runtime consumes one input topic per Stage):

* ``status`` on ``emd.remd.callbacks`` does the work: ``acknowledgment.handle_callback`` for each persisted
  callback, ``acknowledgment.on_deadline`` for each deadline record. Its ``DeadlineScanner`` ticker writes
  those records (``services.pipeline.polling``), and a ``PollScanner`` poll records for the documents of
  routes without callbacks (N3); all ask РЭМД through ``RegistryPoller`` — the organisation's ``Transport``. It serves ``/metrics`` and ``/healthz``, and its liveness covers the scanner.
* ``status-sent`` on ``emd.document.sent``: acknowledgment is driven by callbacks, so a ``sent`` event only
  confirms, in the log, that the lifecycle store knows the document (a callback that came first has
  already decided it).

The consumer groups keep their names (``emd-status-callbacks``, ``emd-status``), so committed offsets
carry over an upgrade.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from producer import events, topology
from services import lifecycle as lc
from services.config import Settings
from services.logs import get_logger
from services.messaging.records import Output, Record
from services.messaging.runtime import Stage, Ticker
from services.pipeline import acknowledgment
from services.pipeline.organizations import load_organizations
from services.pipeline.polling import (
    DeadlineScanner,
    PollScanner,
    RegistryPoller,
    callbackless,
    deadline_of,
    poll_of,
)
from services.remd.transports import Transports

log = get_logger(__name__)


class StatusWorker:
    """Both stages; ``run()`` is what ``emd worker status`` awaits.

    :param settings: the deployment settings (organisations file, lifecycle store, acknowledgment timeout).
    :param store: the lifecycle store (default: opened from the settings).
    :param poll: ``async (Document) -> RegistryItem | None`` (default: ``RegistryPoller`` over the transports).
    """

    def __init__(self, settings: Settings, *, store: Any = None, poll: Any = None) -> None:
        self.settings = settings
        self.config = load_organizations(
            settings.organizations_file, max_document_bytes=settings.max_document_bytes
        )
        self.store = store or lc.open_store(
            settings.data_dir, url=settings.lifecycle_store_url, wait=settings.startup_grace_seconds
        )
        acknowledgment.AWAITING.watch(self.store)  # what awaits acknowledgment, read at each scrape
        self.transports = Transports(
            options={
                "connect_timeout": settings.sender_connect_timeout,
                "read_timeout": settings.sender_read_timeout,
            }
        )
        self.poll = poll or RegistryPoller(config=self.config, transports=self.transports, store=self.store)
        scanner = DeadlineScanner(store=self.store, timeout=settings.ack_timeout_seconds)
        # routes that do not call back (N3) are polled every poll_interval_seconds instead
        poller = PollScanner(
            store=self.store,
            organizations=callbackless(self.config, self.transports),
            interval=settings.poll_interval_seconds,
        )
        tickers = [
            Ticker(name="deadline-scanner", interval=settings.ack_scan_interval_seconds, tick=scanner.tick)
        ]
        if poller.organizations:
            tickers.append(
                Ticker(name="poll-scanner", interval=settings.poll_interval_seconds, tick=poller.tick)
            )
        self.callbacks = Stage(
            name="status",
            input_topic=topology.CALLBACKS.name,
            handler=self.handle_callback,
            dead_letter_topic=topology.SENT_DLT.name,
            settings=settings,
            group_id="emd-status-callbacks",
            tickers=tickers,
        )
        self.sent = Stage(
            name="status-sent",
            input_topic=topology.SENT.name,
            handler=self.handle_sent,
            dead_letter_topic=topology.SENT_DLT.name,
            settings=settings,
            group_id="emd-status",
            serve_metrics=False,
        )

    async def handle_callback(self, record: Record) -> list[Output]:
        options: dict[str, Any] = {
            "store": self.store,
            "poll": self.poll,
            "environments": self.config.environment,
            "group": self.callbacks.group_id,
        }
        uid = deadline_of(record)
        if uid is not None:
            return await acknowledgment.on_deadline(uid, **options)
        uid = poll_of(record)
        if uid is not None:
            return await acknowledgment.on_deadline(uid, final=False, **options)
        # the poll also reconciles a NOT_UNIQUE_PROVIDED_ID (a resend of a document already registered)
        return await acknowledgment.handle_callback(
            record.value,
            received_ms=record.timestamp_ms,
            pending_limit=self.settings.ack_timeout_seconds,
            **options,
        )

    async def handle_sent(self, record: Record) -> list[Output]:
        event = events.decode(record.value, events.SENT)
        uid = event["data"]["localUid"]
        doc = await asyncio.to_thread(self.store.get, uid)
        log.info(
            "sent event",
            local_uid=uid,
            state=doc.state if doc else None,
            message_id=event["data"]["submission"]["messageId"],
        )
        return []

    def request_stop(self) -> None:
        self.sent.request_stop()
        self.callbacks.request_stop()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        tasks = [
            asyncio.create_task(self.callbacks.run(install_signal_handlers=False)),
            asyncio.create_task(self.sent.run(install_signal_handlers=False)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.request_stop()  # one stage ended (stop or failure): stop the other
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if (exc := t.exception()) is not None:
                    raise exc
        finally:
            await self.transports.aclose()
            self.store.close()


def build_stage(settings: Settings) -> StatusWorker:
    """``emd worker status``: both stages (exposes ``run()`` like a Stage)."""
    return StatusWorker(settings)
