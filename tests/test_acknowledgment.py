"""sent → acknowledged decisions (services.pipeline.acknowledgment) over a real SQLite lifecycle store."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producer import events, topology
from producer.errors import PermanentError, TransientError
from services import lifecycle as lc
from services.messaging import deadletter as dl
from services.outcome import Outcome
from services.pipeline import acknowledgment as ack
from services.remd import soap
from services.remd.soap import RegisterResult, RegistryItem, RemdError

EXAMPLE = json.loads(Path("docs/schemas/document.signed.schema.json").read_text())["examples"][0]
ORG = EXAMPLE["organizationOid"]
#: the status topic of the example's МИС
STATUS = topology.status_topic(EXAMPLE["misId"]).name


def TEST(oid, endpoint=None):  # noqa: N802 - every organisation of these tests sends to the test stand
    return "test"


M1, M2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def _store_with_doc(path) -> lc.SqliteLifecycleStore:
    """A store holding doc-1 as the sender registers it, with its signed event."""
    s = lc.SqliteLifecycleStore(path)
    data = dict(EXAMPLE, localUid="doc-1")
    signed = events.encode(events.new_event(events.SIGNED, data, source="t"))
    s.register("doc-1", organization=data["organizationOid"], kind=data["kind"], signed_event=signed)
    return s


@pytest.fixture
def store(tmp_path):
    s = _store_with_doc(tmp_path / "lc.sqlite3")
    s.record_attempt("doc-1", M1, organization=ORG, endpoint="http://ips")
    s.mark_accepted("doc-1", organization=ORG, message_id=M1)
    yield s
    s.close()


def callback(relates=M1, *, emdr="16.62.1", errors=(), callback_id=None):
    status = "error" if errors else "success"
    item = (
        RegistryItem(emdr_id=emdr, registration_date_time="2026-01-01T10:00:00+03:00") if not errors else None
    )
    return soap.build_register_result(
        RegisterResult(
            relates_to_message=f"urn:uuid:{relates.upper()}",
            status=status,
            local_uid="doc-1",
            registry_item=item,
            errors=tuple(errors),
        ),
        to="http://mis",
        key=None,
        certificate=None,
        message_id=callback_id,
    )


def run(raw, store):
    return ack.on_callback(raw, store=store, received_ms=int(time.time() * 1000), environments=TEST)


def test_success_registers_and_emits_acknowledged_and_status(store):
    """A success callback marks the document registered and emits a valid acknowledged event and a status."""
    outs = run(callback(), store)
    assert [o.topic for o in outs] == [topology.ACKNOWLEDGED.name, STATUS]
    event = events.decode(outs[0].value, events.ACKNOWLEDGED)
    assert event["data"]["registration"]["emdrId"] == "16.62.1"
    assert event["data"]["registration"]["messageId"] == M1
    assert store.get("doc-1", organization=ORG).state == lc.REGISTERED


def test_an_organisation_configured_for_production_is_acknowledged_with_production(store):
    """The acknowledged event's submission names the organisation's configured environment, and the
    registration time in UTC to the microsecond, the submission's times in the events' one format (milliseconds)."""

    def environments(oid, endpoint):
        return {EXAMPLE["organizationOid"]: "production"}[oid]

    outs = ack.on_callback(
        callback(), store=store, received_ms=int(time.time() * 1000), environments=environments
    )
    data = events.decode(outs[0].value, events.ACKNOWLEDGED)["data"]
    assert data["submission"]["environment"] == "production"
    assert data["registration"]["registrationTime"] == "2026-01-01T07:00:00.000000Z"
    assert data["submission"]["sentAt"].endswith("Z") and len(data["submission"]["sentAt"]) == 24


def test_duplicate_and_stale_callbacks_change_nothing(store):
    """A second success and a later error callback for the same attempt emit nothing and keep the state."""
    run(callback(callback_id="c-1"), store)
    assert run(callback(callback_id="c-2"), store) == []
    assert run(callback(errors=[RemdError("RUNTIME_ERROR", "x")], callback_id="c-3"), store) == []
    doc = store.get("doc-1", organization=ORG)
    assert doc.state == lc.REGISTERED and doc.emdr_id == "16.62.1"


def _content(outputs) -> list[tuple]:
    """What the outputs say: topic, key and each event's type and data (not its fresh eventId and time)."""
    out = []
    for o in outputs:
        event = events.decode(o.value)
        out.append((o.topic, o.key, event["type"], event["data"]))
    return out


