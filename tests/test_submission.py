"""The sender's handler without Kafka: idempotency, MessageIDs recorded before sending, circuit hold, failures."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from lab.dev.config import write_dev_config
from producer import events, topology
from producer.errors import PermanentError, TransientError
from services import lifecycle
from services.messaging.records import Record
from services.pipeline.organizations import load_organizations
from services.pipeline.submission import Submitter
from services.remd.transport import SubmitOutcome
from tests.sender_helpers import ORG, STATUS_TOPIC, FakeTransport, signed_record, submitter

#: a second clinic, with a МИС of its own
OTHER_ORG, OTHER_MIS = "1.2.643.5.1.13.13.12.2.77.7832", "other-mis"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = write_dev_config(
        tmp_path_factory.mktemp("cfg"), oids=[ORG, OTHER_ORG], endpoint="http://ips.test/emdr"
    )
    return load_organizations(path)


def test_a_mis_reusing_another_clinics_local_uid_neither_touches_that_document_nor_learns_its_emdr_id(
    config, store
):
    """The attack: clinic B's document "shared" is registered; МИС A publishes its own document under that localUid
    for its clinic A. A's document is sent as a new one and fails on its own; B's stays registered with its
    MessageID, and nothing A's МИС reads names B's emdrId."""
    t = FakeTransport(store=store)
    s = submitter(config, store, t)
    asyncio.run(s.handle(signed_record("shared", organization=OTHER_ORG, mis_id=OTHER_MIS)))
    store.mark_registered("shared", "16.62.26.11.000000042", organization=OTHER_ORG)
    b_ids = store.message_ids("shared", organization=OTHER_ORG)

    outs = asyncio.run(s.handle(signed_record("shared")))  # МИС A (the example's), its own clinic ORG
    assert len(t.requests) == 2 and t.requests[1].registration.organization == ORG
    told = [events.decode(o.value)["data"] for o in outs if o.topic.startswith("emd.document.status.")]
    assert [o.topic for o in outs] == [topology.SENT.name, STATUS_TOPIC]
    assert [(d["status"], d["emdrId"], d["organizationOid"]) for d in told] == [("sent", None, ORG)]
    assert "16.62.26.11.000000042" not in b"".join(o.value for o in outs).decode()

    t.outcomes.append(SubmitOutcome(kind="permanent", reason="REMD_REJECTED", remd_code="NO_SNILS"))
    store.mark_failed("shared", organization=ORG, reason="REMD_REJECTED")  # РЭМД refused A's document later
    with pytest.raises(PermanentError):
        asyncio.run(s.handle(signed_record("shared")))  # a replay of A's, refused again
    theirs = store.get("shared", organization=OTHER_ORG)
    assert (theirs.state, theirs.emdr_id) == (lifecycle.REGISTERED, "16.62.26.11.000000042")
    assert store.message_ids("shared", organization=OTHER_ORG) == b_ids
    assert store.get("shared", organization=ORG).state == lifecycle.FAILED


def test_accepted_emits_sent_and_status(config, store):
    """An accepted registration gives a schema-valid sent event with the submission, and status "sent"."""
    t = FakeTransport(store=store)
    outs = asyncio.run(submitter(config, store, t).handle(signed_record()))
    assert [o.topic for o in outs] == [topology.SENT.name, STATUS_TOPIC]
    sent = events.decode(outs[0].value, expected_type=events.SENT)["data"]["submission"]
    assert sent["messageId"] == t.requests[0].message_id and sent["messageIds"] == [sent["messageId"]]
    assert (
        sent["attempt"] == 1 and sent["endpoint"] == "http://ips.test/emdr" and sent["environment"] == "test"
    )
    assert json.loads(outs[1].value)["data"]["status"] == "sent"
    assert t.recorded_before_send == [True]
    assert store.get("doc-1", organization=ORG).state == lifecycle.ACCEPTED


def test_redelivery_after_acceptance_never_sends_again(config, store):
    """A redelivered (or replayed) record of an accepted document re-emits sent from the store and sends nothing."""
    t = FakeTransport(store=store)
    s = submitter(config, store, t)
    first = asyncio.run(s.handle(signed_record()))
    again = asyncio.run(s.handle(signed_record()))
    assert len(t.requests) == 1
    a = events.decode(first[0].value)["data"]["submission"]
    b = events.decode(again[0].value)["data"]["submission"]
    assert a["messageId"] == b["messageId"]


def test_replay_of_a_registered_document_tells_the_mis_registered_not_sent(config, store):
    """A replayed record of a registered document sends nothing and its status event says registered, with the emdrId."""
    t = FakeTransport(store=store)
    s = submitter(config, store, t)
    asyncio.run(s.handle(signed_record()))
    store.mark_registered("doc-1", "16.62.26.11.000000001", organization=ORG)
    again = asyncio.run(s.handle(signed_record()))
    status = json.loads(again[1].value)["data"]
    assert len(t.requests) == 1
    assert (status["status"], status["emdrId"]) == ("registered", "16.62.26.11.000000001")


def test_transient_then_accepted_keeps_every_message_id(config, store):
    """A transient failure raises TransientError with its MessageID; the next attempt's sent event lists both."""
    t = FakeTransport(SubmitOutcome(kind="transient", reason="HTTP_503", message="down"), store=store)
    s = submitter(config, store, t)
    with pytest.raises(TransientError) as exc:
        asyncio.run(s.handle(signed_record()))
    first_id = t.requests[0].message_id
    assert exc.value.reason == "HTTP_503" and exc.value.details["message_ids"] == [first_id]
    outs = asyncio.run(s.handle(signed_record()))
    sub = events.decode(outs[0].value)["data"]["submission"]
    assert sub["messageIds"] == [first_id, t.requests[1].message_id] and sub["attempt"] == 2


