"""producer: cross-checks against the CDA (unit) and publishing to the real broker (integration)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from lxml import etree

from lab.dev.samples import REPOSITORY_SAMPLES as SAMPLES  # noqa: E402
from producer import events
from producer.client import (
    DocumentPublisher,
    InvalidDocument,
    build_created_event,
)
from producer.errors import ConfigurationError
from producer.topology import created_topic, ensure_topics
from services.cli import main as emd
from services.documents.store import FilesystemStore, document_bytes
from tests.kafka_helpers import read_all
from tests.signing_lab import accepted_samples, refused_samples

GOOD = SAMPLES / "ConsultRedaction4.xml"
ORG = "1.2.643.5.1.13.13.12.2.77.7831"
#: the МИС these tests publish as, and its topic
MIS = "test-mis"
CREATED_TOPIC = created_topic(MIS).name


def _build(data: bytes, tmp_path: Path, **kw):
    return build_created_event(data, system_id="test-mis", store=FilesystemStore(tmp_path / "docs"), **kw)


def _rejected(data: bytes, tmp_path: Path, **kw) -> InvalidDocument:
    with pytest.raises(InvalidDocument) as info:
        _build(data, tmp_path, **kw)
    return info.value


# --- unit: cross-checks -------------------------------------------------------------------------------


def test_good_document_builds_a_valid_event(tmp_path):
    """A valid СЭМД becomes a schema-valid created event with its bytes inline."""
    data = GOOD.read_bytes()
    event = _build(
        data,
        tmp_path,
        kind="119",
        organization_oid=ORG,
        meta={"patientSnils": "254-636-254 26", "signerSnils": ["52415372312"], "localUid": "144632"},
    )
    events.validate(event, events.CREATED)
    assert event["data"]["localUid"] == "144632" and event["data"]["kind"] == "119"
    assert base64.b64decode(event["data"]["document"]["inline"]) == data


@pytest.mark.parametrize(
    ("kw", "field", "reason"),
    [
        ({"kind": "68"}, "kind", "KIND_MISMATCH"),
        ({"organization_oid": "1.2.643.5.1.13.13.12.2.77.9999"}, "organizationOid", "META_MISMATCH"),
        ({"meta": {"patientSnils": "00000000000"}}, "patient.snils", "META_MISMATCH"),
        ({"meta": {"signerSnils": ["11111111111"]}}, "signerSnils[0]", "META_MISMATCH"),
        ({"meta": {"localUid": "other"}}, "localUid", "META_MISMATCH"),
        ({"meta": {"documentNumber": "1"}}, "documentNumber", "META_MISMATCH"),
        ({"meta": {"creationTime": "2022-01-01T16:00:00+04:00"}}, "creationTime", "META_MISMATCH"),
        ({"meta": {"departmentOid": "1.2.3"}}, "departmentOid", "META_MISMATCH"),
        ({"meta": {"patient_snils": "1"}}, "meta.patient_snils", "META_UNKNOWN_FIELD"),
        ({"meta": {"signatures": {"52415372312": "not base64!"}}}, "signatures", "META_MISMATCH"),
    ],
)
def test_caller_contradicting_the_document_is_rejected(tmp_path, kw, field, reason):
    """Caller metadata that contradicts the CDA header is refused, naming the field."""
    err = _rejected(GOOD.read_bytes(), tmp_path, **kw)
    assert (err.field, err.reason) == (field, reason)
    assert not (tmp_path / "docs").exists()  # nothing stored for a refused document


def test_matching_creation_time_in_another_offset_is_accepted(tmp_path):
    """The same instant written in UTC agrees with the document's +03:00 effectiveTime."""
    event = _build(GOOD.read_bytes(), tmp_path, meta={"creationTime": "2022-01-01T13:00:00+00:00"})
    assert event["data"]["creationTime"] == "2022-01-01T16:00:00+03:00"


def test_signature_from_the_mis_is_attached_to_its_signer(tmp_path):
    """A doctor's detached signature passed in meta lands on the signer with that СНИЛС."""
    event = _build(GOOD.read_bytes(), tmp_path, meta={"signatures": {"524-153-723 12": "MIIB"}})
    assert {s["role"]: s.get("signature") for s in event["data"]["signers"]} == {
        "author": "MIIB",
        "legalAuthenticator": "MIIB",
    }