def test_redelivered_callback_reemits_after_crash(store):
    """The same callback (same MessageID) delivered again re-emits the same outputs: nothing lost after a crash."""
    first = run(callback(callback_id="c-1"), store)
    again = run(callback(callback_id="c-1"), store)
    assert [o.topic for o in first] == [topology.ACKNOWLEDGED.name, STATUS]
    assert _content(again) == _content(first)


def test_early_callback_before_sent_event_correlates_by_recorded_attempt(tmp_path, store):
    """A callback for an attempt recorded but not yet accepted (sent event not out) still registers the document."""
    store.mark_failed("doc-1", organization=ORG, reason="X")
    store.record_attempt("doc-1", M2, organization=ORG, endpoint="http://ips")
    outs = run(callback(M2), store)
    assert outs and store.get("doc-1", organization=ORG).state == lc.REGISTERED


def test_uncorrelated_callback_waits(store):
    """A callback matching none of our MessageIDs is a transient wait, not a decision."""
    raw = soap.build_register_result(
        RegisterResult(relates_to_message=M2, status="success"), to="x", key=None, certificate=None
    )
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
    assert store.get("doc-1", organization=ORG).state == lc.FAILED


def test_transient_error_goes_back_to_sender_retry_and_allows_resend(store):
    """A transient error callback puts the signed record on retry tier 0 (as a resend from the signed topic,
    due after the retry delay, with every MessageID so far) and the store allows a new attempt."""
    before = time.time()
    outs = run(callback(errors=[RemdError("INTERNAL_ERROR", "x")]), store)
    assert outs[0].topic == topology.SENDER_RETRIES[0].name
    headers = {k: v.decode() for k, v in outs[0].headers.items()}
    assert headers[dl.RETRY_ORIGINAL_TOPIC] == topology.SIGNED.name
    assert headers[dl.RETRY_REASON] == "REMD_INTERNAL_ERROR" and headers[dl.MESSAGE_IDS] == M1
    assert int(headers[dl.RETRY_DUE]) >= (before + 60) * 1000
    store.record_attempt(
        "doc-1", M2, organization=ORG, endpoint="http://ips"
    )  # would raise LifecycleConflict otherwise


@pytest.mark.parametrize("found", [True, False])
def test_deadline_polls_then_registers_or_dead_letters(store, found):
    """No callback in time: found by polling → registered; not found → NO_ACKNOWLEDGMENT dead letter."""

    async def poll(doc):
        return RegistryItem(emdr_id="16.62.9", local_uid=doc.local_uid) if found else None

    outs = asyncio.run(ack.on_deadline("doc-1", organization=ORG, store=store, poll=poll, environments=TEST))
    if found:
        assert (
            outs[0].topic == topology.ACKNOWLEDGED.name
            and store.get("doc-1", organization=ORG).emdr_id == "16.62.9"
        )
    else:
        assert outs[0].topic == topology.SENT_DLT.name
        assert (
            outs[0].headers[dl.REASON] == b"NO_ACKNOWLEDGMENT"
            and M1 in outs[0].headers[dl.MESSAGE_IDS].decode()
        )


# --- NOT_UNIQUE_PROVIDED_ID: a resend of a document whose first registration went through ----------------

M3 = "33333333-3333-4333-8333-333333333333"
NOT_UNIQUE = [RemdError("NOT_UNIQUE_PROVIDED_ID", "Документ уже зарегистрирован")]


@pytest.fixture
def resent(tmp_path):
    """doc-1: attempt M1 sent and its answer lost (a crash: no outcome), then M2 sent and accepted."""
    s = _store_with_doc(tmp_path / "resent.sqlite3")
    s.record_attempt("doc-1", M1, organization=ORG, endpoint="http://ips")
    s.record_attempt("doc-1", M2, organization=ORG, endpoint="http://ips")
    s.mark_accepted("doc-1", organization=ORG, message_id=M2)
    yield s
    s.close()


class Registry:
    """A stand-in for searchRegistryItem: what РЭМД holds for a localUid, and how often it was asked."""

    def __init__(self, emdr_id=None):
        self.emdr_id, self.asked = emdr_id, []

    def __call__(self, doc):
        self.asked.append(doc.local_uid)
        return RegistryItem(emdr_id=self.emdr_id, local_uid=doc.local_uid) if self.emdr_id else None


def run_with(raw, store, registry, *, received_ms=None, pending_limit=3600.0):
    return ack.on_callback(
        raw,
        store=store,
        received_ms=received_ms or int(time.time() * 1000),
        pending_limit=pending_limit,
        registry_lookup=registry,
        environments=TEST,
    )