def test_rate_limit_defers_a_minute(config, store):
    """RATE_LIMIT becomes TransientError(defer ≥ 60) and pauses the endpoint's limiter."""
    t = FakeTransport(
        SubmitOutcome(kind="transient", reason="RATE_LIMIT", remd_code="RATE_LIMIT", defer=60.0)
    )
    s = submitter(config, store, t)
    with pytest.raises(TransientError) as exc:
        asyncio.run(s.handle(signed_record()))
    assert exc.value.defer >= 60
    (lim,) = s.limiters.values()
    assert lim.bucket.take() > 50


def test_rate_limit_defer_is_a_setting(config, store):
    """With rate_limit_defer=5 a RATE_LIMIT answer retries the document, and pauses its organisation, 5 s later."""
    t = FakeTransport(
        SubmitOutcome(kind="transient", reason="RATE_LIMIT", remd_code="RATE_LIMIT", defer=60.0)
    )
    s = submitter(config, store, t, rate_limit_defer=5.0)
    with pytest.raises(TransientError) as exc:
        asyncio.run(s.handle(signed_record()))
    assert exc.value.defer == 5.0
    (lim,) = s.limiters.values()
    assert 4 < lim.bucket.take() < 10  # paused about 5 s (plus a token's refill), not a minute


def test_permanent_dead_letters_with_code_and_message_ids(config, store):
    """A rejection raises PermanentError carrying the РЭМД code, message, category, hint and MessageIDs."""
    t = FakeTransport(
        SubmitOutcome(
            kind="permanent",
            reason="REMD_REJECTED",
            remd_code="NO_SNILS",
            remd_message="нет СНИЛС",
            category="data",
            hint="fix",
            message="NO_SNILS: нет",
        )
    )
    with pytest.raises(PermanentError) as exc:
        asyncio.run(submitter(config, store, t).handle(signed_record()))
    d = exc.value.details
    assert (exc.value.reason, d["remd_code"], d["category"], d["hint"]) == (
        "REMD_REJECTED",
        "NO_SNILS",
        "data",
        "fix",
    )
    assert d["message_ids"] == [t.requests[0].message_id] and d["local_uid"] == "doc-1"
    assert store.get("doc-1", organization=ORG).state == lifecycle.FAILED