def test_legacy_template_needs_a_kind_of_the_same_type(tmp_path):
    """A legacy template is published only with an explicit kind whose 1522 type matches the template, and dated
    when that kind is in force."""
    data = (SAMPLES / "Consult.xml").read_bytes()
    assert _rejected(data, tmp_path).reason == "KIND_UNKNOWN"
    assert _rejected(data, tmp_path, kind="99").reason == "KIND_MISMATCH"  # 99 is type 347, Consult is 5
    # Протокол консультации Редакция 2 is registrable from 16.02.2019; the example is dated 2017
    assert _rejected(data, tmp_path, kind="16").reason == "KIND_NOT_VALID_ON_DATE"
    dated = data.replace(
        b'<effectiveTime value="201709251600+0300"/>', b'<effectiveTime value="201902161600+0300"/>'
    )
    assert _build(dated, tmp_path, kind="16")["data"]["kind"] == "16"


def test_department_from_meta_fills_a_document_without_one(tmp_path):
    """When the document names no structural unit, the МИС's departmentOid is used."""
    event = _build(
        (SAMPLES / "ConsultRedaction3.xml").read_bytes(), tmp_path, meta={"departmentOid": ORG + ".0.1"}
    )
    assert event["data"]["departmentOid"] == ORG + ".0.1"


@pytest.mark.parametrize(("name", "expected"), sorted(refused_samples().items()))
def test_samples_refused_for_a_precise_reason(tmp_path, name, expected):
    """Each sample the producer refuses is refused for the listed field and reason."""
    err = _rejected((SAMPLES / name).read_bytes(), tmp_path)
    assert (err.field, err.reason) == expected


# --- integration: the real broker -------------------------------------------------------------------


def _big_document() -> bytes:
    """ConsultRedaction4 with a ~10 MB base64 "PDF" in an observationMedia entry of its first leaf section."""
    root = etree.fromstring(GOOD.read_bytes())
    ns = "urn:hl7-org:v3"
    section = next(s for s in root.iter(f"{{{ns}}}section") if s.find(f"{{{ns}}}component") is None)
    entry = etree.SubElement(section, f"{{{ns}}}entry")
    media = etree.SubElement(entry, f"{{{ns}}}observationMedia", classCode="OBS", moodCode="EVN")
    value = etree.SubElement(media, f"{{{ns}}}value", mediaType="application/pdf", representation="B64")
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * (7_700_000 // 256)
    value.text = base64.b64encode(pdf).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="module")
def bootstrap(broker):
    ensure_topics(broker.bootstrap_servers, partitions=3, topics=(created_topic(MIS),))
    return broker.bootstrap_servers


def _count(bootstrap: str) -> int:
    return len(read_all(bootstrap, CREATED_TOPIC, idle=1.0))