def test_not_unique_after_a_lost_answer_is_acknowledged_with_the_registered_emdr_id(resent):
    """NOT_UNIQUE_PROVIDED_ID for the resend of a document РЭМД registered from the first attempt acknowledges it
    with that emdrId (naming the first attempt), records the resend as a duplicate, and dead-letters nothing."""
    registry = Registry("16.62.7")
    outs = run_with(callback(M2, errors=NOT_UNIQUE, callback_id="c-2"), resent, registry)
    assert [o.topic for o in outs] == [topology.ACKNOWLEDGED.name, STATUS]
    event = events.decode(outs[0].value, events.ACKNOWLEDGED)
    registration = event["data"]["registration"]
    assert (registration["emdrId"], registration["messageId"]) == ("16.62.7", M1)
    assert event["data"]["submission"]["messageIds"] == [M1, M2]
    assert events.decode(outs[1].value, events.STATUS)["data"]["status"] == "registered"
    doc = resent.get("doc-1", organization=ORG)
    assert (doc.state, doc.emdr_id) == (lc.REGISTERED, "16.62.7") and registry.asked == ["doc-1"]
    assert [(a.outcome, a.code) for a in resent.history("doc-1", organization=ORG)][1] == (
        "duplicate",
        "NOT_UNIQUE_PROVIDED_ID",
    )


def test_reconciled_duplicate_then_first_success_emits_once_and_redelivery_reemits(resent):
    """After a reconciled duplicate, the first attempt's late success callback changes nothing, and the duplicate
    callback re-delivered after a crash re-emits the same acknowledgment."""
    first = run_with(callback(M2, errors=NOT_UNIQUE, callback_id="c-2"), resent, Registry("16.62.7"))
    assert run_with(callback(M1, emdr="16.62.7", callback_id="c-1"), resent, Registry("16.62.7")) == []
    again = run_with(callback(M2, errors=NOT_UNIQUE, callback_id="c-2"), resent, Registry())
    assert events.decode(first[0].value, events.ACKNOWLEDGED)["data"]["registration"]["emdrId"] == "16.62.7"
    assert _content(again) == _content(first)


def test_not_unique_before_the_registration_shows_waits_and_does_not_fail(resent):
    """NOT_UNIQUE_PROVIDED_ID while РЭМД does not show the registration yet is a deferred retry, not a rejection."""
    registry = Registry(None)
    with pytest.raises(TransientError) as e:
        run_with(callback(M2, errors=NOT_UNIQUE), resent, registry)
    assert e.value.reason == "REGISTRATION_UNCONFIRMED" and e.value.defer and e.value.defer > 0
    assert resent.get("doc-1", organization=ORG).state == lc.ACCEPTED and registry.asked == ["doc-1"]
    assert resent.history("doc-1", organization=ORG)[1].outcome == "accepted"  # undecided by the callback


def test_not_unique_unconfirmed_past_the_limit_is_left_to_the_deadline(resent):
    """Past the ack timeout an unconfirmed duplicate decides nothing: the document stays accepted for the
    deadline poll, which then dead-letters it NO_ACKNOWLEDGMENT."""
    old = int((time.time() - 7200) * 1000)
    assert (
        run_with(
            callback(M2, errors=NOT_UNIQUE), resent, Registry(None), received_ms=old, pending_limit=3600.0
        )
        == []
    )
    assert resent.get("doc-1", organization=ORG).state == lc.ACCEPTED

    async def poll(doc):
        return None

    outs = asyncio.run(ack.on_deadline("doc-1", organization=ORG, store=resent, poll=poll, environments=TEST))
    assert outs[0].headers[dl.REASON] == b"NO_ACKNOWLEDGMENT"


def test_not_unique_without_another_attempt_of_ours_is_a_rejection(store):
    """NOT_UNIQUE_PROVIDED_ID for a document sent once is someone else's registration: dead-lettered, РЭМД not asked."""
    registry = Registry("16.62.7")
    outs = run_with(callback(M1, errors=NOT_UNIQUE), store, registry)
    assert (
        outs[0].topic == topology.SENT_DLT.name and outs[0].headers[dl.REMD_CODE] == b"NOT_UNIQUE_PROVIDED_ID"
    )
    assert store.get("doc-1", organization=ORG).state == lc.FAILED and registry.asked == []


