"""The status worker: sent → acknowledged, with ``services.pipeline.acknowledger.Acknowledger`` as its handlers.

One process, two stages:

* ``status`` on ``emd.remd.callbacks``: callbacks, and the deadline and poll records its tickers write: the
  ``DeadlineScanner`` for documents with no callback in time, the ``PollScanner`` for the documents of routes
  without callbacks (N3) (``services.pipeline.polling``); all ask РЭМД through ``RegistryPoller``;
* ``status-sent`` on ``emd.document.sent``: a ``sent`` event only confirms, in the log, what the lifecycle store
  knows.
"""

from __future__ import annotations

from producer import topology
from services import lifecycle
from services.config import Settings
from services.messaging.app import App
from services.messaging.runtime import Stage, Ticker, consumer_group
from services.pipeline import acknowledgment
from services.pipeline.acknowledger import Acknowledger
from services.pipeline.organizations import load_organizations
from services.pipeline.polling import DeadlineScanner, PollScanner, RegistryPoller, callbackless
from services.remd.transports import Transports

NAME = "status"
CALLBACKS_STAGE, SENT_STAGE = "status", "status-sent"


def build(settings: Settings) -> App:
    """``emd worker status``: organisations and lifecycle store opened (and checked) before consuming."""
    config = load_organizations(settings.organizations_file, max_document_bytes=settings.max_document_bytes)
    store = lifecycle.open_store(
        settings.data_dir, url=settings.lifecycle_store_url, wait=settings.startup_grace_seconds
    )
    acknowledgment.AWAITING.watch(store)  # what awaits acknowledgment, read at each scrape
    transports = Transports(
        options={
            "connect_timeout": settings.sender_connect_timeout,
            "read_timeout": settings.sender_read_timeout,
        }
    )
    acknowledger = Acknowledger(
        store=store,
        poll=RegistryPoller(config=config, transports=transports),
        environments=config.environment,
        group=consumer_group(CALLBACKS_STAGE),
        pending_limit=settings.ack_timeout_seconds,
    )
    deadlines = DeadlineScanner(store=store, timeout=settings.ack_timeout_seconds)
    # routes that do not call back (N3) are polled every poll_interval_seconds instead
    polls = PollScanner(
        store=store,
        organizations=callbackless(config, transports),
        interval=settings.poll_interval_seconds,
    )
    tickers = [
        Ticker(name="deadline-scanner", interval=settings.ack_scan_interval_seconds, tick=deadlines.tick)
    ]
    if polls.organizations:
        tickers.append(Ticker(name="poll-scanner", interval=settings.poll_interval_seconds, tick=polls.tick))
    callbacks = Stage(
        name=CALLBACKS_STAGE,
        input_topic=topology.CALLBACKS.name,
        handler=acknowledger.handle,
        dead_letter_topic=topology.SENT_DLT.name,
        settings=settings,
        tickers=tickers,
    )
    sent = Stage(
        name=SENT_STAGE,
        input_topic=topology.SENT.name,
        handler=acknowledger.confirm_sent,
        dead_letter_topic=topology.SENT_DLT.name,
        settings=settings,
    )
    return App(NAME, settings, [callbacks, sent], on_stop=[transports.aclose, store.close])
