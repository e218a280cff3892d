"""The emulator's N3.Health face over HTTP: it reads requests through the project's schema and refuses, as WCF does,
what the schema refuses (a RequestFault naming the property); it takes N3's own minimal sample shapes; and our N3
transport registers a real signed document through it, AddPatient then AddMedRecord, found by the status poll."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import date

import httpx
import pytest
from lxml import etree

from lab.emulator import Emulator, Rule
from producer.cda import extract
from producer.xmlsafe import parse_xml
from services.remd import envelope, n3
from services.remd import n3_names as names
from services.remd._transports.n3 import N3Transport, build_requests
from services.remd.transport import LookupRequest
from tests.n3_helpers import N3Clinic, sample

NS = {"t": names.NS_SERVICE, "md": names.NS_MEDDOC, "d": names.NS_DTO}
WAIT = 30.0


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """A clinic on the N3 route with development keys for the consultation sample's organisation and doctors."""
    return N3Clinic.make(tmp_path_factory.mktemp("n3"), sample())


@pytest.fixture
def emu(clinic):
    emulator = Emulator(n3_tokens={clinic.token: clinic.lpu}, n3_delay=0.2).start()
    yield emulator
    emulator.stop()


def _emk(emu) -> str:
    return f"{emu.base_url}/n3/emk/EMKService.svc"


def _post(emu, service: str, operation: str, body: bytes) -> httpx.Response:
    interface = "IPixService" if operation == "AddPatient" else "IEmkService"
    return httpx.post(
        f"{emu.base_url}/n3/emk/{service}",
        content=body,
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"http://tempuri.org/{interface}/{operation}"',
        },
        timeout=WAIT,
    )


def _requests(clinic, emu, document=None, **over):
    """The two requests of one attempt for a fresh signed document: (AddPatient bytes, AddMedRecord bytes, signed)."""
    document = document or sample()
    signed = clinic.signed(document)
    request = clinic.request(signed, document, endpoint=_emk(emu), **over)
    calls = build_requests(request)
    return calls[0][2], calls[-1][2], signed, document


def _fault(response: httpx.Response) -> n3.N3Answer:
    assert response.status_code == 500, response.text
    answer = n3.parse_answer(response.content, "AddMedRecord")
    assert answer.errors, response.text
    return answer


