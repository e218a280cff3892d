"""The signer: every МИС's ``emd.document.created.<misId>`` → ``emd.document.signed`` (+ the МИС's "signed").

The handler is ``services.pipeline.document_signer.DocumentSigner``, signing in a pool of processes, one per
usable CPU (``services.pipeline.signing_pool``; in a thread when there is one CPU). The document store is
marked first: the callback service, which serves its references to РЭМД, refuses to start without the mark.
It consumes the created topic of each МИС the organisations file grants anything, and refuses to start without
one (docs/security.md).
"""

from __future__ import annotations

import asyncio
import functools

from producer import topology
from producer.errors import ConfigurationError
from services.config import Settings
from services.documents.store import mark_signer_store, store_from_settings
from services.messaging.app import App
from services.messaging.records import Output
from services.messaging.runtime import Stage, Ticker
from services.pipeline import dead_letter_status
from services.pipeline.document_signer import SOURCE, DocumentSigner
from services.pipeline.organizations import load_organizations, log_operator_decisions, watch_organizations
from services.pipeline.signing import update_expiry_metrics
from services.pipeline.signing_pool import SigningPool, pool_size

NAME = "signer"
EXPIRY_REFRESH_SECONDS = 60.0


def build(settings: Settings) -> App:
    """``emd worker signer``: the configuration is loaded (and checked) before anything is consumed."""
    store = store_from_settings(settings)
    mark_signer_store(store)
    # the signer alone holds the doctors' and organisations' keys; reloaded when their Secret changes
    config = load_organizations(
        settings.organizations_file, max_document_bytes=settings.max_document_bytes, role="signer"
    )
    if not config.mis:
        raise ConfigurationError(
            f"{config.path}: no МИС is granted anything (mis): the signer would accept no document "
            "(docs/security.md)"
        )
    log_operator_decisions(config)
    watching = watch_organizations(config, interval=settings.organizations_reload_seconds)
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

    async def refresh_expiry_metrics() -> list[Output]:  # the expiry gauges stay fresh with no documents too
        update_expiry_metrics(config)
        return []

    async def close_pool() -> None:
        if pool is not None:
            await asyncio.to_thread(pool.close)

    signer = DocumentSigner(config=config, store=store, sign=pool.sign if pool is not None else None)
    stage = Stage(
        name=NAME,
        input_topic=[topology.created_topic(m).name for m in sorted(config.mis)],
        handler=signer.handle,
        dead_letter_topic=topology.CREATED_DLT.name,
        settings=settings,
        describe_failure=dead_letter_status.describe_document,
        on_dead_letter=functools.partial(dead_letter_status.on_dead_letter, source=SOURCE),
        tickers=[Ticker(name="expiry-metrics", interval=EXPIRY_REFRESH_SECONDS, tick=refresh_expiry_metrics)],
    )
    return App(NAME, settings, [stage], on_stop=[close_pool, watching.set])
