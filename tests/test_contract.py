"""The contract at the door (producer.contract): a created record's key, headers, schema and kind-on-date, checked
alike by the signer, the МИС library and `emd publish --dry-run`."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import pytest

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS, write_dev_config
from producer import contract, events, topology
from producer.client import DocumentPublisher, InvalidDocument, build_created_event
from producer.errors import PermanentError
from services.cli import main as emd
from services.messaging.records import Record
from services.pipeline.document_signer import DocumentSigner
from services.pipeline.organizations import load_organizations
from tests import signing_lab as lab


@pytest.fixture(scope="module")
def breaches():
    return {b.name: b for b in lab.contract_breaches(uuid.uuid4().hex[:8])}


def _refusal(breach: lab.Breach) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        contract.read_record(breach.key, breach.headers, events.encode(breach.event))
    return info.value


@pytest.mark.parametrize(
    "name", ["wrong_key", "missing_header", "kind_not_on_date", "position_without_version"]
)
def test_each_breach_is_refused_at_the_door_with_its_reason_and_field(breaches, name):
    """A key other than the localUid, a missing header, a kind not in force on the creation date and a position
    code without its codeSystemVersion are each refused with their own reason, naming the field."""
    breach = breaches[name]
    error = _refusal(breach)
    assert (error.reason, error.details["field"]) == (breach.reason, breach.field), error.message


def test_a_well_formed_record_passes_the_door():
    """The record the МИС library sends (key = localUid, the three headers) passes every check."""
    event = lab.created_data(lab.variant(uid=f"fine-{uuid.uuid4().hex[:8]}"))
    key, headers = event["data"]["localUid"], events.headers_for(event)
    assert contract.read_record(key, headers, events.encode(event))["eventId"] == event["eventId"]


def test_a_header_that_disagrees_with_the_event_is_refused():
    """emd-trace-id must be the event's traceId (a tracer reads one, support the other)."""
    event = lab.created_data(lab.variant(uid=f"mismatch-{uuid.uuid4().hex[:8]}"))
    headers = dict(events.headers_for(event))
    headers[events.HEADER_TRACE_ID] = events.new_trace_id().encode()
    with pytest.raises(PermanentError) as info:
        contract.check_record(event["data"]["localUid"], headers, event)
    assert (info.value.reason, info.value.details["field"]) == ("HEADER_MISMATCH", "headers.emd-trace-id")