def test_unknown_organization_is_permanent(config, store):
    """A document of an organisation absent from the configuration is dead-lettered, nothing sent."""
    rec = signed_record()
    ev = json.loads(rec.value)
    ev["data"]["organizationOid"] = "1.2.643.5.1.13.13.12.2.77.1"
    rec = Record(**{**rec.__dict__, "value": json.dumps(ev).encode()})
    t = FakeTransport()
    with pytest.raises(PermanentError) as exc:
        asyncio.run(submitter(config, store, t).handle(rec))
    assert exc.value.reason == "ORGANIZATION_UNKNOWN" and t.requests == []


def test_open_circuit_holds_instead_of_burning_attempts(config, store):
    """Transport failures that open the circuit do not raise: the record waits for the probe and is then sent."""
    down = SubmitOutcome(kind="transient", reason="CONNECT_ERROR", transport_failure=True)
    t = FakeTransport(down, down, store=store)
    s = submitter(config, store, t, breaker_failures=1, breaker_cool_down=0.2)
    outs = asyncio.run(asyncio.wait_for(s.handle(signed_record()), timeout=10))
    assert outs[0].topic == topology.SENT.name and len(t.requests) == 3
    assert s.breakers["http://ips.test/emdr"].state == "closed"


def test_open_circuit_parks_beyond_the_hold_limit(config, store):
    """With the circuit open and the hold limit reached, a record is parked on retry tier 0 without an attempt."""
    t = FakeTransport()
    s = submitter(config, store, t, breaker_failures=1, breaker_cool_down=60, hold_per_endpoint=0)
    s.breaker("http://ips.test/emdr").record_failure()
    (out,) = asyncio.run(s.handle(signed_record()))
    assert out.topic == topology.SENDER_RETRIES[0].name and t.requests == []
    assert out.headers["emd-retry-reason"] == b"CIRCUIT_OPEN" and "emd-attempt" not in out.headers


def test_a_parked_record_is_due_no_later_than_the_first_tiers_delay(config, store):
    """A record parked behind a circuit that opens for 300 s is due within park_max_seconds, so it never holds up
    other clinics' first retries queued behind it on the shared tier."""
    s = submitter(
        config,
        store,
        FakeTransport(),
        breaker_failures=1,
        breaker_cool_down=300,
        hold_per_endpoint=0,
        park_max_seconds=5,
    )
    s.breaker("http://ips.test/emdr").record_failure()
    before = time.time()
    (out,) = asyncio.run(s.handle(signed_record()))
    due = int(out.headers["emd-retry-due"]) / 1000
    assert before < due <= time.time() + 5


def test_an_organisation_configured_for_production_sends_production_in_its_sent_event(tmp_path, store):
    """The sent event's submission names the organisation's configured environment, not a default."""
    path = write_dev_config(tmp_path / "cfg", oids=[ORG], endpoint="http://ips.test/emdr")
    raw = json.loads(path.read_text())
    raw["organizations"][0]["remd"]["environment"] = "production"
    path.write_text(json.dumps(raw, ensure_ascii=False))
    outs = asyncio.run(submitter(load_organizations(path), store, FakeTransport()).handle(signed_record()))
    assert events.decode(outs[0].value, events.SENT)["data"]["submission"]["environment"] == "production"