@pytest.mark.parametrize(
    "outcome, code, taken",
    [
        (
            Outcome.PERMANENT,
            "VALIDATION_ERROR",
            False,
        ),  # refused synchronously: cannot be the registered one
        (Outcome.TRANSIENT, "TIMEOUT", True),  # no answer in time: ИПС may have taken it
    ],
)
def test_not_unique_asks_remd_only_when_the_other_attempt_may_have_been_taken(store, outcome, code, taken):
    """NOT_UNIQUE for a resend asks РЭМД (and acknowledges what it shows) when the earlier attempt's synchronous
    answer was transient; after a synchronous refusal it stays a rejection and РЭМД is not asked."""
    # the message reads like a callback's mark: only decided_by says who decided
    store.record_outcome(
        M1, outcome=outcome, decided_by=lc.DECIDED_BY_ANSWER, code=code, message="callback c-9"
    )
    store.mark_failed("doc-1", organization=ORG, reason="REMD_REJECTED")
    store.record_attempt("doc-1", M2, organization=ORG, endpoint="http://ips")
    store.mark_accepted("doc-1", organization=ORG, message_id=M2)
    registry = Registry("16.62.7")
    outs = run_with(callback(M2, errors=NOT_UNIQUE), store, registry)
    assert outs[0].topic == (topology.ACKNOWLEDGED.name if taken else topology.SENT_DLT.name)
    assert registry.asked == (["doc-1"] if taken else [])


def test_not_unique_when_a_transient_error_callback_decided_the_other_attempt_is_a_rejection(store):
    """An earlier attempt a transient error callback decided was not taken (its attempt records decided_by
    callback): NOT_UNIQUE for the resend stays a rejection and РЭМД is not asked."""
    run(callback(errors=[RemdError("INTERNAL_ERROR", "x")], callback_id="c-1"), store)
    assert [(a.outcome, a.decided_by) for a in store.history("doc-1", organization=ORG)] == [
        ("transient", lc.DECIDED_BY_CALLBACK)
    ]
    store.record_attempt("doc-1", M2, organization=ORG, endpoint="http://ips")
    store.mark_accepted("doc-1", organization=ORG, message_id=M2)
    registry = Registry("16.62.7")
    outs = run_with(callback(M2, errors=NOT_UNIQUE), store, registry)
    assert outs[0].topic == topology.SENT_DLT.name and registry.asked == []


def test_success_after_a_rejection_dead_letter_registers(resent):
    """A success callback for a document dead-lettered by another attempt's rejection registers it: РЭМД holds it."""
    outs = run_with(
        callback(M2, errors=[RemdError("NO_SNILS", "нет СНИЛС")], callback_id="c-2"), resent, None
    )
    assert (
        outs[0].topic == topology.SENT_DLT.name and resent.get("doc-1", organization=ORG).state == lc.FAILED
    )
    outs = run_with(callback(M1, emdr="16.62.8", callback_id="c-1"), resent, None)
    assert [o.topic for o in outs] == [topology.ACKNOWLEDGED.name, STATUS]
    assert resent.get("doc-1", organization=ORG).emdr_id == "16.62.8"
    # the rejection callback re-delivered now changes nothing (no failure of a registered document)
    assert (
        run_with(callback(M2, errors=[RemdError("NO_SNILS", "нет СНИЛС")], callback_id="c-2"), resent, None)
        == []
    )


def test_a_callback_naming_our_local_uid_under_another_message_id_decides_nothing(store):
    """A signed callback whose relatesToMessage is none of our attempts is not matched by its localUid alone: it
    waits as uncorrelated, and the document (doc-1, sent under M1) is neither failed nor registered by it."""
    raw = soap.build_register_result(
        RegisterResult(
            relates_to_message=M3,
            status="error",
            local_uid="doc-1",
            errors=(RemdError("NO_SNILS", "нет СНИЛС"),),
        ),
        to="x",
        key=None,
        certificate=None,
    )
    assert ack.correlate(store, soap.parse_register_result(raw)) is None
    with pytest.raises(TransientError) as e:
        run(raw, store)
    assert e.value.reason == "CALLBACK_UNCORRELATED"
    doc = store.get("doc-1", organization=ORG)
    assert doc.state == lc.ACCEPTED and doc.emdr_id is None


def test_callback_correlates_by_emdr_id_last(store):
    """A callback whose relatesToMessage and localUid match nothing is matched by the emdrId of a registered document."""
    store.mark_registered("doc-1", "16.62.1", organization=ORG)
    result = RegisterResult(
        relates_to_message=M3, status="success", local_uid=None, registry_item=RegistryItem(emdr_id="16.62.1")
    )
    doc, attempt = ack.correlate(store, result)
    assert doc.local_uid == "doc-1" and attempt is None
    raw = soap.build_register_result(result, to="x", key=None, certificate=None)
    assert run(raw, store) == []  # already registered: nothing more to say
    unknown = RegisterResult(
        relates_to_message=M3, status="success", registry_item=RegistryItem(emdr_id="16.62.99")
    )
    assert ack.correlate(store, unknown) is None


