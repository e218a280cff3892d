"""Who may sign for whom (docs/security.md): the signer's handler refuses a МИС outside its grant before it
fetches or signs anything, fails closed on unvalidated kinds, and signs for a doctor only with a recorded consent.

Each test reproduces an attack or a misconfiguration on the signer's own handler (the runtime that dead-letters
its PermanentError is tested in tests/test_signer_worker.py, on the real broker)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS, write_dev_config
from producer import events, topology
from producer.client import build_created_event
from producer.errors import PermanentError
from services.documents.store import FilesystemStore
from services.messaging.records import Record
from services.pipeline import signing
from services.pipeline.document_signer import DocumentSigner
from services.pipeline.organizations import load_organizations
from tests import signing_lab as lab

A_ORG, B_ORG = lab.GOOD_OID, "1.2.643.5.1.13.13.12.2.77.7832"
A_MIS, B_MIS = "clinic-a-mis", "clinic-b-mis"
STRANGER = "12345678901"  # a doctor configured in both clinics whom the sample does not name


class SpyStore:
    """A claim-check store that counts what is read from it and written to it."""

    def __init__(self, real: FilesystemStore) -> None:
        self.real, self.gets, self.puts = real, [], []

    def get(self, ref: str, **limits) -> bytes:
        self.gets.append(ref)
        return self.real.get(ref, **limits)

    def put(self, data: bytes) -> str:
        self.puts.append(len(data))
        return self.real.put(data)


class SpySigner:
    """A doctor's key that counts the signatures made with it."""

    def __init__(self, real) -> None:
        self.real, self.signed = real, 0

    def sign(self, *args, **kwargs):
        self.signed += 1
        return self.real.sign(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _config(tmp_path, mutate=None):
    """Two clinics, МИС A granted only A's, МИС B only B's; the author of the good sample a doctor of both."""
    path = write_dev_config(tmp_path / "cfg", oids=[A_ORG, B_ORG], doctors=[lab.AUTHOR, STRANGER])
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["mis"] = [
        {"id": A_MIS, "organizations": [A_ORG], "systemIds": ["a-01"]},
        {"id": B_MIS, "organizations": [B_ORG], "systemIds": ["b-01"]},
        {"id": DEV_MIS_ID, "organizations": [A_ORG, B_ORG], "systemIds": list(DEV_SYSTEM_IDS)},
    ]
    if mutate is not None:
        mutate(raw)
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return load_organizations(path)


def _record(event, mis_id: str) -> Record:
    return Record(
        topic=topology.created_topic(mis_id).name,
        partition=0,
        offset=0,
        key=event["data"]["localUid"],
        value=events.encode(event),
        headers=dict(events.headers_for(event)),
        timestamp_ms=0,
    )


def _event(document: bytes, store, *, system_id: str):
    """The created event a МИС builds, the document by claim-check reference (as a large one travels)."""
    return build_created_event(document, system_id=system_id, store=store, inline_limit=0)


def _handle(config, store, record, signed: list):
    async def sign(data, document, now):
        signed.append(data["localUid"])
        return await asyncio.to_thread(signing.sign_document, data, document, config, now=now)

    return asyncio.run(DocumentSigner(config=config, store=store, sign=sign).handle(record))


@pytest.mark.parametrize(
    ("mis_id", "system_id", "field"),
    [
        (A_MIS, "a-01", "organizationOid"),  # МИС A publishing clinic B's document, under its own systemId
        (B_MIS, "a-01", "systemId"),  # МИС B publishing its own clinic's, as A's system
        ("unknown-mis", "b-01", "misId"),  # a topic of no МИС the organisations file knows
    ],
)
def test_a_document_outside_its_writers_grant_is_refused_before_it_is_fetched_or_signed(
    tmp_path, mis_id, system_id, field
):
    """The attack: a МИС publishes clinic B's document (B's doctor, B's custodian). The signer refuses it with
    ORGANIZATION_NOT_ALLOWED, naming what is outside the grant, before reading the claim-check store or signing."""
    config = _config(tmp_path)
    store = SpyStore(FilesystemStore(tmp_path / "docs"))
    event = _event(lab.variant(B_ORG, "attack-1"), store, system_id=system_id)
    store.puts.clear()
    signed: list = []
    with pytest.raises(PermanentError) as refused:
        _handle(config, store, _record(event, mis_id), signed)
    assert (refused.value.reason, refused.value.details["field"]) == ("ORGANIZATION_NOT_ALLOWED", field)
    assert (store.gets, store.puts, signed) == ([], [], [])


def test_a_document_inside_the_grant_is_signed_and_its_mis_travels_on(tmp_path):
    """МИС B publishing for clinic B is signed; the signed event names МИС B (from the topic), and the МИС's
    "signed" status goes to B's status topic only."""
    config = _config(tmp_path)
    store = SpyStore(FilesystemStore(tmp_path / "docs"))
    event = _event(lab.variant(B_ORG, "ok-1"), store, system_id="b-01")
    signed: list = []
    outs = _handle(config, store, _record(event, B_MIS), signed)
    assert signed == ["ok-1"] and len(store.gets) == 1
    assert [o.topic for o in outs] == [topology.SIGNED.name, topology.status_topic(B_MIS).name]
    data = events.decode(outs[0].value, events.SIGNED)["data"]
    assert (data["misId"], data["organizationOid"]) == (B_MIS, B_ORG)
    status = events.decode(outs[1].value, events.STATUS)["data"]
    assert (status["status"], status["misId"], status["organizationOid"]) == ("signed", B_MIS, B_ORG)


def _unvalidated_sample() -> tuple[bytes, str]:
    """A Ministry sample the producer accepts whose kind no shipped XSD or Schematron checks."""
    for path in lab.accepted_samples():
        data = path.read_bytes()
        kind = lab.created_data(data)["data"]["kind"]
        if not signing.is_validated(kind):
            return data, kind
    raise AssertionError("every accepted sample's kind is validated: pick another unvalidated document")


def test_a_kind_without_a_shipped_schema_is_refused_unless_the_organisation_allows_it(tmp_path):
    """Fail closed: a document of a kind no XSD or Schematron is shipped for is refused KIND_NOT_VALIDATED, and
    nothing is signed, unless the operator allowed that kind (or every such kind) for its organisation."""
    document, kind = _unvalidated_sample()
    data = lab.created_data(document)["data"]
    doctors = [s["snils"] for s in data["signers"]]
    for n, (allowed, signs) in enumerate(((False, False), ([kind], True), (["1"], False), (True, True))):
        path = write_dev_config(
            tmp_path / f"cfg-{n}",
            oids=[data["organizationOid"]],
            doctors=doctors,
            allow_unvalidated_kinds=False,
        )
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["organizations"][0]["allow_unvalidated_kinds"] = allowed
        path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
        config = load_organizations(path)
        if signs:
            assert signing.sign_document(data, document, config)["personal"], allowed
            continue
        with pytest.raises(PermanentError) as refused:
            signing.sign_document(data, document, config)
        assert (refused.value.reason, refused.value.details["kind"]) == ("KIND_NOT_VALIDATED", kind)


def test_a_doctors_key_signs_nothing_without_the_doctors_recorded_consent(tmp_path):
    """Server-side signing needs more than the МИС's asking: a doctor whose consent is not recorded in the
    organisations file is refused SERVER_SIGNING_NOT_CONSENTED, and no signature is made with the key held here."""

    def no_consent(raw):
        for org in raw["organizations"]:
            for doctor in org["signing"]["doctors"].values():
                doctor.pop("server_signing_consent")

    config = _config(tmp_path, no_consent)
    doctor = config.organizations[A_ORG].doctors[lab.AUTHOR]
    key = SpySigner(doctor.signer())
    doctor._signer = key
    document = lab.variant(A_ORG, "consent-1")
    data = lab.created_data(document)["data"]
    with pytest.raises(PermanentError) as refused:
        signing.sign_document(data, document, config, now=dt.datetime.now(dt.UTC))
    assert refused.value.reason == "SERVER_SIGNING_NOT_CONSENTED" and key.signed == 0
    consented = _config(tmp_path / "again")  # the same doctor with the consent recorded: signed
    assert signing.sign_document(data, document, consented)["personal"][0]["source"] == "server"


def test_a_doctor_the_document_does_not_name_is_never_signed_for(tmp_path):
    """A МИС cannot ask for the signature of a configured doctor the CDA does not name as its author or legal
    authenticator: the event's signers must be the document's (EVENT_DOCUMENT_MISMATCH), before any signature."""
    config = _config(tmp_path)
    document = lab.variant(A_ORG, "stranger-1")
    data = lab.created_data(document)["data"]
    data["signers"] = [dict(data["signers"][0], snils=STRANGER)]
    with pytest.raises(PermanentError) as refused:
        signing.sign_document(data, document, config)
    assert refused.value.reason == "EVENT_DOCUMENT_MISMATCH"