class AcceptedByAnotherReplica:
    """A lifecycle store in which another sender replica accepts the document just before our attempt."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def record_attempt(self, local_uid, message_id, **kw):
        other = "99999999-9999-4999-8999-999999999999"
        org = kw["organization"]
        self.store.record_attempt(
            local_uid, other, organization=org, endpoint="http://ips.test/emdr", register=kw.get("register")
        )
        self.store.mark_accepted(local_uid, organization=org, message_id=other)
        return self.store.record_attempt(local_uid, message_id, **kw)  # refused: already accepted


def test_a_lifecycle_conflict_with_another_replica_is_not_a_failure(config, store):
    """When another replica accepted the document first, the sender sends nothing, raises nothing (no dead
    letter, no "failed" status) and re-emits the other replica's sent event."""
    t = FakeTransport()
    outs = asyncio.run(submitter(config, AcceptedByAnotherReplica(store), t).handle(signed_record()))
    assert t.requests == []
    assert [o.topic for o in outs] == [topology.SENT.name, STATUS_TOPIC]
    sent = events.decode(outs[0].value, events.SENT)["data"]["submission"]
    assert sent["messageId"] == "99999999-9999-4999-8999-999999999999"
    assert json.loads(outs[1].value)["data"]["status"] == "sent"


def test_other_content_under_a_known_local_uid_is_refused_in_plain_words(config, store):
    """A signed event whose document differs from the one registered under its localUid is dead-lettered
    LOCAL_UID_REUSED saying a changed СЭМД needs a new localUid; nothing is sent."""
    t = FakeTransport(store=store)
    s = submitter(config, store, t)
    asyncio.run(s.handle(signed_record()))
    store.mark_registered("doc-1", "16.62.26.11.000000002", organization=ORG)
    data = dict(events.load_schema(events.SIGNED)["examples"][0], localUid="doc-1")
    data["document"] = dict(data["document"], sha256="0" * 64)
    changed = Record(
        topic=topology.SIGNED.name,
        partition=0,
        offset=1,
        key="doc-1",
        headers={},
        timestamp_ms=0,
        value=events.encode(events.new_event(events.SIGNED, data, source="test")),
    )
    with pytest.raises(PermanentError) as exc:
        asyncio.run(s.handle(changed))
    assert exc.value.reason == "LOCAL_UID_REUSED" and len(t.requests) == 1
    assert "16.62.26.11.000000002" in exc.value.message and "new localUid" in exc.value.message


def _changed(uid: str = "doc-1", sha: str = "0" * 64) -> Record:
    """The signed example under ``uid`` with other bytes (a corrected СЭМД): a different sha256."""
    data = dict(events.load_schema(events.SIGNED)["examples"][0], localUid=uid, organizationOid=ORG)
    data["document"] = dict(data["document"], sha256=sha, ref="file:///corrected")
    event = events.new_event(events.SIGNED, data, source="test")
    return Record(topology.SIGNED.name, 0, 1, uid, events.encode(event), {}, 0)


def test_a_document_remd_refused_is_sent_again_under_its_local_uid_once_corrected(config, store):
    """РЭМД registers nothing it refuses: after a refusal with its code, the corrected document (other bytes) under
    the same localUid is sent with a new MessageID, and the lifecycle now holds the corrected content, which is what
    getDocumentFile will serve."""
    t = FakeTransport(SubmitOutcome(kind="permanent", reason="REMD_REJECTED", remd_code="PERSON_NOT_FOUND"))
    s = submitter(config, store, t)
    with pytest.raises(PermanentError):
        asyncio.run(s.handle(signed_record()))
    assert store.get("doc-1", organization=ORG).state == lifecycle.FAILED
    corrected = _changed()
    outs = asyncio.run(s.handle(corrected))
    assert len(t.requests) == 2 and t.requests[0].message_id != t.requests[1].message_id
    doc = store.get("doc-1", organization=ORG)
    assert (doc.state, doc.signed_event, doc.document_ref) == (
        lifecycle.ACCEPTED,
        corrected.value,
        "file:///corrected",
    )
    assert doc.failure_reason is None and len(store.message_ids("doc-1", organization=ORG)) == 2
    assert json.loads(outs[1].value)["data"]["status"] == "sent"


