"""The signer stage: ``emd.document.created`` → ``emd.document.signed`` (+ ``emd.document.status`` "signed").

Wiring only; the checks and signatures are ``services.pipeline.signing.sign_document``. CPU-bound work
(validation, signing) and the claim-check read run in a worker thread so the consumer keeps polling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from services import events
from services.config import Settings
from services.documents.store import document_bytes, store_from_settings
from services.errors import PermanentError
from services.messaging import deadletter, topology
from services.messaging.runtime import Output, Record, Stage
from services.pipeline.organizations import OrganizationsConfig, load_organizations
from services.pipeline.signing import sign_document, update_expiry_metrics

NAME = "signer"
SOURCE = "emd-signer"
#: reasons that the deployment, not the МИС, must fix (dead-letter category "configuration")
CONFIGURATION_REASONS = frozenset({
    "ORGANIZATION_UNKNOWN", "ORGANIZATION_KEY_MISSING", "DOCTOR_KEY_UNKNOWN", "KEY_PASSWORD_INVALID",
    "KEY_PASSWORD_MISSING", "MCHD_REVOKED", "MCHD_EXPIRED", "MCHD_NOT_YET_VALID", "MCHD_WRONG_ORGANIZATION",
    "MCHD_WRONG_EMPLOYEE", "MCHD_POWERS_MISSING", "MCHD_SIGNATURE_INVALID", "MCHD_REVOCATION_UNAVAILABLE",
})
EXPIRY_REFRESH_SECONDS = 60.0


def build_handler(config: OrganizationsConfig, store: Any):
    """The stage's handler over a loaded configuration and a document store (tests call it directly)."""
    async def handle(record: Record) -> list[Output]:
        event = events.decode(record.value, expected_type=events.CREATED)
        data = event["data"]
        size = data["document"]["size"]
        if size > config.max_document_bytes:  # refuse before fetching it from the claim-check store
            raise PermanentError(f"document is {size} bytes, over the limit of {config.max_document_bytes} bytes",
                                 reason="DOCUMENT_TOO_LARGE", size=size, limit=config.max_document_bytes)
        document = await asyncio.to_thread(document_bytes, data["document"], store)
        signatures = await asyncio.to_thread(sign_document, data, document, config, now=dt.datetime.now(dt.UTC))
        signed = events.new_event(events.SIGNED, {**data, "signatures": signatures}, source=SOURCE,
                                  trace_id=event["traceId"])
        status = events.new_event(events.STATUS, {
            "localUid": data["localUid"], "status": "signed", "emdrId": None, "reason": None, "remdCode": None,
            "message": None, "messageIds": []}, source=SOURCE, trace_id=event["traceId"])
        key = data["localUid"]
        return [Output(topology.SIGNED.name, events.encode(signed), key, dict(events.headers_for(signed))),
                Output(topology.STATUS.name, events.encode(status), key, dict(events.headers_for(status)))]

    return handle


def describe_failure(record: Record, exc: BaseException) -> Mapping[str, Any]:
    """localUid / kind / organisation for the dead-letter headers, read leniently (the event may be invalid)."""
    out: dict[str, Any] = {}
    try:
        data = json.loads(record.value.decode("utf-8")).get("data") or {}
        out = {"local_uid": data.get("localUid"), "kind": data.get("kind"), "organization": data.get("organizationOid")}
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    reason = getattr(exc, "reason", None)
    if reason in CONFIGURATION_REASONS:
        out["category"] = "configuration"
        out["hint"] = "fix the organisation's keys/МЧД in the organisations file, then replay the dead letter"
    elif isinstance(exc, PermanentError):
        out["category"] = "data"
    return {k: v for k, v in out.items() if v is not None}


def on_dead_letter(record: Record, failure: deadletter.Failure) -> list[Output]:
    """The МИС hears of the failure: status ``failed`` with the reason, next to the dead letter."""
    return deadletter.status_outputs(record, failure, source=SOURCE)


def build_stage(settings: Settings, *, serve_metrics: bool = True) -> Stage:
    """``emd worker signer``: the configuration is loaded (and checked) here, before anything is consumed."""
    config = load_organizations(settings.organizations_file, max_document_bytes=settings.max_document_bytes)
    store = store_from_settings(settings)
    update_expiry_metrics(config)
    refresh: list[asyncio.Task[None]] = []

    async def on_start() -> None:
        refresh.append(asyncio.create_task(refresh_expiry_metrics(config)))

    async def on_stop() -> None:
        for task in refresh:
            task.cancel()

    return Stage(name=NAME, input_topic=topology.CREATED.name, handler=build_handler(config, store),
                 dead_letter_topic=topology.CREATED_DLT.name, settings=settings, on_start=on_start,
                 on_stop=on_stop, describe_failure=describe_failure, on_dead_letter=on_dead_letter,
                 serve_metrics=serve_metrics)


async def refresh_expiry_metrics(config: OrganizationsConfig, *, every: float = EXPIRY_REFRESH_SECONDS) -> None:
    """The certificate and МЧД expiry gauges, set again every ``every`` seconds, whether documents come or not."""
    while True:
        update_expiry_metrics(config)
        await asyncio.sleep(every)
