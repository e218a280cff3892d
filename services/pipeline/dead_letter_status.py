"""What a stage says when it dead-letters a document: the headers' document fields, and the МИС's status.

The signer's and the sender's runtime ``Stage(on_dead_letter=…)``: ``rejected`` when РЭМД refused the
document (the failure carries a РЭМД code), ``failed`` otherwise, with the reason and every MessageID so
far. Produced together with the dead letter, before the commit. The status worker builds its own
statuses as it decides (``services.pipeline.acknowledgment``); the payload is ``events.status_data`` for all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from producer import events
from services.messaging.deadletter import Failure
from services.messaging.records import Output, Record


def describe_document(record: Record, exc: BaseException) -> Mapping[str, Any]:
    """``Stage(describe_failure=…)``: the localUid, kind and organisation for the dead-letter headers, read
    leniently from the record's event (it may be the invalid event being dead-lettered)."""
    try:
        data = json.loads(record.value.decode("utf-8")).get("data") or {}
        out = {
            "local_uid": data.get("localUid"),
            "kind": data.get("kind"),
            "organization": data.get("organizationOid"),
        }
    except (ValueError, AttributeError, UnicodeDecodeError):
        return {}
    return {k: v for k, v in out.items() if isinstance(v, str) and v}


def dead_letter_status(
    failure: Failure, *, local_uid: str, source: str, trace_id: str | None = None
) -> events.Envelope:
    """The status event for a dead-lettered document (a malformed trace id gets a fresh one)."""
    data = events.status_data(
        local_uid,
        events.STATUS_REJECTED if failure.remd_code else events.STATUS_FAILED,
        reason=failure.reason,
        remd_code=failure.remd_code,
        message=failure.remd_message or failure.message,
        message_ids=failure.message_ids,
    )
    try:
        return events.new_event(events.STATUS, data, source=source, trace_id=trace_id)
    except ValueError:  # a foreign record's trace header: a fresh trace rather than no status
        return events.new_event(events.STATUS, data, source=source)


def on_dead_letter(record: Record, failure: Failure, *, source: str) -> list[Output]:
    """``Stage(on_dead_letter=…)``: the МИС's status, keyed by localUid; nothing when the record names no
    document (a foreign record on the topic has no МИС to tell)."""
    uid = failure.local_uid or record.key
    if not uid:
        return []
    event = dead_letter_status(
        failure, local_uid=uid, source=source, trace_id=record.header(events.HEADER_TRACE_ID)
    )
    return [Output.of_event(event)]
