"""services.pipeline.dead_letter_status: what a stage says when it dead-letters a document."""

from __future__ import annotations

from producer import events
from services.messaging import deadletter as dl
from services.messaging.records import Record
from services.pipeline import dead_letter_status

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


ORG = "1.2.643.5.1.13.13.12.2.77.7831"
SIGNED = b'{"data": {"localUid": "u1", "misId": "clinic-a", "organizationOid": "' + ORG.encode() + b'"}}'


def record(key, trace=TRACE, value=SIGNED, topic="emd.document.signed"):
    return Record(
        topic=topic,
        partition=0,
        offset=0,
        key=key,
        value=value,
        timestamp_ms=0,
        headers={events.HEADER_TRACE_ID: trace.encode()},
    )


def test_a_remd_refusal_tells_the_mis_rejected_with_the_code_and_every_message_id():
    """A dead letter with a РЭМД code is status ``rejected``, on its МИС's status topic (the signed event's misId),
    keyed by localUid, with the document's organisation, trace kept."""
    failure = dl.Failure(
        stage="sender",
        reason="REMD_REJECTED",
        message="x",
        exception_fqcn="E",
        remd_code="PERSON_NOT_FOUND",
        remd_message="Сотрудник не найден",
        message_ids=("m-1", "m-2"),
        organization=ORG,
    )
    [out] = dead_letter_status.on_dead_letter(record("u1"), failure, source="emd-sender")
    ev = events.decode(out.value, events.STATUS)
    assert out.topic == "emd.document.status.clinic-a" and out.key == "u1" and ev["traceId"] == TRACE
    assert ev["data"] == {
        "localUid": "u1",
        "organizationOid": ORG,
        "misId": "clinic-a",
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


def test_the_signer_tells_the_mis_whose_topic_the_record_came_from_not_the_one_it_names():
    """A created record's МИС is its topic's: a misId written into the event by the МИС changes nothing."""
    value = b'{"data": {"localUid": "u4", "misId": "clinic-b", "organizationOid": "1.2.3"}}'
    failure = dl.Failure(stage="signer", reason="EVENT_INVALID", message="x", exception_fqcn="E")
    [out] = dead_letter_status.on_dead_letter(
        record("u4", value=value, topic="emd.document.created.clinic-a"), failure, source="emd-signer"
    )
    assert out.topic == "emd.document.status.clinic-a"
    assert events.decode(out.value, events.STATUS)["data"]["organizationOid"] is None


def test_a_record_of_no_mis_tells_nobody():
    """A signed record without a misId (a foreign record on a pipeline topic) has no status topic to go to."""
    failure = dl.Failure(stage="sender", reason="EVENT_INVALID", message="x", exception_fqcn="E")
    assert (
        dead_letter_status.on_dead_letter(record("u5", value=b'{"data": {}}'), failure, source="emd-sender")
        == []
    )


def test_a_record_naming_no_document_tells_nobody():
    """A foreign record with neither key nor localUid has no МИС to tell."""
    failure = dl.Failure(stage="signer", reason="EVENT_INVALID", message="x", exception_fqcn="E")
    assert dead_letter_status.on_dead_letter(record(None, value=b"{}"), failure, source="emd-signer") == []


def test_the_document_fields_of_a_dead_letter_are_read_leniently_from_the_event():
    """localUid, kind and organisation come from the event's data; an event that is not JSON gives none."""
    value = b'{"data": {"localUid": "u3", "kind": "119", "organizationOid": "1.2.3", "patient": {}}}'
    assert dead_letter_status.describe_document(record("u3", value=value), ValueError()) == {
        "local_uid": "u3",
        "kind": "119",
        "organization": "1.2.3",
    }
    assert dead_letter_status.describe_document(record("u3", value=b"\xff not json"), ValueError()) == {}