@pytest.mark.parametrize(
    "refusal",
    [
        SubmitOutcome(kind="permanent", reason="REMD_REJECTED", remd_code="NOT_UNIQUE_PROVIDED_ID"),
        SubmitOutcome(kind="permanent", reason="SOAP_FAULT"),
    ],
)
def test_other_content_is_refused_while_remd_may_hold_the_local_uid(config, store, refusal):
    """РЭМД saying the localUid is taken (NOT_UNIQUE_PROVIDED_ID), or a failure without a РЭМД refusal code, leaves
    the localUid possibly held: other bytes under it are LOCAL_UID_REUSED, nothing is sent."""
    t = FakeTransport(refusal)
    s = submitter(config, store, t)
    with pytest.raises(PermanentError):
        asyncio.run(s.handle(signed_record()))
    with pytest.raises(PermanentError) as exc:
        asyncio.run(s.handle(_changed()))
    assert exc.value.reason == "LOCAL_UID_REUSED" and len(t.requests) == 1


def test_only_a_failed_document_takes_new_content(store):
    """The lifecycle refuses to replace the content of a document that is not failed (in flight or done)."""
    store.register("doc-9", organization=ORG, kind="119", signed_event=b"{}")
    with pytest.raises(lifecycle.LifecycleConflict):
        store.resubmit("doc-9", organization=ORG, kind="119", signed_event=b"{}")


ORG2 = "1.2.643.5.1.13.13.12.2.77.7832"
AUTHOR = "52415372312"  #: the signed example's author


def _n3_config(tmp_path, **top):
    """Two organisations on the n3 route (the signed example's and another), with N3 codes for its author."""
    path = write_dev_config(
        tmp_path / "cfg", oids=[ORG, ORG2], doctors=(AUTHOR,), endpoint="http://n3.test/emk/EMKService.svc"
    )
    raw = json.loads(path.read_text())
    raw.update(top)
    (path.parent / "n3.token").write_text("n3-secret-guid\n")
    for org in raw["organizations"]:
        remd = org["remd"]
        for field in ("system_key", "system_certificate", "client_entity_id", "callback_url"):
            remd.pop(field)
        remd.update(
            transport="n3",
            n3={
                "lpu_id": f"lpu-{org['oid'][-1]}",
                "token_file": "n3.token",
                "doctors": {AUTHOR: {"id_speciality": 28, "id_position": 114}},
            },
        )
    path.write_text(json.dumps(raw, ensure_ascii=False))
    return load_organizations(path)


def _n3_record(uid="doc-1", org=ORG, **patient):
    """The signed example under ``uid`` for ``org``, its document inline (N3 takes it attached)."""
    import base64
    import hashlib

    document = "<ClinicalDocument>подписанные байты</ClinicalDocument>".encode()
    data = dict(events.load_schema(events.SIGNED)["examples"][0], localUid=uid, organizationOid=org)
    data["patient"] = {**data["patient"], **patient}
    data["document"] = {
        "sha256": hashlib.sha256(document).hexdigest(),
        "size": len(document),
        "mediaType": "text/xml",
        "inline": base64.b64encode(document).decode(),
    }
    value = events.encode(events.new_event(events.SIGNED, data, source="test"))
    return Record(
        topic=topology.SIGNED.name, partition=0, offset=0, key=uid, headers={}, timestamp_ms=0, value=value
    ), document


class N3Like(FakeTransport):
    """Takes every request; says the patient was added when the request asked for it."""

    name, pushes_document, has_callbacks = "n3", True, False

    async def submit(self, request):
        self.requests.append(request)
        if self.outcomes:
            return self.outcomes.pop(0)
        return SubmitOutcome(kind="accepted", reason="ACCEPTED", patient_added=request.add_patient)


