"""producer.cda and producer.nsi: header extraction from every sample the repository carries, and kind resolution."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from lab.dev.samples import REPOSITORY_SAMPLES as SAMPLES  # noqa: E402
from producer import cda, nsi
from producer.cda import NotCda, extract, parse_hl7_time
from producer.xmlsafe import parse_xml

ALL = sorted(p.name for p in SAMPLES.glob("*.xml"))

#: 1520 kind per sample, as lab/data/samples/SOURCES.md lists it (None = legacy template, no 1520 row)
KINDS = {
    "AmbCase.xml": None,
    "AmbCasev4.xml": "92",
    "AmbStagedV2.xml": "200",
    "BirthCertificate.xml": "76",
    "CertOnPayForMedServ.xml": "100",
    "ConclusionVaccineComplication.xml": "142",
    "Consult.xml": None,
    "ConsultRedaction3.xml": "68",
    "ConsultRedaction4.xml": "119",
    "ConsultRedaction5.xml": "227",
    "DDResults.xml": "96",
    "DeathCertificate.xml": "58",
    "Drugs.xml": "64",
    "ElderlyCareAssessment.xml": "143",
    "EpicrisisV5.xml": "147",
    "EpidContact.xml": "80",
    "GroupForPhysicalEducation.xml": "82",
    "Instrumentalv3.xml": "110",
    "Laboratory.xml": None,
    "LeaveCountry.xml": "88",
    "MedExamination.xml": "191",
    "MedReportOnResMedExam2.xml": "194",
    "MedicalExamForELMKSubsystem.xml": "230",
    "MedicalManipulationProtocol.xml": "163",
    "PerinatalDeathCertificate.xml": "59",
    "ProstheticsIndicationCert.xml": "144",
    "ReferralCabinet.xml": "85",
    "ReturnSanatory.xml": "182",
    "ReturnSanatoryChild.xml": "183",
    "SMPCard.xml": "91",
    "Sanatory.xml": "65",
    "Sport.xml": "83",
    "StudentTempInvalid.xml": "81",
    "SwimmingPool.xml": "84",
    "Weapon.xml": "63",
    "WeaponNotification.xml": "116",
    "WorkAtHeightCertificate.xml": "101",
}
#: samples whose effectiveTime is not a date-time with offset, and why (Ministry examples leave it empty)
NO_CREATION_TIME = {
    "BirthCertificate.xml": "date without time",
    "DeathCertificate.xml": "date without time",
    "Laboratory.xml": "date without time",
    **{
        n: "nullFlavor=NA"
        for n in (
            "AmbStagedV2.xml",
            "ConsultRedaction5.xml",
            "EpicrisisV5.xml",
            "MedExamination.xml",
            "MedReportOnResMedExam2.xml",
            "MedicalExamForELMKSubsystem.xml",
            "ProstheticsIndicationCert.xml",
        )
    },
}


def _meta(name: str):
    return extract(parse_xml((SAMPLES / name).read_bytes()))


def test_every_repository_sample_is_listed():
    """The test knows every sample the repository carries: 37 files, each with an expected kind."""
    assert len(ALL) == 37 and set(ALL) == set(KINDS)


@pytest.mark.parametrize("name", ALL)
def test_every_sample_extracts(name):
    """Each sample yields localUid, organisation, patient and signers; kind and creation time are either
    derived or missing with the expected named reason."""
    m = _meta(name)
    assert m.local_uid and m.id_root and m.organization_oid and m.organization_oid.startswith("1.2.643.")
    assert m.document_number and m.version_number and m.patient is not None and m.signers
    assert m.kind_code == KINDS[name]
    if KINDS[name] is None:
        assert "legacy third-level template" in m.missing["kind"]
    if name in NO_CREATION_TIME:
        assert m.creation_time is None and NO_CREATION_TIME[name] in m.missing["creationTime"]
    else:
        assert m.creation_time is not None and m.creation_time.utcoffset() is not None
    for key in m.missing:
        assert key.split("[")[0].split(".")[0] in {
            "kind",
            "creationTime",
            "departmentOid",
            "patient",
            "signers",
        }, key


def test_consult_redaction4_header_in_detail():
    """ConsultRedaction4: every header field as written in the document."""
    m = _meta("ConsultRedaction4.xml")
    assert (m.local_uid, m.id_root) == ("144632", "1.2.643.5.1.13.13.12.2.77.7831.100.1.1.51")
    # re-dated to the first day kind 119 is registrable (lab/data/samples/SOURCES.md)
    assert m.creation_time == datetime(2022, 1, 1, 16, 0, tzinfo=timezone(timedelta(hours=3)))
    assert (m.kind.code, m.kind.method) == ("119", "derived")
    assert m.document_number == "163725" and m.version_number == 1
    assert m.organization_oid == "1.2.643.5.1.13.13.12.2.77.7831"
    assert m.department_oid == "1.2.643.5.1.13.13.12.2.77.7831.0.364471"
    p = m.patient
    assert (p.snils, p.local_id, p.gender, p.birth_date) == ("25463625426", "735486", "1", date(1960, 2, 17))
    assert p.family and p.given and p.patronymic
    roles = [(s.role, s.snils, s.position_code) for s in m.signers]
    assert roles == [("author", "52415372312", "34"), ("legalAuthenticator", "52415372312", "34")]
    assert m.requires_patient_snils is True and m.missing == {}


def test_kind_methods_on_samples():
    """In-document 1520 codes, GIT_LINK templateIds and derived type+edition each resolve as documented."""
    assert _meta("AmbStagedV2.xml").kind.method == "in_doc"
    assert _meta("MedReportOnResMedExam2.xml").kind.method == "template_id"
    assert _meta("BirthCertificate.xml").kind.code == "76"  # not its "paper form" twin 118
    # 227 is newer than НСИ v12.14: a row of the supplement, whose rules are unknown
    assert _meta("ConsultRedaction5.xml").kind.kind.source == nsi.SOURCE_SUPPLEMENT
    assert "kind.rules" in _meta("ConsultRedaction5.xml").missing


def test_named_reasons_for_missing_people_fields():
    """Malformed or absent СНИЛС are reported per person with the reason."""
    assert "not 11 digits" in _meta("AmbCasev4.xml").missing["patient.snils"]
    assert "1.2.643.100.3" in _meta("BirthCertificate.xml").missing["patient.snils"]
    assert (
        "not 11 digits"
        in _meta("ProstheticsIndicationCert.xml").missing["signers[legalAuthenticator 0].snils"]
    )
    assert (
        "legalAuthenticator" in _meta("MedicalExamForELMKSubsystem.xml").missing["signers.legalAuthenticator"]
    )


def test_not_cda_is_rejected():
    """A root element other than hl7 ClinicalDocument raises NotCda."""
    with pytest.raises(NotCda):
        extract(parse_xml(b"<ClinicalDocument/>"))


def test_parse_hl7_time():
    """HL7 timestamps become aware datetimes; dates stay dates; a time without offset is refused."""
    assert parse_hl7_time("202101251600+0300") == datetime(
        2021, 1, 25, 16, tzinfo=timezone(timedelta(hours=3))
    )
    assert parse_hl7_time("20220207162530.5-0130").microsecond == 500000
    assert parse_hl7_time("19580217") == date(1958, 2, 17)
    for bad in ("202101251600", "2021", "abc", "20210125+0300"):
        with pytest.raises(ValueError):
            parse_hl7_time(bad)


def test_nsi_dump_and_requirements():
    """The official НСИ dump has 181 kinds and the supplement adds 120; PATIENT_INFO maps to the patient/СНИЛС
    requirements."""
    kinds = nsi.all_kinds()
    official = {c for c, k in kinds.items() if k.source == nsi.SOURCE_OFFICIAL}
    assert (len(official), len(kinds)) == (181, 301)
    k = nsi.kind_by_code("99")
    assert k.type_code == "347" and k.edition == 1 and k.template_id == "1.2.643.5.1.13.13.15.75.1"
    assert k.requires_patient and k.requires_patient_snils and k.organization_signature
    assert not nsi.kind_by_code("76").requires_patient_snils
    assert nsi.kind_by_code("100000") is None


def test_nsi_resolution_rules():
    """kind_for_document applies in-doc, then templateId, then derived; ambiguity returns nothing."""
    assert nsi.kind_for_document("5", "1.2.643.5.1.13.13.11.1520", []).method == "in_doc"
    m = nsi.kind_for_document("x", "y", ["1.2.643.5.1.13.13.15.75.1"])
    assert (m.code, m.method) == ("99", "template_id")
    m = nsi.kind_for_document("5", "1.2.643.5.1.13.13.11.1522", ["1.2.643.5.1.13.13.14.5.9.4"])
    assert (m.code, m.method) == ("119", "derived")
    # type 33 edition 4 is both 76 and 118: without a display name it is ambiguous
    assert nsi.kind_for_document(None, None, ["1.2.643.5.1.13.2.7.5.1.33.9.4"]) is None
    assert (
        nsi.kind_for_document(
            None, None, ["1.2.643.5.1.13.2.7.5.1.33.9.4"], display_name="Медицинское свидетельство о рождении"
        ).code
        == "76"
    )
    assert "legacy" in nsi.explain_no_kind("5", "1.2.643.5.1.13.13.11.1115", ["1.2.643.5.1.13.2.7.5.1.5.3"])


def test_speciality_from_function_code_and_signer_department():
    """The author's speciality is its functionCode (НСИ 1066) with its version; each signer's department is its
    representedOrganization when that is a unit of the organisation, and positions carry their version."""
    meta = cda.extract(parse_xml((SAMPLES / "Consult.xml").read_bytes()))
    author = next(s for s in meta.signers if s.role == "author")
    assert (author.speciality_code, author.speciality_version) == ("118", "4.1")
    assert (author.position_code, author.position_version) == ("34", "2.2")
    redaction4 = cda.extract(parse_xml((SAMPLES / "ConsultRedaction4.xml").read_bytes()))
    assert {s.department_oid for s in redaction4.signers} == {"1.2.643.5.1.13.13.12.2.77.7831.0.364471"}


def test_recipient_skips_the_ministry_and_null_flavours():
    """The recipient is the first informationRecipient that is not РЭМД itself and has an OID."""
    assert cda.extract(parse_xml((SAMPLES / "Consult.xml").read_bytes())).recipient is None
    assert cda.extract(parse_xml((SAMPLES / "LeaveCountry.xml").read_bytes())).recipient is None  # nullFlavor
    smp = cda.extract(parse_xml((SAMPLES / "SMPCard.xml").read_bytes())).recipient
    assert smp == cda.Recipient(organization_oid="1.2.643.5.1.13.13.12.2.77.8330")


def test_the_supplement_adds_kinds_and_changes_no_official_row():
    """A supplement row is a kind the official dump lacks, with its dates and templateId but unknown rules; the
    supplement file names no ID of the official dump (docs: producer/data/nsi/README.md)."""
    import csv
    from importlib import resources

    folder = resources.files("producer").joinpath("data", "nsi")
    supplement = {r["ID"] for r in csv.DictReader(folder.joinpath(nsi._SUPPLEMENT).open(encoding="utf-8"))}
    official = {c for c, k in nsi.all_kinds().items() if k.source == nsi.SOURCE_OFFICIAL}
    assert len(supplement) == 120 and not supplement & official
    consult5 = nsi.kind_by_code("227")
    assert (consult5.type_code, consult5.edition, consult5.template_id) == (
        "5",
        5,
        "1.2.643.5.1.13.13.15.13.5",
    )
    assert (consult5.start_date, consult5.requires_patient_snils, consult5.organization_signature) == (
        "07.03.2024",
        None,
        None,
    )
    assert (
        nsi.kind_by_code("100").end_date is None
    )  # 12.14 says it is open: the seed's 01.07.2025 is not applied


def _xpath_value(node, path: str) -> str | None:
    """The first node's text or attribute value a published XPath selects, stripped (None: nothing)."""
    from lxml import etree

    found = etree.XPath(path, namespaces=cda.NS)(node)
    if not found:
        return None
    first = found[0]
    text = first if isinstance(first, str) else "".join(first.itertext())
    return text.strip() or None


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.xml")), ids=lambda p: p.name)
def test_the_published_xpaths_read_what_extract_reads(path):
    """cda.FIELD_XPATHS and SIGNER_XPATHS (what docs/integration.md and docs/asyncapi.yaml give a МИС in another
    language) select, on every sample, the values extract() reads, where it reads them by that path."""
    root = parse_xml(path.read_bytes())
    m = extract(root)
    x = {field: _xpath_value(root, p) for field, p in cda.FIELD_XPATHS.items()}
    assert (x["localUid"], x["organizationOid"], x["documentNumber"]) == (
        m.local_uid,
        m.organization_oid,
        m.document_number,
    )
    assert x["creationTime"] == m.creation_time_raw
    if m.kind is not None and m.kind.method == "in_doc":
        assert x["kind"] == m.kind.code
    if m.department_oid is not None:
        assert x["departmentOid"] == m.department_oid
    if m.patient is not None:
        p = m.patient
        assert (x["patient.localId"], x["patient.family"], x["patient.given"], x["patient.gender"]) == (
            p.local_id,
            p.family,
            p.given,
            p.gender,
        )
        if p.snils is not None:
            assert x["patient.snils"].replace("-", "").replace(" ", "") == p.snils
        assert x["patient.patronymic"] == p.patronymic
    entities = [
        (role, entity)
        for role, entity_path in cda.SIGNER_ENTITIES.items()
        for entity in _nodes(root, entity_path)
    ]
    assert [role for role, _ in entities] == [s.role for s in m.signers]
    for (_, entity), signer in zip(entities, m.signers, strict=True):
        v = {field: _xpath_value(entity, p) for field, p in cda.SIGNER_XPATHS.items()}
        assert (v["localId"], v["family"], v["given"]) == (signer.local_id, signer.family, signer.given)
        if signer.snils is not None:
            assert v["snils"].replace("-", "").replace(" ", "") == signer.snils
        assert v["patronymic"] == signer.patronymic
        assert (v["positionCode"], v["positionCodeSystemVersion"]) == (
            signer.position_code,
            signer.position_version,
        )
        assert (v["specialityCode"], v["specialityCodeSystemVersion"]) == (
            signer.speciality_code,
            signer.speciality_version,
        )
        if signer.department_oid is not None:
            assert v["departmentOid"] == signer.department_oid


def _nodes(node, path: str) -> list:
    from lxml import etree

    return etree.XPath(path, namespaces=cda.NS)(node)