@pytest.mark.integration
def test_bad_inputs_fail_and_publish_nothing(bootstrap, tmp_path, monkeypatch, capsys):
    """Nine kinds of bad input exit non-zero naming the field, and the topic gains no record."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMD_MIS_ID", MIS)
    good = GOOD.read_bytes()
    files = {
        "notxml.xml": b"%PDF-1.7 not xml",
        "notcda.xml": b"<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'/>",
        "xxe.xml": b'<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + good[good.index(b"<ClinicalDocument") :],
        "legacy.xml": (SAMPLES / "Consult.xml").read_bytes(),
        "nosnils.xml": good.replace(
            b'root="1.2.643.100.3" extension="25463625426"', b'root="1.2.643.100.3" extension="2546"'
        ),
        "notime.xml": good.replace(
            b'<effectiveTime value="202201011600+0300"/>', b'<effectiveTime nullFlavor="NA"/>'
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good.xml").write_bytes(good)
    (tmp_path / "meta.json").write_text(json.dumps({"patientSnils": "99999999999"}))
    before = _count(bootstrap)
    cases = [
        (["notxml.xml"], "document"),
        (["notcda.xml"], "ClinicalDocument"),
        (["xxe.xml"], "document"),
        (["legacy.xml"], "kind"),
        (["nosnils.xml"], "patient.snils"),
        (["notime.xml"], "creationTime"),
        (["good.xml", "--kind", "68"], "kind"),
        (["good.xml", "--org", "1.2.643.1"], "organizationOid"),
        (["good.xml", "--meta", str(tmp_path / "meta.json")], "patient.snils"),
        (["missing.xml"], "file"),
        (["good.xml", "notxml.xml"], "document"),  # one bad file in a batch: the good one is not sent either
    ]
    for args, field in cases + [(["good.xml"], "document")]:
        if (args, field) == (["good.xml"], "document"):
            monkeypatch.setenv("EMD_MAX_DOCUMENT_BYTES", "50000")  # the sample is 97 KB
        argv = ["publish", *[str(tmp_path / a) if a.endswith(".xml") else a for a in args]]
        code = emd(argv)
        err = capsys.readouterr().err
        assert code != 0, args
        assert f": {field}:" in err and err.count("\n") == 1, (args, err)
    assert _count(bootstrap) == before


@pytest.mark.integration
def test_every_acceptable_sample_is_published(bootstrap, tmp_path):
    """All samples not listed as refused publish, each confirmed, and the topic holds exactly them."""
    names = [p.name for p in accepted_samples()]
    assert len(names) == len(list(SAMPLES.glob("*.xml"))) - len(refused_samples()) == 24
    before = read_all(bootstrap, CREATED_TOPIC, idle=1.0)
    store = FilesystemStore(tmp_path / "docs")
    with DocumentPublisher(bootstrap, mis_id=MIS, store=store, client_id="test-mis", timeout=30) as pub:
        results = [pub.publish((SAMPLES / n).read_bytes()) for n in names]
    assert all(r.topic == CREATED_TOPIC for r in results)
    after = read_all(bootstrap, CREATED_TOPIC, idle=1.0, expect=len(before) + len(names))
    new = [r for r in after if events.decode(r.value)["eventId"] in {x.event_id for x in results}]
    assert len(after) == len(before) + len(names) and len(new) == len(names)
    # each confirmation names where its record really is
    assert {(r.event_id, r.partition, r.offset) for r in results} == {
        (events.decode(rec.value)["eventId"], rec.partition, rec.offset) for rec in new
    }
    for record in new:
        event = events.decode(record.value, expected_type=events.CREATED)
        assert record.key.decode() == event["data"]["localUid"]
        assert events.read_headers(record.headers)["emd-trace-id"] == event["traceId"]


@pytest.mark.integration
def test_ten_megabyte_document_goes_by_claim_check(bootstrap, tmp_path):
    """A ~10 MB СЭМД is stored, referenced in a small record, and its exact bytes come back from the store."""
    data = _big_document()
    assert len(data) > 10_000_000
    store = FilesystemStore(tmp_path / "docs")
    with DocumentPublisher(
        bootstrap, mis_id=MIS, store=store, client_id="test-mis", max_bytes=50 * 1024 * 1024
    ) as pub:
        done = pub.publish(data)
    records = [
        r
        for r in read_all(bootstrap, CREATED_TOPIC, idle=1.0)
        if events.decode(r.value)["eventId"] == done.event_id
    ]
    assert len(records) == 1 and len(records[0].value) < 64 * 1024
    doc = events.decode(records[0].value)["data"]["document"]
    assert doc["ref"].startswith("file://") and "inline" not in doc and doc["size"] == len(data)
    assert document_bytes(doc, store) == data


def test_dry_run_prints_each_checked_event_and_stores_nothing(tmp_path, monkeypatch, capsys):
    """emd publish --dry-run prints the valid event of every file, with the claim-check reference a large one would get, and writes no document."""
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMD_INLINE_DOCUMENT_LIMIT", "1000")  # the sample (97 KB) goes by reference
    (tmp_path / "good.xml").write_bytes(GOOD.read_bytes())
    assert emd(["publish", "--dry-run", str(tmp_path / "good.xml")]) == 0
    out = capsys.readouterr()
    event = json.loads(out.out)
    events.validate(event)
    assert event["data"]["localUid"] == "144632" and "ref" in event["data"]["document"]
    assert "1 document(s) valid, nothing published" in out.err
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))


# --- the registerDocument values of the КРЭМД names: from the CDA, else from the МИС -----------------


def _set_first(data: bytes, xpath: str, **attrs) -> bytes:
    root = etree.fromstring(data)
    el = root.xpath(xpath, namespaces={"h": "urn:hl7-org:v3"})[0]
    for k, v in attrs.items():
        if v is None:
            el.attrib.pop(k, None)
        else:
            el.set(k, v)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_signer_codes_versions_department_and_default_role_come_from_the_cda(tmp_path):
    """Each signer carries its position code with its codeSystemVersion and its department from the CDA, and,
    the CDA stating no РЭМД role, the default role DOCTOR with its dictionary version."""
    signers = _build(GOOD.read_bytes(), tmp_path)["data"]["signers"]
    author = next(s for s in signers if s["role"] == "author")
    assert (author["positionCode"], author["positionCodeSystemVersion"]) == ("34", "7.5")
    assert author["departmentOid"] == "1.2.643.5.1.13.13.12.2.77.7831.0.364471"
    assert (author["roleCode"], author["roleCodeSystemVersion"]) == ("DOCTOR", "2.4")


def test_signer_roles_come_from_the_mis_when_given(tmp_path):
    """meta.signerRoles names a signer's РЭМД role (with or without a version); a СНИЛС that signs nothing is refused."""
    event = _build(
        GOOD.read_bytes(),
        tmp_path,
        meta={"signerRoles": {"524-153-723 12": {"code": "HEAD_OF_DEPARTMENT", "codeSystemVersion": "2.5"}}},
    )
    roles = {(s["roleCode"], s["roleCodeSystemVersion"]) for s in event["data"]["signers"]}
    assert roles == {("HEAD_OF_DEPARTMENT", "2.5")}
    err = _rejected(GOOD.read_bytes(), tmp_path, meta={"signerRoles": {"11111111111": "DOCTOR"}})
    assert err.field == "signerRoles" and err.reason == "META_MISMATCH"


