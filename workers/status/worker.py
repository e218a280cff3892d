"""The status worker: sent → acknowledged, with ``services.pipeline.acknowledger.Acknowledger`` as its handlers.

One process, two stages:

* ``acknowledger`` on ``emd.remd.callbacks``: callbacks, and the deadline and poll records its tickers write: the
  ``DeadlineScanner`` for documents with no callback in time, the ``PollScanner`` for the documents of routes
  without callbacks (N3) (``services.pipeline.polling``); all ask РЭМД through ``RegistryPoller``;
* ``acknowledger-sent`` on ``emd.document.sent``: a ``sent`` event only confirms, in the log, what the lifecycle store
  knows.

The scanners look at the whole store, so they run on one replica at a time: the holder of the ``status-scanners``
lease (``services.pipeline.lease``), which also counts the unhandled dead letters (``services.desk.unhandled``).
"""

from __future__ import annotations

from producer import topology
from services import lifecycle
from services.config import Settings
from services.desk.unhandled import DeadLetterWatch, watch_tick
from services.messaging.app import App
from services.messaging.clients import kafka_python_config
from services.messaging.runtime import Stage, Ticker, consumer_group
from services.pipeline import acknowledgment
from services.pipeline.acknowledger import Acknowledger
from services.pipeline.lease import Lease, while_held
from services.pipeline.organizations import load_organizations, watch_organizations
from services.pipeline.polling import DeadlineScanner, PollScanner, RegistryPoller, callbackless
from services.remd.transports import Transports

NAME = "status"
ACKNOWLEDGER_STAGE, SENT_STAGE = "acknowledger", "acknowledger-sent"


def build(settings: Settings) -> App:
    """``emd worker status``: organisations and lifecycle store opened (and checked) before consuming."""
    # the ИС keys alone (never a doctor's or an organisation's); reloaded when their Secret changes
    config = load_organizations(
        settings.organizations_file, max_document_bytes=settings.max_document_bytes, role="status"
    )
    watching = watch_organizations(config, interval=settings.organizations_reload_seconds)
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
        poll=RegistryPoller(config=config, transports=transports, store=store),
        environments=config.environment,
        group=consumer_group(ACKNOWLEDGER_STAGE),
        pending_limit=settings.ack_timeout_seconds,
    )
    deadlines = DeadlineScanner(store=store, timeout=settings.ack_timeout_seconds)
    # routes that do not call back (N3) are polled every poll_interval_seconds instead
    polls = PollScanner(
        store=store,
        organizations=callbackless(config, transports),
        interval=settings.poll_interval_seconds,
    )
    # one replica runs the scanners: the lease holder; it also counts the dead letters nobody has handled
    lease = Lease(store, "status-scanners", ttl=settings.scanner_lease_seconds)
    dead_letters = DeadLetterWatch(kafka_python_config(settings), store=store)
    tickers = [
        Ticker(name="scanner-lease", interval=lease.renew_every, tick=lease.renew),
        Ticker(
            name="deadline-scanner",
            interval=settings.ack_scan_interval_seconds,
            tick=while_held(lease, deadlines.tick, job="deadline-scanner"),
        ),
        Ticker(
            name="dead-letter-watch",
            interval=settings.dead_letter_watch_seconds,
            tick=watch_tick(dead_letters, lease),
        ),
    ]
    # a clinic added to (or moved off) N3 is polled without a restart (when the poll ticker runs at all)
    config.on_reload(lambda c: setattr(polls, "organizations", callbackless(c, transports)))
    if polls.organizations:
        tickers.append(
            Ticker(
                name="poll-scanner",
                interval=settings.poll_interval_seconds,
                tick=while_held(lease, polls.tick, job="poll-scanner"),
            )
        )
    acknowledge = Stage(
        name=ACKNOWLEDGER_STAGE,
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
    # on_stop runs last first: the lease is handed over, then the watch, the transports and the store close
    return App(
        NAME,
        settings,
        [acknowledge, sent],
        on_start=[lease.renew_now],
        on_stop=[store.close, transports.aclose, dead_letters.close, watching.set, lease.release],
    )