def test_handle_callback_reconciles_through_the_async_poll(resent):
    """handle_callback runs the decision off the event loop and asks РЭМД through the worker's async poll."""
    asked = []

    async def poll(doc):
        asked.append(doc.local_uid)
        return RegistryItem(emdr_id="16.62.9", local_uid=doc.local_uid)

    outs = asyncio.run(
        ack.handle_callback(
            callback(M2, errors=NOT_UNIQUE),
            store=resent,
            poll=poll,
            received_ms=int(time.time() * 1000),
            environments=TEST,
        )
    )
    assert outs[0].topic == topology.ACKNOWLEDGED.name and asked == ["doc-1"]
    assert resent.get("doc-1", organization=ORG).emdr_id == "16.62.9"


def test_registration_warnings_reach_the_mis_status(store):
    """registryItem/registrationWarnings of a success callback are passed to the МИС in emd.document.status,
    and a redelivery of the same callback carries them again; a callback without warnings has no such field."""
    warned = RegistryItem(
        emdr_id="16.62.1",
        registration_date_time="2026-01-01",
        warnings=(RemdError("IPS_VALIDATION_WARNING", "Замечание ИПС"),),
    )
    raw = soap.build_register_result(
        RegisterResult(
            relates_to_message=M1.replace("-", "").upper(),
            status="success",
            local_uid="doc-1",
            registry_item=warned,
        ),
        to="http://mis",
        key=None,
        certificate=None,
        message_id="c-9",
    )
    for _ in range(2):
        status = events.decode(run(raw, store)[1].value, events.STATUS)["data"]
        assert status["status"] == "registered"
        assert status["warnings"] == [{"code": "IPS_VALIDATION_WARNING", "message": "Замечание ИПС"}]


def test_status_without_warnings_has_no_warnings_field(store):
    """A plain success callback gives a registered status without a warnings field."""
    status = events.decode(run(callback(), store)[1].value, events.STATUS)["data"]
    assert "warnings" not in status


class RegisteredByAnotherReplica:
    """A lifecycle store in which another status replica registers the document just before this one decides."""

    def __init__(self, store, emdr_id):
        self.store, self.emdr_id = store, emdr_id

    def __getattr__(self, name):
        return getattr(self.store, name)

    def mark_failed(self, local_uid, **kw):
        self.store.mark_registered(local_uid, self.emdr_id, organization=kw["organization"])
        return self.store.mark_failed(local_uid, **kw)  # refused: registered is final


def test_a_lifecycle_conflict_with_another_replica_is_not_dead_lettered(store):
    """A rejection callback for a document another replica registered meanwhile emits nothing: no dead letter,
    no "rejected" status; the registration stands."""
    outs = run(
        callback(errors=[RemdError("PERSON_NOT_FOUND", "x")]), RegisteredByAnotherReplica(store, "16.62.5")
    )
    assert outs == []
    assert (
        store.get("doc-1", organization=ORG).state == lc.REGISTERED
        and store.get("doc-1", organization=ORG).emdr_id == "16.62.5"
    )


class TestMetrics:
    @staticmethod
    def _value(name: str, **labels: str) -> float:
        from services.metrics import REGISTRY

        return REGISTRY.get_sample_value(name, labels) or 0.0

    def test_a_registration_is_counted_once_with_its_latency_and_a_redelivery_is_not(self, store):
        """A success callback counts one acknowledgment and one end-to-end observation; the same callback
        redelivered after a crash re-emits its events but is not counted again."""
        before = (
            self._value("emd_acknowledged_total", via="callback"),
            self._value("emd_end_to_end_seconds_count"),
        )
        run(callback(callback_id="c-1"), store)
        run(callback(callback_id="c-1"), store)
        after = (
            self._value("emd_acknowledged_total", via="callback"),
            self._value("emd_end_to_end_seconds_count"),
        )
        assert (1.0, 1.0) == (after[0] - before[0], after[1] - before[1])

    def test_callbacks_about_a_decided_document_are_counted_as_duplicated(self, store):
        """A second success and a later error callback for a registered document count as duplicated."""
        run(callback(callback_id="c-1"), store)
        before = self._value("emd_callbacks_duplicated_total")
        run(callback(callback_id="c-2"), store)
        run(callback(errors=[RemdError("RUNTIME_ERROR", "x")], callback_id="c-3"), store)
        assert 2.0 == self._value("emd_callbacks_duplicated_total") - before

    def test_what_awaits_acknowledgment_is_read_from_the_store_at_each_scrape(self, store):
        """The collector reports the accepted document and its age, then nothing waiting once it is registered."""
        collector = ack.AwaitingCollector(
            clock=lambda: store.get("doc-1", organization=ORG).accepted_at.timestamp() + 90
        )
        collector.watch(store)
        samples = {f.name: f.samples[0].value for f in collector.collect()}
        assert {"emd_awaiting_acknowledgment": 1, "emd_awaiting_acknowledgment_oldest_seconds": 90} == samples
        run(callback(), store)
        samples = {f.name: f.samples[0].value for f in collector.collect()}
        assert {"emd_awaiting_acknowledgment": 0, "emd_awaiting_acknowledgment_oldest_seconds": 0} == samples

    def test_a_store_that_cannot_answer_leaves_the_series_out(self):
        """When the store fails, the scrape goes on without these series instead of failing."""

        class Down:
            def awaiting(self):
                raise OSError("database unreachable")

        collector = ack.AwaitingCollector()
        collector.watch(Down())
        assert [] == collector.collect()


