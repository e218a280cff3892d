"""The signer stage: ``emd.document.created`` → ``emd.document.signed`` (+ ``emd.document.status`` "signed").

Wiring only; the checks and signatures are ``services.pipeline.signing.sign_document``, run in a pool of
processes, one per usable CPU (``services.pipeline.signing_pool``; in a thread when there is one CPU), so the
consumer keeps polling and every core signs. The claim-check read runs in a thread.

The signed event carries the document by reference: an inline one is put into the claim-check store first
(``services.documents.store.by_reference``), so the sender, the status worker, the lifecycle store and every
dead letter after this stage handle a few KB instead of ~130 KB of JSON each. The signer marks its store at
start; the callback service, which serves these references to РЭМД, refuses to start without that mark.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from producer import events, topology
from producer.errors import PermanentError
from services.config import Settings
from services.documents.store import by_reference, document_bytes, mark_signer_store, store_from_settings
from services.messaging import deadletter
from services.messaging.records import Output, Record
from services.messaging.runtime import Stage, Ticker
from services.pipeline import status
from services.pipeline.organizations import OrganizationsConfig, load_organizations, watch_organizations
from services.pipeline.signing import sign_document, update_expiry_metrics
from services.pipeline.signing_pool import SigningPool, pool_size
from services.pipeline.status import describe_document

Sign = Callable[[dict[str, Any], bytes, dt.datetime], Awaitable[dict[str, Any]]]

NAME = "signer"
SOURCE = "emd-signer"
EXPIRY_REFRESH_SECONDS = 60.0


def build_handler(config: OrganizationsConfig, store: Any, *, sign: Sign | None = None):
    """The stage's handler over a loaded configuration and a document store (tests call it directly).

    ``sign``: ``async (data, document, now) -> signatures`` (a ``SigningPool``'s); default ``sign_document`` in a
    thread of this process.
    """

    async def in_thread(data: dict[str, Any], document: bytes, now: dt.datetime) -> dict[str, Any]:
        return await asyncio.to_thread(sign_document, data, document, config, now=now)

    sign = sign or in_thread

    async def handle(record: Record) -> list[Output]:
        event = events.decode(record.value, expected_type=events.CREATED)
        data = event["data"]
        size = data["document"]["size"]
        if size > config.max_document_bytes:  # refuse before fetching it from the claim-check store
            raise PermanentError(
                f"document is {size} bytes, over the limit of {config.max_document_bytes} bytes",
                reason="DOCUMENT_TOO_LARGE",
                size=size,
                limit=config.max_document_bytes,
            )
        document = await asyncio.to_thread(document_bytes, data["document"], store)
        signatures = await sign(data, document, dt.datetime.now(dt.UTC))
        # stored (and durable) before the event that references it is produced
        by_ref = await asyncio.to_thread(by_reference, data["document"], document, store)
        # publishedAt: when the МИС published it, so the status worker measures created → acknowledged
        signed = events.new_event(
            events.SIGNED,
            {**data, "document": by_ref, "signatures": signatures, "publishedAt": event["time"]},
            source=SOURCE,
            trace_id=event["traceId"],
        )
        status = events.new_event(
            events.STATUS,
            events.status_data(data["localUid"], events.STATUS_SIGNED),
            source=SOURCE,
            trace_id=event["traceId"],
        )
        return [Output.of_event(signed), Output.of_event(status)]

    return handle


def on_dead_letter(record: Record, failure: deadletter.Failure) -> list[Output]:
    """The МИС hears of the failure: status ``failed`` with the reason, next to the dead letter."""
    return status.on_dead_letter(record, failure, source=SOURCE)


def build_stage(settings: Settings, *, serve_metrics: bool = True) -> Stage:
    """``emd worker signer``: the configuration is loaded (and checked) here, before anything is consumed; the
    document store is marked first (the callback service starting alongside waits for the mark)."""
    store = store_from_settings(settings)
    mark_signer_store(store)
    # the signer alone holds the doctors' and organisations' keys; reloaded when their Secret changes
    config = load_organizations(
        settings.organizations_file, max_document_bytes=settings.max_document_bytes, role="signer"
    )
    watch_organizations(config, interval=settings.organizations_reload_seconds)
    update_expiry_metrics(config)
    processes = pool_size(settings.signer_processes)
    pool = (
        SigningPool(
            organizations_file=settings.organizations_file,
            max_document_bytes=settings.max_document_bytes,
            processes=processes,
            recycle_after=settings.signer_recycle_documents,
            log_format=settings.log_format,
            log_level=settings.log_level,
        )
        if processes > 1
        else None
    )

    async def refresh_expiry_metrics() -> list[Output]:
        # the certificate and МЧД expiry gauges stay fresh whether documents come or not
        update_expiry_metrics(config)
        return []

    async def on_stop() -> None:
        if pool is not None:
            await asyncio.to_thread(pool.close)

    handler = build_handler(config, store, sign=pool.sign if pool is not None else None)
    return Stage(
        name=NAME,
        input_topic=topology.CREATED.name,
        handler=handler,
        on_stop=on_stop,
        dead_letter_topic=topology.CREATED_DLT.name,
        settings=settings,
        describe_failure=describe_document,
        on_dead_letter=on_dead_letter,
        serve_metrics=serve_metrics,
        tickers=[Ticker(name="expiry-metrics", interval=EXPIRY_REFRESH_SECONDS, tick=refresh_expiry_metrics)],
    )