def _serialised_with(body: bytes, change) -> bytes:
    root = etree.fromstring(body)
    change(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --- what the schema refuses ----------------------------------------------------------------------------------


def test_an_element_out_of_order_is_refused_naming_it(clinic, emu):
    """CreationDate moved before Attachments (WCF would read it as missing) is refused: PropertyName CreationDate."""
    patient, record, _, _ = _requests(clinic, emu)
    assert _post(emu, "PixService.svc", "AddPatient", patient).status_code == 200

    def move(root):
        med = root.find(".//t:medRecord", NS)
        med.insert(0, med.find("md:CreationDate", NS))

    answer = _fault(_post(emu, "EMKService.svc", "AddMedRecord", _serialised_with(record, move)))
    assert answer.errors[0].property_name == "CreationDate"
    assert "CreationDate" in answer.errors[0].message and "not expected" in answer.errors[0].message


def test_given_name_outside_human_name_is_refused_naming_it(clinic, emu):
    """A doctor's GivenName directly under Person (our old shape) is refused: PropertyName GivenName."""
    _, record, _, _ = _requests(clinic, emu)

    def flatten(root):
        person = root.find(".//md:Author/d:Person", NS)
        human = person.find("d:HumanName", NS)
        person.insert(0, human.find("d:GivenName", NS))

    answer = _fault(_post(emu, "EMKService.svc", "AddMedRecord", _serialised_with(record, flatten)))
    assert answer.errors[0].property_name == "GivenName"


def test_idlpu_on_add_case_is_refused_naming_it(clinic, emu):
    """AddCase with AddMedRecord's idLpu (our old request) is refused: PropertyName idLpu."""
    _, record, _, _ = _requests(clinic, emu)

    def as_add_case(root):
        call = root.find(".//t:AddMedRecord", NS)
        call.tag = f"{{{names.NS_SERVICE}}}AddCase"
        call.find("t:medRecord", NS).tag = f"{{{names.NS_SERVICE}}}caseDto"
        call.remove(call.find("t:idPatientMis", NS))

    answer = _fault(_post(emu, "EMKService.svc", "AddCase", _serialised_with(record, as_add_case)))
    assert answer.errors[0].property_name == "idLpu"
    assert emu.registry.requests(operation="n3:AddCase")[0].outcome == "rejected"


def test_a_soap_action_that_is_not_the_bodys_operation_is_refused(clinic, emu):
    """AddMedRecord posted with AddCase's SOAPAction gets WCF's ActionNotSupported fault, without N3's detail."""
    _, record, _, _ = _requests(clinic, emu)
    response = _post(emu, "EMKService.svc", "AddCase", record)
    assert response.status_code == 500 and b"ActionNotSupported" in response.content
    assert not n3.parse_answer(response.content, "AddMedRecord").errors


def test_a_kind_number_in_id_med_document_type_is_refused_naming_the_property(clinic, emu):
    """IdMedDocumentType 119 (the НСИ 1520 kind) for a Протокол консультации ред. 4 is refused by the dictionary
    cross-check, naming IdMedDocumentType: 119 is dictionary 195's code of another kind (104). 198 passes it."""
    patient, record, _, _ = _requests(clinic, emu)
    assert _post(emu, "PixService.svc", "AddPatient", patient).status_code == 200

    def kind_number(root):
        root.find(".//md:IdMedDocumentType", NS).text = "119"

    assert (
        n3.validate(envelope.open_envelope(_serialised_with(record, kind_number))[1]) == []
    )  # the schema can't
    answer = _fault(_post(emu, "EMKService.svc", "AddMedRecord", _serialised_with(record, kind_number)))
    assert answer.errors[0].property_name == "IdMedDocumentType" and "[119]" in answer.errors[0].message
    assert _post(emu, "EMKService.svc", "AddMedRecord", record).status_code == 200


# --- N3's own minimal sample shapes ------------------------------------------------------------------------------

#: the textual shape of N3's minimal samples (docs/n3-contract.md: prefixes as WCF writes them, the MedRec prefix
#: declared and unused, Author's people in d5p1, Doctor's in d9p1, no idCaseMis, no Url), written here, filled below
SAMPLE_ADD_PATIENT = """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<AddPatient xmlns="http://tempuri.org/"><guid>{guid}</guid><idLPU>{lpu}</idLPU>
<patient xmlns:d4p1="http://schemas.datacontract.org/2004/07/EMKService.Data.Dto" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<d4p1:BirthDate>{birth}</d4p1:BirthDate><d4p1:Documents><d4p1:DocumentDto><d4p1:DocN>{snils}</d4p1:DocN>
<d4p1:IdDocumentType>223</d4p1:IdDocumentType><d4p1:ProviderName>ПФР</d4p1:ProviderName></d4p1:DocumentDto>
</d4p1:Documents><d4p1:FamilyName>{family}</d4p1:FamilyName><d4p1:GivenName>{given}</d4p1:GivenName>
<d4p1:IdPatientMIS>{patient_id}</d4p1:IdPatientMIS><d4p1:MiddleName>{middle}</d4p1:MiddleName><d4p1:Sex>{sex}</d4p1:Sex>
</patient></AddPatient></s:Body></s:Envelope>"""

SAMPLE_PERSON = """<{p}:Person><{p}:HumanName><{p}:GivenName>{given}</{p}:GivenName><{p}:MiddleName>{middle}</{p}:MiddleName>
<{p}:FamilyName>{family}</{p}:FamilyName></{p}:HumanName><{p}:IdPersonMis>{local_id}</{p}:IdPersonMis><{p}:Documents>
<{p}:IdentityDocument><{p}:DocN>{snils}</{p}:DocN><{p}:IdDocumentType>223</{p}:IdDocumentType>
<{p}:ProviderName>ПФР</{p}:ProviderName></{p}:IdentityDocument></{p}:Documents></{p}:Person>
<{p}:IdSpeciality>28</{p}:IdSpeciality><{p}:IdPosition>114</{p}:IdPosition>"""

SAMPLE_ADD_MED_RECORD = """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<AddMedRecord xmlns="http://tempuri.org/"><guid>{guid}</guid><idLpu>{lpu}</idLpu><idPatientMis>{patient_id}</idPatientMis>
<medRecord i:type="d4p3:MedDocument" xmlns:d4p1="http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec"
 xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:d4p3="http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec.MedDoc">
<d4p3:Attachments><d4p3:MedDocumentDto.DocumentAttachment><d4p3:Data>{data}</d4p3:Data>
<d4p3:OrganizationSign>{org_sign}</d4p3:OrganizationSign><d4p3:PersonalSigns>{signs}</d4p3:PersonalSigns>
<d4p3:MimeType>text/xml</d4p3:MimeType></d4p3:MedDocumentDto.DocumentAttachment></d4p3:Attachments>
<d4p3:Author xmlns:d5p1="http://schemas.datacontract.org/2004/07/N3.EMK.Dto">{author}</d4p3:Author>
<d4p3:CreationDate>{created}</d4p3:CreationDate><d4p3:Header>Протокол консультации</d4p3:Header>
<d4p3:IdDocumentMis>{local_uid}</d4p3:IdDocumentMis><d4p3:IdMedDocumentType>198</d4p3:IdMedDocumentType>
</medRecord></AddMedRecord></s:Body></s:Envelope>"""

SAMPLE_SIGN = """<d4p3:MedDocumentDto.PersonalSign><d4p3:Sign>{sign}</d4p3:Sign>
<d4p3:Doctor xmlns:d9p1="http://schemas.datacontract.org/2004/07/N3.EMK.Dto">{doctor}</d4p3:Doctor>
</d4p3:MedDocumentDto.PersonalSign>"""


def test_requests_in_the_shape_of_n3s_minimal_samples_are_taken_and_registered(clinic, emu):
    """AddPatient and AddMedRecord written in exactly the shape of N3's minimal samples (bare birth date, WCF's
    prefixes, the unused MedRec prefix, no idCaseMis, no Url), with a real signed document, are taken and the
    document is registered."""
    document = sample()
    signed = clinic.signed(document)
    meta = extract(parse_xml(document))
    p = signed["patient"]
    by_snils = {s["snils"]: s for s in signed["signers"]}

    def person(prefix: str, snils: str) -> str:
        s = by_snils[snils]
        return SAMPLE_PERSON.format(p=prefix, given=s["given"], middle=s["patronymic"], family=s["family"],
                                    local_id=s["localId"], snils=snils)  # fmt: skip

    personal = signed["signatures"]["personal"]
    patient = SAMPLE_ADD_PATIENT.format(
        guid=clinic.token, lpu=clinic.lpu, birth=p["birthDate"], snils=p["snils"], family=p["family"],
        given=p["given"], patient_id=p["localId"], middle=p["patronymic"], sex=p["gender"],
    )  # fmt: skip
    record = SAMPLE_ADD_MED_RECORD.format(
        guid=clinic.token, lpu=clinic.lpu, patient_id=p["localId"], data=base64.b64encode(document).decode(),
        org_sign=signed["signatures"]["organization"]["cms"],
        signs="".join(SAMPLE_SIGN.format(sign=s["cms"], doctor=person("d9p1", s["snils"])) for s in personal),
        author=person("d5p1", personal[0]["snils"]), created=signed["creationTime"], local_uid=meta.local_uid,
    )  # fmt: skip
    assert _post(emu, "PixService.svc", "AddPatient", patient.encode()).status_code == 200
    taken = _post(emu, "EMKService.svc", "AddMedRecord", record.encode())
    assert taken.status_code == 200, taken.text
    assert emu.registry.wait_for(lambda r: r.lookup("n3-platform", meta.local_uid) is not None, timeout=WAIT)


# --- the transport against the face --------------------------------------------------------------------------------


def _submit(request):
    async def run():
        transport = N3Transport(read_timeout=WAIT)
        try:
            return await transport.submit(request)
        finally:
            await transport.aclose()

    return asyncio.run(run())


def _poll(emu, clinic, local_uid):
    async def run():
        transport = N3Transport(read_timeout=WAIT)
        request = LookupRequest(
            local_uid=local_uid,
            organization=clinic.org.oid,
            kind="119",
            since=date(2000, 1, 1),
            until=date(2100, 1, 1),
            endpoint=f"{emu.base_url}/n3/status",
            auth_token=clinic.token,
        )
        try:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                item = await transport.lookup(request)
                if item is not None:
                    return item
                await asyncio.sleep(0.1)
            return None
        finally:
            await transport.aclose()

    return asyncio.run(run())


def test_the_transport_adds_the_patient_and_the_record_and_the_status_poll_finds_it(clinic, emu):
    """Our transport's attempt is taken (AddPatient, then AddMedRecord, each logged under our request id), and the
    status poll finds the registration with the registry's emdrId."""
    document = sample()
    signed = clinic.signed(document)
    uid = signed["localUid"]
    outcome = _submit(clinic.request(signed, document, endpoint=_emk(emu)))
    assert outcome.accepted and outcome.patient_added and outcome.warnings == ()
    item = _poll(emu, clinic, uid)
    assert item is not None and item.emdr_id == emu.registry.lookup("n3-platform", uid).emdr_id
    [added] = emu.registry.requests(operation="n3:AddPatient")
    [record] = emu.registry.requests(operation="n3:AddMedRecord")
    assert added.message_id == record.message_id == "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    assert (record.local_uid, record.outcome) == (uid, "registered")


def test_a_record_for_a_patient_never_added_is_retried_with_add_patient(clinic, emu):
    """Without AddPatient first, N3 does not know the patient: transient N3_PATIENT_UNKNOWN; with it, taken."""
    document = sample()
    signed = clinic.signed(document)
    refused = _submit(clinic.request(signed, document, endpoint=_emk(emu), add_patient=False))
    assert (refused.kind, refused.reason) == ("transient", "N3_PATIENT_UNKNOWN")
    assert _submit(clinic.request(signed, document, endpoint=_emk(emu))).accepted


def test_a_guid_the_platform_does_not_know_is_a_configuration_failure(clinic, emu):
    """An unknown guid is refused naming guid: the clinic's settings are wrong."""
    document = sample()
    outcome = _submit(clinic.request(clinic.signed(document), document, endpoint=_emk(emu), token="not-ours"))
    assert (outcome.kind, outcome.category) == ("permanent", "configuration") and "[guid]" in outcome.message


def test_rules_reject_with_a_remd_code_and_warn_with_a_taken_document(clinic, emu):
    """A reject rule is a RequestFault quoting its РЭМД code; a warn rule takes the document with a RequestWarning,
    whose warning reaches the outcome; other bytes under a known localUid are NOT_UNIQUE_PROVIDED_ID."""
    rejected_doc, warned_doc = sample(), sample()
    rejected_uid = extract(parse_xml(rejected_doc)).local_uid
    warned_uid = extract(parse_xml(warned_doc)).local_uid
    emu.faults.add(
        [
            Rule(
                fault="reject", operation="n3:AddMedRecord", local_uid=rejected_uid, code="PERSON_NOT_FOUND"
            ),
            Rule(fault="warn", operation="n3:AddMedRecord", local_uid=warned_uid, code="короткий заголовок"),
        ]
    )
    rejected = _submit(clinic.request(clinic.signed(rejected_doc), rejected_doc, endpoint=_emk(emu)))
    assert (rejected.kind, rejected.remd_code) == ("permanent", "PERSON_NOT_FOUND")
    warned = _submit(clinic.request(clinic.signed(warned_doc), warned_doc, endpoint=_emk(emu)))
    assert warned.accepted and "короткий заголовок" in warned.warnings[0][1]
    assert _poll(emu, clinic, warned_uid) is not None
    edited = warned_doc.replace(b"</ClinicalDocument>", b"<!-- edited --></ClinicalDocument>")
    changed = _submit(clinic.request(clinic.signed(edited), edited, endpoint=_emk(emu)))
    assert changed.remd_code == "NOT_UNIQUE_PROVIDED_ID"


def test_the_document_storage_takes_its_real_parameters_only(clinic, emu):
    """The document storage refuses our old query (dateFrom/dateTo, no dmsValue) naming what is wrong, and answers
    the real one (a list; the emulator knows no ДМС policy, so it is empty)."""
    headers = {"Authorization": f"N3 {clinic.token}"}
    url = f"{emu.base_url}/n3/docstorage/"
    old = {"oidMo": clinic.org.oid, "remdCode": [119], "dateFrom": "2026-11-21", "dateTo": "2026-11-23"}
    refused = httpx.post(url, json=old, headers=headers, timeout=WAIT)
    assert refused.status_code == 400 and "dmsValue" in refused.text
    real = n3.search_query(
        dms_value="ДМС-1", organization=clinic.org.oid, since=date(2026, 1, 1), until=date(2026, 12, 31)
    )
    answered = httpx.post(url, json=real, headers=headers, timeout=WAIT)
    assert (answered.status_code, answered.json()) == (200, [])
    assert httpx.post(url, json=real, timeout=WAIT).status_code == 401


def test_the_face_reads_namespaces_from_the_schema_files():
    """The emulator takes N3's namespaces from the schema's own files, and they are the contract's."""
    from lab.emulator.n3 import namespaces

    found = namespaces()
    assert (found["tempuri"], found["meddoc"], found["dto"], found["common"], found["pix"]) == (
        names.NS_SERVICE,
        names.NS_MEDDOC,
        names.NS_DTO,
        names.NS_COMMON,
        names.NS_PIX,
    )
    assert json.dumps(found)  # plain strings


def test_the_rejections_scenario_refuses_on_n3_the_documents_it_names(clinic):
    """In `rejections`, an N3 document rejection_for() names is refused at once, quoting that РЭМД code."""
    from lab.dev.local_pipeline import as_new_document
    from lab.emulator import rejection_for

    emulator = Emulator(scenario="rejections", n3_tokens={clinic.token: clinic.lpu}, n3_delay=0.2).start()
    try:
        uid = next(f"n3-rejected-{i}" for i in range(1000) if rejection_for(f"n3-rejected-{i}") is not None)
        document = as_new_document(sample(fresh=False), local_uid=uid)
        outcome = _submit(clinic.request(clinic.signed(document), document, endpoint=_emk(emulator)))
    finally:
        emulator.stop()
    assert (outcome.kind, outcome.remd_code) == ("permanent", rejection_for(uid).code)