def test_end_to_end_latency_runs_from_the_mis_publishing_the_document(tmp_path):
    """emd_end_to_end_seconds counts from the created event's time the signed event carries, not from the sender."""
    from services.metrics import REGISTRY

    s = lc.SqliteLifecycleStore(tmp_path / "lc.sqlite3")
    published = events.timestamp(datetime.now(UTC) - timedelta(minutes=10))
    data = dict(EXAMPLE, localUid="doc-1", publishedAt=published)
    s.register(
        "doc-1",
        organization=data["organizationOid"],
        kind=data["kind"],
        signed_event=events.encode(events.new_event(events.SIGNED, data, source="t")),
    )
    s.record_attempt("doc-1", M1, organization=ORG, endpoint="http://ips")
    s.mark_accepted("doc-1", organization=ORG, message_id=M1)
    before = REGISTRY.get_sample_value("emd_end_to_end_seconds_sum") or 0.0
    run(callback(), s)
    assert (REGISTRY.get_sample_value("emd_end_to_end_seconds_sum") or 0.0) - before >= 600
    s.close()


def test_a_mail_style_message_id_correlates_a_callback_to_its_attempt(tmp_path):
    """A callback whose relatesToMessage is written mail-style (``<…>``, upper case) and names no localUid is matched
    by MessageID to the attempt it answers: that attempt is the registered one."""
    s = _store_with_doc(tmp_path / "lc.sqlite3")
    s.record_attempt("doc-1", M1, organization=ORG, endpoint="http://ips")
    s.record_outcome(M1, outcome=Outcome.TRANSIENT, decided_by=lc.DECIDED_BY_ANSWER, code="TIMEOUT")
    s.record_attempt("doc-1", M2, organization=ORG, endpoint="http://ips")
    s.mark_accepted("doc-1", organization=ORG, message_id=M2)
    raw = soap.build_register_result(
        RegisterResult(
            relates_to_message=f"<{M2.upper()}>",
            status="success",
            registry_item=RegistryItem(emdr_id="16.62.7", registration_date_time="2026-01-01T10:00:00+03:00"),
        ),
        to="http://mis",
        key=None,
        certificate=None,
    )
    outs = run(raw, s)
    registration = events.decode(outs[0].value, events.ACKNOWLEDGED)["data"]["registration"]
    assert registration["messageId"] == M2 and registration["emdrId"] == "16.62.7"
    assert [(a.message_id, a.outcome) for a in s.history("doc-1", organization=ORG)] == [
        (M1, "transient"),
        (M2, "registered"),
    ]
    s.close()


def test_both_date_formats_are_kept_in_the_lifecycle_and_the_acknowledged_event(store):
    """A success callback with registrationDateTime to the microsecond (+03:00) and storeTillDate as a date with an
    offset: the lifecycle keeps both, and the acknowledged event (valid against its schema) carries the time in UTC
    to the microsecond and the date as РЭМД wrote it."""
    from datetime import UTC

    raw = soap.build_register_result(
        RegisterResult(
            relates_to_message=M1,
            status="success",
            local_uid="doc-1",
            registry_item=RegistryItem(
                emdr_id="16.62.23.09.000014523",
                registration_date_time="2023-09-22T09:27:02.104123+03:00",
                store_till_date="2048-09-22+03:00",
            ),
        ),
        to="http://mis",
        key=None,
        certificate=None,
    )
    outs = run(raw, store)
    doc = store.get("doc-1", organization=ORG)
    assert doc.registered_at == datetime(2023, 9, 22, 6, 27, 2, 104123, tzinfo=UTC)
    assert doc.store_till_date == "2048-09-22+03:00"
    registration = events.decode(outs[0].value, events.ACKNOWLEDGED)["data"]["registration"]
    assert registration["registrationTime"] == "2023-09-22T06:27:02.104123Z"
    assert registration["storeTillDate"] == "2048-09-22+03:00"