def test_a_record_without_a_key_is_refused():
    """No key at all is refused like a wrong one: the document's events would be spread over partitions."""
    event = lab.created_data(lab.variant(uid=f"nokey-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(PermanentError) as info:
        contract.check_record(None, events.headers_for(event), event)
    assert info.value.reason == "KEY_NOT_LOCAL_UID"


def test_the_schema_requires_the_version_of_every_code_the_sender_sends():
    """if/then: a speciality code without its codeSystemVersion, a medical-organisation recipient without its OID
    and a representative without a СНИЛС are schema errors, before anything is signed."""
    data = lab.created_data(lab.variant(uid="schema-1"))["data"]
    speciality = copy.deepcopy(data)
    speciality["signers"][0].update(specialityCode="27", specialityCodeSystemVersion=None)
    organization = {**data, "recipient": {"kind": "MEDICAL_ORGANIZATION", "organizationOid": None}}
    representative = {**data, "recipient": {"kind": "PATIENT_REPRESENTATIVE", "organizationOid": None}}
    no_position = copy.deepcopy(data)
    no_position["signers"][0]["positionCode"] = None
    for broken, field in (
        (speciality, "data.signers[0].specialityCodeSystemVersion"),
        (organization, "data.recipient.organizationOid"),
        (representative, "data.recipient.snils"),
        (no_position, "data.signers[0].positionCode"),
    ):
        with pytest.raises(PermanentError) as info:
            events.new_event(events.CREATED, broken, source="schema-test")
        assert (info.value.reason, info.value.details["field"]) == ("EVENT_INVALID", field)


def test_a_kind_unknown_to_the_shipped_nsi_is_left_to_remd():
    """The door judges dates only of kinds it knows: an unknown code is no refusal here."""
    assert contract.kind_date_problem("999999", "2001-01-01T00:00:00+03:00") is None
    assert contract.kind_date_problem("119", "2021-12-31T23:59:00+03:00") is not None
    assert contract.kind_date_problem("119", "2022-01-01T00:00:00+03:00") is None


def test_the_producer_refuses_a_document_dated_before_its_kind(tmp_path):
    """The МИС library refuses, before storing or sending, a СЭМД created before its kind came into force."""
    early = lab.variant(uid="early-1").replace(lab.GOOD_TIME, lab.BEFORE_KIND)
    with pytest.raises(InvalidDocument) as info:
        build_created_event(early, system_id="test", store=None)
    assert (info.value.reason, info.value.field) == ("KIND_NOT_VALID_ON_DATE", "kind")
    assert "01.01.2022" in info.value.message and "2021-01-25" in info.value.message


def test_the_mis_library_refuses_to_send_a_breaching_event(breaches):
    """DocumentPublisher.send checks an event built elsewhere as the signer will: a kind not on its date is
    InvalidDocument, and nothing reaches the broker (none is needed to see it)."""
    publisher = DocumentPublisher.__new__(DocumentPublisher)  # no broker: send() refuses before producing
    publisher.topic = topology.created_topic(DEV_MIS_ID).name
    with pytest.raises(InvalidDocument) as info:
        publisher.send(breaches["kind_not_on_date"].event)
    assert info.value.reason == "KIND_NOT_VALID_ON_DATE"


@pytest.fixture(scope="module")
def signer_config(tmp_path_factory):
    path = write_dev_config(
        tmp_path_factory.mktemp("door") / "cfg", oids=[lab.GOOD_OID], doctors=[lab.AUTHOR]
    )
    return load_organizations(path)


class _Untouchable:
    """A document store that fails the test if the signer reads or writes anything."""

    def __getattr__(self, name):
        raise AssertionError(f"the signer used the document store ({name}) for a record refused at the door")


@pytest.mark.parametrize(
    "name", ["wrong_key", "missing_header", "kind_not_on_date", "position_without_version"]
)
def test_the_signer_refuses_each_breach_before_fetching_or_signing(breaches, signer_config, name):
    """DocumentSigner.handle raises each breach's reason for the record the МИС sent, without touching the
    document store or signing (the signer stage then dead-letters it: tests/test_signer_worker.py)."""
    breach = breaches[name]
    signed: list[str] = []

    async def sign(data, document, now):
        signed.append(data["localUid"])
        return {}

    record = Record(
        topic=topology.created_topic(DEV_MIS_ID).name,
        partition=0,
        offset=0,
        key=breach.key,
        value=events.encode(breach.event),
        headers={k: v.encode() for k, v in breach.headers.items()},
        timestamp_ms=0,
    )
    signer = DocumentSigner(config=signer_config, store=_Untouchable(), sign=sign)
    with pytest.raises(PermanentError) as info:
        asyncio.run(signer.handle(record))
    assert (info.value.reason, info.value.details.get("field")) == (breach.reason, breach.field)
    assert signed == []


@pytest.mark.parametrize(
    "name", ["wrong_key", "missing_header", "kind_not_on_date", "position_without_version"]
)
def test_emd_publish_dry_run_refuses_each_breach_of_a_record(breaches, tmp_path, capsys, name):
    """`emd publish --dry-run --record REC.json` names the same reason the signer gives, and exits 1."""
    breach = breaches[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(breach.record_json(), ensure_ascii=False), encoding="utf-8")
    assert emd(["publish", "--dry-run", "--record", str(path)]) == 1
    assert f"[{breach.reason}]" in capsys.readouterr().err


def test_emd_publish_dry_run_accepts_a_well_formed_record(tmp_path, capsys):
    """A record as the МИС library would send it passes `--dry-run --record`, and nothing is published."""
    event = lab.created_data(lab.variant(uid=f"dry-{uuid.uuid4().hex[:8]}"))
    record = {
        "key": event["data"]["localUid"],
        "headers": {k: v.decode() for k, v in events.headers_for(event)},
        "value": json.dumps(event, ensure_ascii=False),
    }
    path = tmp_path / "good.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    assert emd(["publish", "--dry-run", "--record", str(path)]) == 0
    assert "record valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ((lab.GOOD_TIME, lab.BEFORE_KIND), "KIND_NOT_VALID_ON_DATE"),
        ((lab.POSITION, lab.POSITION_NO_VERSION), "MISSING_FIELD"),
    ],
)
def test_emd_publish_dry_run_refuses_a_document_the_signer_would_refuse(tmp_path, capsys, edit, reason):
    """A СЭМД dated before its kind, or whose author's position has no codeSystemVersion, is refused by
    `emd publish --dry-run` with its reason, before anything is stored or sent."""
    path = tmp_path / "doc.xml"
    path.write_bytes(lab.variant(uid="dry-doc").replace(*edit))
    code = emd(["publish", "--dry-run", "--mis", DEV_MIS_ID, "--system-id", DEV_SYSTEM_IDS[0], str(path)])
    assert code == 1 and f"[{reason}]" in capsys.readouterr().err


def test_record_needs_dry_run():
    """--record only checks: without --dry-run it is a usage error (exit 2), nothing is sent."""
    assert emd(["publish", "--record", "rec.json"]) == 2
