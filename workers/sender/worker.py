"""The sender: ``emd.document.signed`` → ``emd.document.sent`` (+ ``emd.document.status`` "sent").

The handler is ``services.pipeline.submission.Submitter``. Transient failures go through the sender's retry
tiers (``producer.topology.SENDER_RETRIES``) with exponential backoff and jitter (``EMD_SENDER_RETRY_*``);
permanent ones to ``emd.document.signed.dlt`` with the РЭМД code and every MessageID.
"""

from __future__ import annotations

import functools

from producer import topology
from producer.errors import ConfigurationError
from services.config import Settings
from services.documents.store import store_from_settings
from services.lifecycle import open_store
from services.lifecycle.patients import open_patient_store
from services.lifecycle.support_tables import open_support_tables
from services.messaging.app import App
from services.messaging.runtime import RetryPolicy, Stage
from services.pipeline import dead_letter_status, routing
from services.pipeline.exchanges import ExchangeArchive
from services.pipeline.organizations import load_organizations, watch_organizations
from services.pipeline.submission import SOURCE, Submitter

NAME = "sender"


def build(settings: Settings) -> App:
    """``emd worker sender``: configuration and lifecycle store opened (and checked) before consuming."""
    # the ИС keys alone (never a doctor's or an organisation's); reloaded when their Secret changes
    config = load_organizations(
        settings.organizations_file, max_document_bytes=settings.max_document_bytes, role="sender"
    )
    watching = watch_organizations(config, interval=settings.organizations_reload_seconds)
    if settings.unpromoted_clinics not in routing.POLICIES:
        raise ConfigurationError(
            f"EMD_UNPROMOTED_CLINICS={settings.unpromoted_clinics!r}: expected one of {', '.join(routing.POLICIES)}"
        )
    store = open_store(
        settings.data_dir, url=settings.lifecycle_store_url, wait=settings.startup_grace_seconds
    )
    tables = open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)
    # N3's AddPatient once per patient and clinic (docs/transports.md)
    patients = open_patient_store(settings.data_dir, url=settings.lifecycle_store_url)
    documents = store_from_settings(settings)
    submitter = Submitter(
        config=config,
        store=store,
        breaker_failures=settings.sender_breaker_failures,
        breaker_cool_down=settings.sender_breaker_cool_down,
        endpoint_concurrency=settings.sender_endpoint_concurrency,
        hold_per_endpoint=settings.sender_hold_per_endpoint,
        rate_limit_defer=settings.sender_rate_limit_defer_seconds,
        park_max_seconds=settings.sender_retry_base_seconds,
        # a clinic's documents reach production only once it is promoted (`emd clinic promote`)
        clinic_state=routing.ClinicStates(tables.clinic),
        unpromoted=settings.unpromoted_clinics,
        exchanges=ExchangeArchive(documents=documents, tables=tables),
        documents=documents,
        patients=patients,
        transport_options={
            "connect_timeout": settings.sender_connect_timeout,
            "read_timeout": settings.sender_read_timeout,
        },
    )
    stage = Stage(
        name=NAME,
        input_topic=topology.SIGNED.name,
        handler=submitter.handle,
        dead_letter_topic=topology.SIGNED_DLT.name,
        settings=settings,
        retry=RetryPolicy(
            topics=tuple(t.name for t in topology.SENDER_RETRIES),
            base_delay=settings.sender_retry_base_seconds,
            max_delay=settings.sender_retry_max_seconds,
            max_attempts=settings.sender_max_attempts,
        ),
        describe_failure=dead_letter_status.describe_document,
        on_dead_letter=functools.partial(dead_letter_status.on_dead_letter, source=SOURCE),
    )
    return App(
        NAME,
        settings,
        [stage],
        on_stop=[submitter.aclose, store.close, tables.close, patients.close, watching.set],
    )