# --- getRegistryItem answers on the callback ---------------------------------------------------------------

EMDR = "16.62.23.09.000014523"


class AskingRegistry:
    """The status worker's RegistryPoller as acknowledgment sees it: the search (``__call__``) finds the document,
    ``ask`` stores the getRegistryItem's MessageID (as RegistryPoller does, before sending) and says it was asked."""

    def __init__(self, store, emdr_id=EMDR):
        self.store, self.emdr_id, self.asked = store, emdr_id, []

    async def __call__(self, doc):
        return RegistryItem(emdr_id=self.emdr_id, local_uid=doc.local_uid) if self.emdr_id else None

    async def ask(self, doc, item, *, purpose, attempt_message_id=None):
        mid = f"{len(self.asked) + 1:08d}-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
        self.store.record_registry_request(
            mid,
            doc.local_uid,
            organization=doc.organization,
            emdr_id=item.emdr_id,
            purpose=purpose,
            attempt_message_id=attempt_message_id,
        )
        self.asked.append((mid, purpose, attempt_message_id))
        return True


def registry_answer(relates, *, emdr=EMDR, local_uid="doc-1", errors=(), callback_id=None):
    """A getRegistryItemResult as ИПС delivers it: РЭМД's record with both date formats, or the errors."""
    item = (
        None
        if errors
        else RegistryItem(
            emdr_id=emdr,
            local_uid=local_uid,
            registration_date_time="2023-09-22T09:27:02.104000+03:00",
            store_till_date="2048-09-22+03:00",
        )
    )
    return soap.build_registry_item_result(
        soap.RegistryItemResult(
            relates_to_message=f"<{relates.upper()}>",
            status="error" if errors else "success",
            registry_item=item,
            errors=tuple(errors),
        ),
        to="http://mis",
        key=None,
        certificate=None,
        message_id=callback_id,
    )


def test_a_deadline_asks_for_the_record_and_its_answer_on_the_callback_registers(store):
    """At the deadline the search finds the document and its record is asked for (nothing decided yet); the
    getRegistryItemResult naming that request (mail-style spelling) registers it with РЭМД's dates; the same callback
    delivered again re-emits the same outputs, another answer to the same request changes nothing."""
    registry = AskingRegistry(store)
    assert (
        asyncio.run(ack.on_deadline("doc-1", organization=ORG, store=store, poll=registry, environments=TEST))
        == []
    )
    [(mid, purpose, _)] = registry.asked
    assert purpose == "deadline" and store.get("doc-1", organization=ORG).state == lc.ACCEPTED
    outs = run(registry_answer(mid, callback_id="r-1"), store)
    assert [o.topic for o in outs] == [topology.ACKNOWLEDGED.name, STATUS]
    registration = events.decode(outs[0].value, events.ACKNOWLEDGED)["data"]["registration"]
    assert registration == {
        "emdrId": EMDR,
        "registrationTime": "2023-09-22T06:27:02.104000Z",
        "messageId": M1,
        "storeTillDate": "2048-09-22+03:00",
    }
    doc = store.get("doc-1", organization=ORG)
    assert (doc.state, doc.emdr_id, doc.store_till_date) == (lc.REGISTERED, EMDR, "2048-09-22+03:00")
    assert _content(run(registry_answer(mid, callback_id="r-1"), store)) == _content(outs)
    assert run(registry_answer(mid, callback_id="r-2"), store) == []
    [asked] = store.registry_requests("doc-1", organization=ORG)
    assert (asked.outcome, asked.decided_by) == ("registered", "callback r-1")


def test_a_registry_answer_for_a_document_registered_meanwhile_changes_nothing(store):
    """The registration's own callback arrives after the deadline asked for the record: the record's answer then
    emits nothing more."""
    registry = AskingRegistry(store)
    asyncio.run(ack.on_deadline("doc-1", organization=ORG, store=store, poll=registry, environments=TEST))
    assert run(callback(emdr=EMDR), store)
    assert run(registry_answer(registry.asked[0][0]), store) == []
    assert store.registry_requests("doc-1", organization=ORG)[0].outcome == "confirmed"


