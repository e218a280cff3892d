"""services.pipeline.dead_letter_status: what a stage says when it dead-letters a document."""

from __future__ import annotations

from producer import events, topology
from services.messaging import deadletter as dl
from services.messaging.records import Record
from services.pipeline import dead_letter_status

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def record(key, trace=TRACE, value=b"{}"):
    return Record(
        topic="t",
        partition=0,
        offset=0,
        key=key,
        value=value,
        timestamp_ms=0,
        headers={events.HEADER_TRACE_ID: trace.encode()},
    )


def test_a_remd_refusal_tells_the_mis_rejected_with_the_code_and_every_message_id():
    """A dead letter with a РЭМД code is status ``rejected``, on the status topic, keyed by localUid, trace kept."""
    failure = dl.Failure(
        stage="sender",
        reason="REMD_REJECTED",
        message="x",
        exception_fqcn="E",
        remd_code="PERSON_NOT_FOUND",
        remd_message="Сотрудник не найден",
        message_ids=("m-1", "m-2"),
    )
    [out] = dead_letter_status.on_dead_letter(record("u1"), failure, source="emd-sender")
    ev = events.decode(out.value, events.STATUS)
    assert out.topic == topology.STATUS.name and out.key == "u1" and ev["traceId"] == TRACE
    assert ev["data"] == {
        "localUid": "u1",
        "status": "rejected",
        "emdrId": None,
        "reason": "REMD_REJECTED",
        "remdCode": "PERSON_NOT_FOUND",
        "message": "Сотрудник не найден",
        "messageIds": ["m-1", "m-2"],
    }


def test_our_own_failure_tells_the_mis_failed_and_a_bad_trace_gets_a_fresh_one():
    """A dead letter without a РЭМД code is status ``failed``; a malformed trace header is replaced, not fatal."""
    failure = dl.Failure(
        stage="signer", reason="ORGANIZATION_UNKNOWN", message="not configured", exception_fqcn="E"
    )
    [out] = dead_letter_status.on_dead_letter(record("u2", "not-a-trace"), failure, source="emd-signer")
    ev = events.decode(out.value, events.STATUS)
    assert ev["data"]["status"] == "failed" and ev["data"]["message"] == "not configured"
    assert ev["traceId"] != "not-a-trace"


def test_a_record_naming_no_document_tells_nobody():
    """A foreign record with neither key nor localUid has no МИС to tell."""
    failure = dl.Failure(stage="signer", reason="EVENT_INVALID", message="x", exception_fqcn="E")
    assert dead_letter_status.on_dead_letter(record(None), failure, source="emd-signer") == []


def test_the_document_fields_of_a_dead_letter_are_read_leniently_from_the_event():
    """localUid, kind and organisation come from the event's data; an event that is not JSON gives none."""
    value = b'{"data": {"localUid": "u3", "kind": "119", "organizationOid": "1.2.3", "patient": {}}}'
    assert dead_letter_status.describe_document(record("u3", value=value), ValueError()) == {
        "local_uid": "u3",
        "kind": "119",
        "organization": "1.2.3",
    }
    assert dead_letter_status.describe_document(record("u3", value=b"\xff not json"), ValueError()) == {}
