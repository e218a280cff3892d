"""sent → acknowledged decisions (services.acknowledgment) over a real SQLite lifecycle store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from services import acknowledgment as ack
from services import deadletter as dl
from services import events, soap, topology
from services import lifecycle as lc
from services.errors import TransientError
from services.soap import RegisterResult, RegistryItem, RemdError

EXAMPLE = json.loads(Path("docs/schemas/document.signed.schema.json").read_text())["examples"][0]
M1, M2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def store(tmp_path):
    s = lc.SqliteLifecycleStore(tmp_path / "lc.sqlite3")
    data = dict(EXAMPLE, localUid="doc-1")
    signed = events.encode(events.new_event(events.SIGNED, data, source="t"))
    s.register("doc-1", organization=data["organizationOid"], kind=data["kind"], signed_event=signed)
    s.record_attempt("doc-1", M1, endpoint="http://ips")
    s.mark_accepted("doc-1", message_id=M1)
    yield s
    s.close()


def callback(relates=M1, *, emdr="16.62.1", errors=(), callback_id=None):
    status = "error" if errors else "success"
    item = RegistryItem(emdr_id=emdr, registration_date_time="2026-01-01T10:00:00+03:00") if not errors else None
    return soap.build_register_result(RegisterResult(relates_to_message=f"urn:uuid:{relates.upper()}", status=status,
                                                      local_uid="doc-1", registry_item=item, errors=tuple(errors)),
                                       to="http://mis", key=None, certificate=None, message_id=callback_id)


def run(raw, store):
    return ack.on_callback(raw, store=store, received_ms=int(time.time() * 1000))


def test_success_registers_and_emits_acknowledged_and_status(store):
    """A success callback marks the document registered and emits a valid acknowledged event and a status."""
    outs = run(callback(), store)
    assert [o.topic for o in outs] == [topology.ACKNOWLEDGED.name, topology.STATUS.name]
    event = events.decode(outs[0].value, events.ACKNOWLEDGED)
    assert event["data"]["registration"]["emdrId"] == "16.62.1"
    assert event["data"]["registration"]["messageId"] == M1
    assert store.get("doc-1").state == lc.REGISTERED


def test_duplicate_and_stale_callbacks_change_nothing(store):
    """A second success and a later error callback for the same attempt emit nothing and keep the state."""
    run(callback(callback_id="c-1"), store)
    assert run(callback(callback_id="c-2"), store) == []
    assert run(callback(errors=[RemdError("RUNTIME_ERROR", "x")], callback_id="c-3"), store) == []
    doc = store.get("doc-1")
    assert doc.state == lc.REGISTERED and doc.emdr_id == "16.62.1"


def test_redelivered_callback_reemits_after_crash(store):
    """The same callback (same MessageID) delivered again re-emits its outputs: nothing lost after a crash."""
    first = run(callback(callback_id="c-1"), store)
    again = run(callback(callback_id="c-1"), store)
    assert [o.topic for o in again] == [o.topic for o in first]


def test_early_callback_before_sent_event_correlates_by_recorded_attempt(tmp_path, store):
    """A callback for an attempt recorded but not yet accepted (sent event not out) still registers the document."""
    store.mark_failed("doc-1", reason="X")
    store.record_attempt("doc-1", M2, endpoint="http://ips")
    outs = run(callback(M2), store)
    assert outs and store.get("doc-1").state == lc.REGISTERED


def test_uncorrelated_callback_waits(store):
    """A callback matching no MessageID nor localUid is a transient wait, not a decision."""
    raw = soap.build_register_result(RegisterResult(relates_to_message=M2, status="success"), to="x", key=None,
                                     certificate=None)
    with pytest.raises(TransientError) as e:
        run(raw, store)
    assert e.value.reason == "CALLBACK_UNCORRELATED"


def test_permanent_error_dead_letters_with_message_ids(store):
    """A data error callback dead-letters the signed record with the MessageID, code and hint."""
    outs = run(callback(errors=[RemdError("NO_SNILS", "нет СНИЛС")]), store)
    dlt = outs[0]
    assert dlt.topic == topology.SENT_DLT.name
    assert M1 in dlt.headers[dl.MESSAGE_IDS].decode()
    assert dlt.headers[dl.REMD_CODE] == b"NO_SNILS" and dlt.headers[dl.HINT]
    assert store.get("doc-1").state == lc.FAILED


def test_transient_error_goes_back_to_sender_retry_and_allows_resend(store):
    """A transient error callback puts the signed record on retry tier 0 and the store allows a new attempt."""
    outs = run(callback(errors=[RemdError("INTERNAL_ERROR", "x")]), store)
    assert outs[0].topic == topology.SENDER_RETRIES[0].name
    assert outs[0].headers[dl.RETRY_ORIGINAL_TOPIC] == topology.SIGNED.name
    store.record_attempt("doc-1", M2, endpoint="http://ips")  # would raise LifecycleConflict otherwise


@pytest.mark.parametrize("found", [True, False])
def test_deadline_polls_then_registers_or_dead_letters(store, found):
    """No callback in time: found by polling → registered; not found → NO_ACKNOWLEDGMENT dead letter."""
    async def poll(doc):
        return RegistryItem(emdr_id="16.62.9", local_uid=doc.local_uid) if found else None
    outs = asyncio.run(ack.on_deadline("doc-1", store=store, poll=poll))
    if found:
        assert outs[0].topic == topology.ACKNOWLEDGED.name and store.get("doc-1").emdr_id == "16.62.9"
    else:
        assert outs[0].topic == topology.SENT_DLT.name
        assert outs[0].headers[dl.REASON] == b"NO_ACKNOWLEDGMENT" and M1 in outs[0].headers[dl.MESSAGE_IDS].decode()