@pytest.mark.parametrize(
    "code,dead",
    [("REGISTRY_ITEM_NOT_FOUND", True), ("INTERNAL_ERROR", False)],
    ids=["permanent", "transient"],
)
def test_a_deadline_whose_record_cannot_be_read_ends_the_wait_only_for_a_lasting_code(store, code, dead):
    """At a deadline, a getRegistryItemResult with a code retrying cannot change dead-letters NO_ACKNOWLEDGMENT with
    that code and what the search had found; a transient code decides nothing (the deadline asks again)."""
    registry = AskingRegistry(store)
    asyncio.run(ack.on_deadline("doc-1", organization=ORG, store=store, poll=registry, environments=TEST))
    outs = run(registry_answer(registry.asked[0][0], errors=[RemdError(code, "Запись не найдена")]), store)
    if not dead:
        assert outs == [] and store.get("doc-1", organization=ORG).state == lc.ACCEPTED
        return
    assert [o.topic for o in outs] == [topology.SENT_DLT.name, STATUS]
    assert (
        outs[0].headers[dl.REASON] == b"NO_ACKNOWLEDGMENT" and outs[0].headers[dl.REMD_CODE] == code.encode()
    )
    doc = store.get("doc-1", organization=ORG)
    assert doc.state == lc.FAILED and EMDR in doc.failure_message and code in doc.failure_message


def test_an_answer_naming_another_record_registers_nothing(store):
    """A getRegistryItemResult whose record is not the one asked for (another localUid) registers nothing."""
    registry = AskingRegistry(store)
    asyncio.run(
        ack.on_deadline("doc-1", organization=ORG, store=store, poll=registry, environments=TEST, final=False)
    )
    assert run(registry_answer(registry.asked[0][0], local_uid="doc-2"), store) == []
    assert store.get("doc-1", organization=ORG).state == lc.ACCEPTED
    assert registry.asked[0][1] == "poll"


def test_a_registry_answer_to_no_question_of_ours_waits_then_dead_letters(store):
    """A getRegistryItemResult matching no stored question waits (CALLBACK_UNCORRELATED, deferred) and is a permanent
    error once past the pending limit."""
    raw = registry_answer(M3)
    with pytest.raises(TransientError) as e:
        run(raw, store)
    assert e.value.reason == "CALLBACK_UNCORRELATED" and e.value.defer
    with pytest.raises(PermanentError):
        ack.on_callback(raw, store=store, received_ms=0, pending_limit=60.0, environments=TEST)


def test_a_duplicate_registration_is_reconciled_by_the_record_asked_for(resent):
    """NOT_UNIQUE_PROVIDED_ID for a resend: the search finds the document, its record is asked for with the
    resend's attempt named, and the answer registers it, records the resend as a duplicate and names the first
    attempt as the registering one."""
    registry = AskingRegistry(resent, emdr_id="16.62.7")

    def asking(doc, item, **why):
        return asyncio.run(registry.ask(doc, item, **why))

    def lookup(doc):
        return asyncio.run(registry(doc))

    raw = callback(M2, errors=NOT_UNIQUE, callback_id="c-2")
    outs = ack.on_callback(
        raw,
        store=resent,
        received_ms=int(time.time() * 1000),
        registry_lookup=lookup,
        registry_ask=asking,
        environments=TEST,
    )
    assert outs == [] and registry.asked[0][1:] == ("duplicate", M2)
    outs = run(registry_answer(registry.asked[0][0], emdr="16.62.7"), resent)
    registration = events.decode(outs[0].value, events.ACKNOWLEDGED)["data"]["registration"]
    assert (registration["emdrId"], registration["messageId"]) == ("16.62.7", M1)
    assert [(a.message_id, a.outcome) for a in resent.history("doc-1", organization=ORG)][1] == (
        M2,
        "duplicate",
    )


def test_handle_callback_asks_through_the_pollers_ask(resent):
    """handle_callback hands on_callback the poller's ask, run on the event loop, so a duplicate is confirmed by the
    record asked for on the callback."""
    registry = AskingRegistry(resent, emdr_id="16.62.7")
    outs = asyncio.run(
        ack.handle_callback(
            callback(M2, errors=NOT_UNIQUE),
            store=resent,
            poll=registry,
            received_ms=int(time.time() * 1000),
            environments=TEST,
        )
    )
    assert (
        outs == [] and len(registry.asked) == 1 and resent.get("doc-1", organization=ORG).state == lc.ACCEPTED
    )