def test_an_n3_organisation_sends_the_document_with_its_guid_and_n3s_codes(tmp_path, store):
    """An organisation on the n3 transport needs no ИПС key, clientEntityId or callback: its attempt carries the exact
    signed document, the GUID, the ЛПУ id, dictionary 195's code of the kind (119 → 198), its author's N3 codes and
    PixService's address, and its request id is the attempt's id in the lifecycle store."""
    record, document = _n3_record()
    t = N3Like(store=store)
    asyncio.run(Submitter(config=_n3_config(tmp_path), store=store, transports={"n3": t}).handle(record))
    [request] = t.requests
    assert request.document == document
    assert (request.auth_token, request.lpu_id, request.key) == ("n3-secret-guid", "lpu-1", None)
    assert (request.n3_codes.document_type, request.n3_codes.staff[AUTHOR].position) == (198, 114)
    assert (request.pix_endpoint, request.add_patient) == ("http://n3.test/emk/PixService.svc", True)
    assert store.message_ids("doc-1", organization=ORG) == [request.message_id]


def test_n3_adds_a_patient_once_per_patient_and_clinic(tmp_path, store):
    """With the patient store, AddPatient goes with a patient's first document of a clinic only; again when what it
    says about the patient changes, for another clinic, and after N3 says it does not know the patient."""
    from services.lifecycle.patients import PatientStore

    patients = PatientStore(tmp_path / "patients.sqlite3")
    t = N3Like(store=store)
    s = Submitter(config=_n3_config(tmp_path), store=store, transports={"n3": t}, patients=patients)

    def send(uid, **kw):
        asked = len(t.requests)
        try:
            asyncio.run(s.handle(_n3_record(uid, **kw)[0]))
        except TransientError:
            pass
        return [r.add_patient for r in t.requests[asked:]]

    assert send("d1") == [True]
    assert send("d2") == [False]  # the same patient, the same clinic
    t.outcomes.append(SubmitOutcome(kind="transient", reason="N3_PATIENT_UNKNOWN"))
    assert send("d3") == [False]  # N3 has lost the patient...
    assert send("d3") == [True]  # ...so the retry adds it first
    assert send("d4") == [False]
    assert send("d5", family="Сельченкова") == [True]  # what AddPatient says changed
    assert send("d6", org=ORG2) == [True]  # another clinic


def test_n3_warnings_reach_the_mis_in_the_sent_status(tmp_path, store):
    """N3's RequestWarnings on a taken document go to the МИС in the "sent" status event, code and text."""
    t = N3Like(store=store)
    warning = ("N3:7", "N3 7 [Header]: Заголовок короткий")
    t.outcomes.append(SubmitOutcome(kind="accepted", reason="ACCEPTED", warnings=(warning,)))
    outputs = asyncio.run(
        Submitter(config=_n3_config(tmp_path), store=store, transports={"n3": t}).handle(_n3_record()[0])
    )
    status = next(json.loads(o.value)["data"] for o in outputs if o.topic == STATUS_TOPIC)
    assert (status["status"], status["warnings"]) == ("sent", [{"code": "N3:7", "message": warning[1]}])


def test_an_n3_kind_without_a_code_never_leaves_the_sender(tmp_path, store):
    """A kind the organisations file's dictionary does not code (replaced since the signer passed it) is refused by
    the sender before any attempt: N3_KIND_UNMAPPED naming the kind and the dictionary's version."""
    export = tmp_path / "nsi-195.json"
    export.write_text(json.dumps({"oid": "1.2.643.2.69.1.1.1.195", "version": "375", "items": []}))
    t = N3Like(store=store)
    config = _n3_config(tmp_path, n3_dictionary=str(export))
    with pytest.raises(PermanentError) as exc:
        asyncio.run(Submitter(config=config, store=store, transports={"n3": t}).handle(_n3_record()[0]))
    assert (
        exc.value.reason == "N3_KIND_UNMAPPED"
        and "kind 119" in exc.value.message
        and "375" in exc.value.message
    )
    assert t.requests == [] and store.get("doc-1", organization=ORG) is None
