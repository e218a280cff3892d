"""What a stage says when it dead-letters a document: the headers' document fields, and the МИС's status.

The signer's and the sender's runtime ``Stage(on_dead_letter=…)``: ``rejected`` when РЭМД refused the
document (the failure carries a РЭМД code), ``failed`` otherwise, with the reason and every MessageID so
far. Produced together with the dead letter, before the commit, to the status topic of the МИС the document
came from: the signer reads the МИС from the topic its created record arrived on (the only proof of the writer,
docs/security.md), the later stages from the event's ``misId``, which the signer set. The status worker builds
its own statuses as it decides (``services.pipeline.acknowledgment``); the payload is ``events.status_data``
for all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from producer import events, topology
from producer.errors import PermanentError
from services.messaging.deadletter import Failure
from services.messaging.records import Output, Record


def _data(record: Record) -> dict[str, Any]:
    """The record's event ``data``, read leniently (it may be the invalid event being dead-lettered)."""
    try:
        data = json.loads(record.value.decode("utf-8")).get("data")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def mis_of(record: Record) -> str | None:
    """The МИС a record's document came from: the created topic it arrived on (the signer), else the event's
    ``misId`` (the stages after it); None when neither names one."""
    if record.topic.startswith(topology.CREATED_PREFIX):
        return topology.mis_of_created_topic(record.topic)
    mis_id = _data(record).get("misId")
    return mis_id if topology.is_mis_id(mis_id) else None


def describe_document(record: Record, exc: BaseException) -> Mapping[str, Any]:
    """``Stage(describe_failure=…)``: the localUid, kind and organisation for the dead-letter headers, read
    leniently from the record's event (it may be the invalid event being dead-lettered)."""
    data = _data(record)
    out = {
        "local_uid": data.get("localUid"),
        "kind": data.get("kind"),
        "organization": data.get("organizationOid"),
    }
    return {k: v for k, v in out.items() if isinstance(v, str) and v}


def dead_letter_status(
    failure: Failure,
    *,
    local_uid: str,
    organization: str | None,
    mis_id: str,
    source: str,
    trace_id: str | None = None,
) -> events.Envelope:
    """The status event for a dead-lettered document (a malformed trace id gets a fresh one; an organisation that
    is not an OID is left out, as the document could not be read)."""
    data = events.status_data(
        local_uid,
        events.STATUS_REJECTED if failure.remd_code else events.STATUS_FAILED,
        organization=organization,
        mis_id=mis_id,
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
    """``Stage(on_dead_letter=…)``: the МИС's status, keyed by localUid, on its own topic; nothing when the record
    names no document or no МИС (a foreign record on the topic has no МИС to tell)."""
    uid = failure.local_uid or record.key
    mis_id = mis_of(record)
    if not uid or not mis_id:
        return []
    try:
        event = dead_letter_status(
            failure,
            local_uid=uid,
            organization=failure.organization,
            mis_id=mis_id,
            source=source,
            trace_id=record.header(events.HEADER_TRACE_ID),
        )
    except PermanentError:  # an organisation or localUid the status cannot carry: a malformed event
        event = dead_letter_status(
            failure, local_uid=uid, organization=None, mis_id=mis_id, source=source, trace_id=None
        )
    return [Output.of_event(event)]