def test_a_position_without_its_version_is_refused_with_the_field_named(tmp_path):
    """A signer whose position code has no codeSystemVersion cannot be registered: refused, field named."""
    data = _set_first(GOOD.read_bytes(), "//h:author/h:assignedAuthor/h:code", codeSystemVersion=None)
    err = _rejected(data, tmp_path)
    assert err.reason == "MISSING_FIELD" and err.field == "signers[0] (author).positionCodeSystemVersion"


def test_recipient_and_related_documents_come_from_the_cda(tmp_path):
    """An informationRecipient other than the Ministry becomes the recipient; a relatedDocument an association."""
    root = etree.fromstring(SAMPLES.joinpath("StudentTempInvalid.xml").read_bytes())
    hl7 = "urn:hl7-org:v3"
    related = etree.Element(f"{{{hl7}}}relatedDocument", typeCode="RPLC")
    parent = etree.SubElement(related, f"{{{hl7}}}parentDocument")
    etree.SubElement(
        parent, f"{{{hl7}}}id", root="1.2.643.5.1.13.13.17.1.1", extension="16.62.23.09.000014500"
    )
    root.find(f"{{{hl7}}}legalAuthenticator").addnext(related)
    data = _build(etree.tostring(root, xml_declaration=True, encoding="UTF-8"), tmp_path)["data"]
    assert data["recipient"] == {
        "kind": "MEDICAL_ORGANIZATION",
        "organizationOid": "1.2.643.5.1.13.13.12.4.70.184",
        "snils": None,
    }
    assert data["associations"] == [{"target": "16.62.23.09.000014500", "type": "RPLC"}]
    assert _build(GOOD.read_bytes(), tmp_path)["data"]["recipient"] is None  # only the Ministry: nobody else


@pytest.mark.integration
def test_publishing_needs_the_mis_it_publishes_as(bootstrap, tmp_path, monkeypatch, capsys):
    """emd publish without --mis (or EMD_MIS_ID) publishes nothing and says how to name the МИС; a misId that could
    name another topic (dlt) is refused; the library refuses one too."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EMD_MIS_ID", raising=False)
    (tmp_path / "good.xml").write_bytes(GOOD.read_bytes())
    before = _count(bootstrap)
    assert emd(["publish", str(tmp_path / "good.xml")]) == 2
    assert "--mis" in capsys.readouterr().err
    assert emd(["publish", "--mis", "dlt", str(tmp_path / "good.xml")]) == 2
    assert "not dlt or retry" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="dlt"):
        DocumentPublisher(bootstrap, mis_id="dlt")
    assert _count(bootstrap) == before
    assert emd(["publish", "--mis", MIS, str(tmp_path / "good.xml")]) == 0
    assert f"to {CREATED_TOPIC} " in capsys.readouterr().out
