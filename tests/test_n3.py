"""The N3.Health route: AddPatient and AddMedRecord as N3's contract has them, N3's faults and warnings, the status
poll, the document storage search, dictionary 195, and the N3 transport over HTTP mocks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import date
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator
from lxml import etree

from lab.emulator.n3 import Problem, request_fault, warning_fault
from producer.errors import PermanentError, TransientError
from services.remd import codes, envelope, n3, soap
from services.remd import n3_names as names
from services.remd._transports.n3 import N3Transport, classify_n3_answer
from services.remd.n3_kinds import DictionaryFile, load_dictionary, packaged
from services.remd.transport import LookupRequest, SubmitRequest
from services.remd.transports import transport_for

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = "<ClinicalDocument xmlns='urn:hl7-org:v3'>СЭМД</ClinicalDocument>".encode()
TOKEN = "6f1c0e2a-1111-4222-8333-944455556666"
EMK = "http://n3.test/emk/EMKService.svc"
PIX = "http://n3.test/emk/PixService.svc"
SNILS = "11223344595"
CODES = n3.N3Codes(
    document_type=198,
    title="Протокол консультации (CDA) Редакция 4",
    staff={SNILS: n3.StaffCodes(28, 114)},
)


def _patient(**over) -> soap.Patient:
    fields = {
        "snils": "254-636-254 26",
        "local_id": "5b0c2f3e-8a41-4c55-9d0e-1f2a3b4c5d6e",
        "family": "Тестова",
        "given": "Мария",
        "patronymic": "Ивановна",
        "gender": "2",
        "birth_date": "1990-01-15",
        **over,
    }
    return soap.Patient(**fields)


def _registration(**over) -> soap.Registration:
    signer = soap.Signer(
        role=soap.Coded("DOCTOR", "2.4"),
        snils=SNILS,
        local_id="doc-17",
        family="Врачев",
        given="Пётр",
        patronymic="Петрович",
        position=soap.Coded("109", "7.5"),
    )
    fields = {
        "kind": "119",
        "system": "mis",
        "organization": "1.2.643.5.1.13.13.12.2.77.1",
        "local_uid": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "creation_date_time": "2026-11-22T09:30:00+03:00",
        "patient": _patient(),
        "personal_signatures": (soap.PersonalSignature(signer=signer, signature=b"\x30\x82doctor"),),
        "org_signature": soap.OrgSignature(signature=b"\x30\x82mo"),
        **over,
    }
    return soap.Registration(**fields)


def _payload(data: bytes) -> etree._Element:
    return envelope.open_envelope(data)[1]


def _shape(el: etree._Element, depth: int = 0) -> list[tuple[int, str, str]]:
    out = [(depth, etree.QName(el).namespace, etree.QName(el).localname)]
    for c in el:
        if isinstance(c.tag, str):
            out += _shape(c, depth + 1)
    return out


# --- the requests --------------------------------------------------------------------------------------------


def test_add_patient_is_valid_and_carries_the_snils_as_document_223():
    """AddPatient is valid against the schema, says idLPU, and carries the СНИЛС as digits, type 223, provider ПФР."""
    call = _payload(n3.build_add_patient(_patient(), token=TOKEN, lpu_id="lpu-9"))
    assert n3.validate(call) == []
    ns = {"t": names.NS_SERVICE, "p": names.NS_PIX}
    assert [etree.QName(c).localname for c in call] == ["guid", "idLPU", "patient"]
    doc = call.find("t:patient/p:Documents/p:DocumentDto", ns)
    assert [c.text for c in doc] == ["25463625426", "223", "ПФР"]
    assert call.findtext("t:patient/p:IdPatientMIS", namespaces=ns) == "5b0c2f3e-8a41-4c55-9d0e-1f2a3b4c5d6e"


def test_a_patient_without_a_patronymic_sends_no_middle_name_and_stays_valid():
    """MiddleName is left out, not sent empty, when the patient has no patronymic."""
    call = _payload(n3.build_add_patient(_patient(patronymic=None), token=TOKEN, lpu_id="lpu-9"))
    assert n3.validate(call) == [] and b"MiddleName" not in etree.tostring(call)


def test_add_med_record_is_valid_and_holds_the_document_with_every_signature():
    """AddMedRecord is valid: xsi:type MedDocument of the MedDoc namespace, the exact bytes, the МО's and the doctor's
    signatures, the dictionary-195 code, the title; no Role, PositionVersion or Snils anywhere."""
    body = n3.build_add_med_record(
        _registration(), document=DOCUMENT, token=TOKEN, lpu_id="lpu-9", codes=CODES
    )
    call = _payload(body)
    assert n3.validate(call) == []
    ns = {"t": names.NS_SERVICE, "md": names.NS_MEDDOC, "d": names.NS_DTO}
    record = call.find("t:medRecord", ns)
    prefix, _, local = record.get(f"{{{names.NS_XSI}}}type").partition(":")
    assert (record.nsmap[prefix], local) == (names.NS_MEDDOC, "MedDocument")
    att = record.find("md:Attachments/md:MedDocumentDto.DocumentAttachment", ns)
    assert base64.b64decode(att.findtext("md:Data", namespaces=ns)) == DOCUMENT
    assert base64.b64decode(att.findtext("md:OrganizationSign", namespaces=ns)) == b"\x30\x82mo"
    sign = att.find("md:PersonalSigns/md:MedDocumentDto.PersonalSign", ns)
    assert base64.b64decode(sign.findtext("md:Sign", namespaces=ns)) == b"\x30\x82doctor"
    assert sign.findtext("md:Doctor/d:IdSpeciality", namespaces=ns) == "28"
    assert record.findtext("md:IdMedDocumentType", namespaces=ns) == "198"
    assert record.findtext("md:Header", namespaces=ns) == CODES.title
    assert not any(w in body for w in (b"Role", b"PositionVersion", b"Snils", b"idCaseMis"))


def test_the_requests_have_exactly_the_shape_of_n3s_minimal_samples():
    """Element by element (depth, namespace, name), AddPatient and AddMedRecord are N3's minimal samples
    (docs/n3-contract.md), for a patient and one doctor with a patronymic."""
    t, pix, md, d = names.NS_SERVICE, names.NS_PIX, names.NS_MEDDOC, names.NS_DTO

    def person(depth):
        return [(depth, d, "Person"), (depth + 1, d, "HumanName"), (depth + 2, d, "GivenName"),
                (depth + 2, d, "MiddleName"), (depth + 2, d, "FamilyName"), (depth + 1, d, "IdPersonMis"),
                (depth + 1, d, "Documents"), (depth + 2, d, "IdentityDocument"), (depth + 3, d, "DocN"),
                (depth + 3, d, "IdDocumentType"), (depth + 3, d, "ProviderName"), (depth, d, "IdSpeciality"),
                (depth, d, "IdPosition")]  # fmt: skip

    add_med_record = (
        [(0, t, "AddMedRecord"), (1, t, "guid"), (1, t, "idLpu"), (1, t, "idPatientMis"), (1, t, "medRecord"),
         (2, md, "Attachments"), (3, md, "MedDocumentDto.DocumentAttachment"), (4, md, "Data"),
         (4, md, "OrganizationSign"), (4, md, "PersonalSigns"), (5, md, "MedDocumentDto.PersonalSign"),
         (6, md, "Sign"), (6, md, "Doctor")] + person(7)
        + [(4, md, "MimeType"), (2, md, "Author")] + person(3)
        + [(2, md, "CreationDate"), (2, md, "Header"), (2, md, "IdDocumentMis"), (2, md, "IdMedDocumentType")]
    )  # fmt: skip
    add_patient = [(0, t, "AddPatient"), (1, t, "guid"), (1, t, "idLPU"), (1, t, "patient"), (2, pix, "BirthDate"),
                   (2, pix, "Documents"), (3, pix, "DocumentDto"), (4, pix, "DocN"), (4, pix, "IdDocumentType"),
                   (4, pix, "ProviderName"), (2, pix, "FamilyName"), (2, pix, "GivenName"),
                   (2, pix, "IdPatientMIS"), (2, pix, "MiddleName"), (2, pix, "Sex")]  # fmt: skip
    amr = n3.build_add_med_record(_registration(), document=DOCUMENT, token=TOKEN, lpu_id="l", codes=CODES)
    assert _shape(_payload(amr)) == add_med_record
    assert _shape(_payload(n3.build_add_patient(_patient(), token=TOKEN, lpu_id="l"))) == add_patient


def test_pix_service_is_the_sibling_of_emk_service():
    """PixService's address is EmkService's with PixService.svc; an address of another shape must be configured."""
    assert n3.pix_endpoint_for(EMK) == PIX
    assert (
        n3.pix_endpoint_for("https://n3.example/EMK/emkservice.svc/")
        == "https://n3.example/EMK/PixService.svc"
    )
    with pytest.raises(ValueError, match="pix_endpoint"):
        n3.pix_endpoint_for("http://n3.test/emk")


# --- the answers ---------------------------------------------------------------------------------------------


def _detail(data: bytes) -> etree._Element:
    return next(c for c in _payload(data).find("detail") if isinstance(c.tag, str))


def test_a_list_of_fault_with_nested_errors_is_read_whole_and_refuses_the_document():
    """An ArrayOfRequestFault (the ListOf_ fault) whose item nests Errors: every problem is read, in order, and the
    document is refused permanently with all of them in the message; the detail is valid against our schema."""
    inner = Problem("medRecord.Author.HumanName.FamilyName", "Фамилия не заполнена", 12)
    data = request_fault([Problem("medRecord", "Ошибки в документе", 10), inner], listed=True)
    # nest a third problem under the first item, as N3's Errors list does
    root = etree.fromstring(data)
    first = root.find(f".//{{{names.NS_COMMON}}}RequestFault")
    errors = etree.SubElement(first, f"{{{names.NS_COMMON}}}Errors")
    nested = etree.SubElement(errors, f"{{{names.NS_COMMON}}}RequestFault")
    for tag, text in (
        ("PropertyName", "medRecord.CreationDate"),
        ("Message", "Дата в будущем"),
        ("ErrorCode", "11"),
    ):
        etree.SubElement(nested, f"{{{names.NS_COMMON}}}{tag}").text = text
    data = etree.tostring(root)
    assert n3.validate(_detail(data)) == []
    answer = n3.parse_answer(data, names.ADD_MED_RECORD)
    assert answer.listed and not answer.taken
    assert [(p.property_name, p.code) for p in answer.errors] == [
        ("medRecord", 10),
        ("medRecord.CreationDate", 11),
        ("medRecord.Author.HumanName.FamilyName", 12),
    ]
    outcome = classify_n3_answer(500, data)
    assert (outcome.kind, outcome.reason, outcome.category) == ("permanent", "N3_REQUEST_REFUSED", "data")
    assert "ListOf_RequestFault" in outcome.message and "Дата в будущем" in outcome.message


def test_a_remd_code_quoted_in_n3s_message_decides_the_category():
    """N3 quoting РЭМД's code («Code: PERSON_NOT_FOUND») makes it the failure's РЭМД code, classified by the table."""
    data = request_fault([Problem(None, "Code: PERSON_NOT_FOUND: Сотрудник не найден в ФРМР", 2)])
    outcome = classify_n3_answer(500, data)
    info = codes.classify("PERSON_NOT_FOUND")
    assert (outcome.kind, outcome.remd_code) == ("permanent", "PERSON_NOT_FOUND")
    assert (outcome.category, outcome.hint) == (info.category, info.hint)
    transient = classify_n3_answer(500, request_fault([Problem(None, "Code: INTERNAL_ERROR: сбой", 2)]))
    assert (transient.kind, transient.remd_code) == ("transient", "INTERNAL_ERROR")


@pytest.mark.parametrize(
    "prop,operation,kind,reason,category",
    [
        ("guid", names.ADD_MED_RECORD, "permanent", "N3_REQUEST_REFUSED", "configuration"),
        (
            "medRecord.IdMedDocumentType",
            names.ADD_MED_RECORD,
            "permanent",
            "N3_REQUEST_REFUSED",
            "configuration",
        ),
        ("idPatientMis", names.ADD_MED_RECORD, "transient", "N3_PATIENT_UNKNOWN", "transient"),
        ("patient.BirthDate", names.ADD_PATIENT, "permanent", "N3_REQUEST_REFUSED", "data"),
    ],
)
def test_a_fault_is_classified_by_the_property_it_names(prop, operation, kind, reason, category):
    """The clinic's settings and codes are configuration, an unknown patient is worth AddPatient again, a field of the
    document is the МИС's to fix."""
    outcome = classify_n3_answer(500, request_fault([Problem(prop, "ошибка", 5)]), operation)
    assert (outcome.kind, outcome.reason, outcome.category) == (kind, reason, category)


def test_server_faults_are_transient_and_a_bare_client_fault_is_configuration():
    """s:Server (with or without N3's detail) may pass; a client fault without N3's detail means N3 could not read us."""
    server = request_fault([Problem(None, "Внутренняя ошибка", 1)]).replace(b"s:Client", b"s:Server")
    assert (classify_n3_answer(500, server).kind, classify_n3_answer(500, server).reason) == (
        "transient",
        "N3_SERVER_FAULT",
    )
    bare = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        b"<faultcode>a:DeserializationFailed</faultcode><faultstring>bad</faultstring></s:Fault></s:Body></s:Envelope>"
    )
    outcome = classify_n3_answer(500, bare)
    assert (outcome.kind, outcome.category) == ("permanent", "configuration")


def test_a_warning_fault_takes_the_document_and_keeps_every_warning():
    """A fault carrying only RequestWarnings (nested Warnings too) is an accepted document with its warnings."""
    data = warning_fault(
        [Problem("Header", "Заголовок короткий", 7), Problem("CreationDate", "Время без секунд", 8)]
    )
    assert n3.validate(_detail(data)) == []
    outcome = classify_n3_answer(500, data)
    assert outcome.accepted
    assert [code for code, _ in outcome.warnings] == ["N3:7", "N3:8"]
    assert "Заголовок короткий" in outcome.warnings[0][1]
    listed = classify_n3_answer(500, warning_fault([Problem(None, "Замечание", 9)], listed=True))
    assert listed.accepted and listed.warnings == (("N3:9", "N3 9: Замечание"),)


# --- the transport ---------------------------------------------------------------------------------------------


def _ok(operation: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<{operation}Response xmlns="http://tempuri.org/"/></s:Body></s:Envelope>'
    ).encode()


def _submit(handler, **over):
    seen = []

    def record(request):
        seen.append(request)
        return handler(request)

    transport = N3Transport(client=httpx.AsyncClient(transport=httpx.MockTransport(record)))
    fields = {"document": DOCUMENT, "auth_token": TOKEN, "lpu_id": "lpu-9", "n3_codes": CODES, **over}
    request = SubmitRequest(
        registration=_registration(),
        message_id="3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        endpoint=EMK,
        **fields,
    )
    return asyncio.run(transport.submit(request)), seen


def _by_action(request):
    operation = request.headers["SOAPAction"].strip('"').rsplit("/", 1)[1]
    return httpx.Response(200, content=_ok(operation))


def test_an_attempt_adds_the_patient_then_the_record_each_to_its_service():
    """AddPatient goes to PixService, then AddMedRecord to EmkService, each with its quoted SOAPAction and our request
    id, no Authorization header (the guid parameter is N3's auth), and the patient counts as added."""
    outcome, [pix, emk] = _submit(_by_action)
    assert outcome.accepted and outcome.patient_added
    assert (str(pix.url), pix.headers["SOAPAction"]) == (PIX, '"http://tempuri.org/IPixService/AddPatient"')
    assert (str(emk.url), emk.headers["SOAPAction"]) == (EMK, '"http://tempuri.org/IEmkService/AddMedRecord"')
    assert {pix.headers[names.REQUEST_ID_HEADER], emk.headers[names.REQUEST_ID_HEADER]} == {
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    }
    assert "Authorization" not in pix.headers and "Authorization" not in emk.headers
    assert pix.headers["Content-Type"].startswith("text/xml")
    assert TOKEN not in repr(
        SubmitRequest(registration=_registration(), message_id="m", endpoint=EMK, auth_token=TOKEN)
    )


def test_a_patient_n3_holds_is_not_added_again():
    """With add_patient False only AddMedRecord leaves."""
    outcome, seen = _submit(_by_action, add_patient=False)
    assert outcome.accepted and not outcome.patient_added and [str(r.url) for r in seen] == [EMK]


def test_a_refused_add_patient_ends_the_attempt():
    """A RequestFault on AddPatient is the attempt's outcome; AddMedRecord is not sent."""
    fault = request_fault([Problem("patient.BirthDate", "Дата рождения в будущем", 4)])
    outcome, seen = _submit(lambda r: httpx.Response(500, content=fault))
    assert (outcome.kind, outcome.category, len(seen)) == ("permanent", "data", 1)
    assert "AddPatient refused" in outcome.message and not outcome.patient_added


def test_the_record_refused_after_the_patient_was_added_says_so():
    """AddPatient taken, AddMedRecord refused: the outcome is the refusal, and the patient still counts as added."""

    def answer(request):
        if "AddPatient" in request.headers["SOAPAction"]:
            return httpx.Response(200, content=_ok("AddPatient"))
        return httpx.Response(500, content=request_fault([Problem("guid", "Неизвестный guid", 401)]))

    outcome, seen = _submit(answer)
    assert (outcome.kind, outcome.category, outcome.patient_added, len(seen)) == (
        "permanent",
        "configuration",
        True,
        2,
    )


@pytest.mark.parametrize(
    "status,body,kind,reason",
    [
        (401, b"Unauthorized", "permanent", "HTTP_401"),
        (503, b"busy", "transient", "HTTP_503"),
        (200, b"<html/>", "transient", "MALFORMED_ANSWER"),
    ],
)
def test_answers_without_soap_are_classified_by_their_status(status, body, kind, reason):
    """A refused GUID is permanent; 5xx and garbage are transient."""
    outcome, _ = _submit(lambda r: httpx.Response(status, content=body))
    assert (outcome.kind, outcome.reason) == (kind, reason)


@pytest.mark.parametrize("missing", ["auth_token", "n3_codes", "document"])
def test_nothing_leaves_without_the_document_the_guid_or_the_codes(missing):
    """Without the document, the GUID or N3's codes nothing is sent: REQUEST_BUILD_FAILED."""
    outcome, seen = _submit(_by_action, **{missing: None})
    assert outcome.reason == "REQUEST_BUILD_FAILED" and seen == []


# --- the status poll [G] and the document storage -----------------------------------------------------------


def _lookup(handler, transport=None):
    transport = transport or N3Transport(client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    request = LookupRequest(
        local_uid="doc-n3",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        kind="119",
        since=date(2026, 11, 21),
        until=date(2026, 11, 23),
        endpoint="http://n3.test/status",
        auth_token=TOKEN,
    )
    return asyncio.run(transport.lookup(request))


def test_the_status_poll_finds_a_registration_only_at_status_4_with_its_emdr_id():
    """The guessed status method is asked with the GUID for this document; 4 with an emdrId is registered, another
    status or 404 is not yet, an error answer says nothing (transient)."""
    asked = []

    def registered(request):
        asked.append((json.loads(request.content), request.headers[names.AUTH_HEADER]))
        return httpx.Response(
            200, json={"idDocumentMis": "doc-n3", "status": 4, "emdrId": "16.62.26.11.000000009"}
        )

    assert _lookup(registered).emdr_id == "16.62.26.11.000000009"
    assert asked == [({"idDocumentMis": "doc-n3", "oidMo": "1.2.643.5.1.13.13.12.2.77.1"}, f"N3 {TOKEN}")]
    assert _lookup(lambda r: httpx.Response(200, json={"idDocumentMis": "doc-n3", "status": 1})) is None
    assert _lookup(lambda r: httpx.Response(404, json={})) is None
    with pytest.raises(TransientError) as exc:
        _lookup(lambda r: httpx.Response(502, text="bad gateway"))
    assert exc.value.reason == "REGISTRY_LOOKUP_FAILED"


def test_the_status_source_is_one_replaceable_interface():
    """A status source that calls back makes the route one with callbacks, and look-ups go to it."""

    class CallsBack:
        calls_back = True

        async def registration(self, request):
            return soap.RegistryItem(local_uid=request.local_uid, emdr_id="pushed")

    transport, polled = N3Transport(status=CallsBack()), N3Transport()
    try:
        assert transport.has_callbacks and _lookup(None, transport).emdr_id == "pushed"
        assert not polled.has_callbacks
    finally:
        asyncio.run(transport.aclose())
        asyncio.run(polled.aclose())


def test_the_document_storage_search_uses_its_real_parameters_and_reads_its_real_output():
    """The search sends dmsValue, dateStart, dateEnd and oidMo (valid against its JSON schema) and reads idCda,
    idDocumentMis, remdCode, createdDate, oidMo: no emdrId."""
    asked = []

    def handler(request):
        asked.append(json.loads(request.content))
        return httpx.Response(
            200,
            json=[{"idCda": "c-1", "idDocumentMis": "doc-n3", "remdCode": 119, "createdDate": "2026-11-22",
                   "oidMo": "1.2.643.5.1.13.13.12.2.77.1"}],
        )  # fmt: skip

    transport = N3Transport(client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    found = asyncio.run(
        transport.search_documents(
            url="http://n3.test/docstorage/", token=TOKEN, dms_value="ДМС-77-0001",
            organization="1.2.643.5.1.13.13.12.2.77.1", since=date(2026, 11, 1), until=date(2026, 11, 30),
        )
    )  # fmt: skip
    schema = json.loads((ROOT / "services/data/n3/docstorage-search.schema.json").read_text(encoding="utf-8"))
    assert list(Draft202012Validator(schema).iter_errors(asked[0])) == []
    assert set(asked[0]) == {"dmsValue", "dateStart", "dateEnd", "oidMo"}
    [doc] = found
    assert (doc.id_cda, doc.local_uid, doc.kind, doc.created) == ("c-1", "doc-n3", "119", "2026-11-22")
    assert not hasattr(doc, "emdr_id")


def test_transport_for_names_both_routes():
    """An organisation's remd.transport picks ИПС or N3; N3 has no callbacks and takes the document attached."""
    ips, n3t = transport_for("ips"), transport_for("n3")
    assert (ips.has_callbacks, ips.pushes_document) == (True, False)
    assert (n3t.has_callbacks, n3t.pushes_document) == (False, True)
    asyncio.run(ips.aclose())
    asyncio.run(n3t.aclose())


# --- dictionary 195 ----------------------------------------------------------------------------------------------


def test_kind_119_is_code_198_in_the_dictionary_shipped():
    """N3's support: «В AddMedRecord передаётся 198, не 119»; the shipped dictionary is version 374."""
    d = packaged()
    assert (d.version, d.code_for("119").code) == ("374", 198)


def test_kind_54_takes_the_code_n3_maps_to_med_document():
    """Kind 54 has codes 5 (DispensaryOne) and 54 (MedDocument, …) in v374: we send MedDocument, so 54."""
    assert packaged().code_for("54").code == 54


@pytest.mark.parametrize(
    "kind,reason",
    [("999", "N3_KIND_UNMAPPED"), ("68", "N3_KIND_NOT_EXPORTED"), ("108", "N3_KIND_NOT_EXPORTED")],
)
def test_a_kind_n3_cannot_forward_is_refused_naming_the_kind_and_the_version(kind, reason):
    """A kind without a row, or whose rows are not allowRemdExport=true (false, or not set), is refused by name."""
    with pytest.raises(PermanentError) as exc:
        packaged().code_for(kind)
    assert exc.value.reason == reason
    assert f"kind {kind}" in exc.value.message and "version 374" in exc.value.message
    assert exc.value.details["dictionary_version"] == "374"


def _export(path: Path, version: str, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"oid": "1.2.643.2.69.1.1.1.195", "version": version, "items": rows}))
    return path


def test_a_new_dictionary_file_is_read_when_it_changes():
    """The operator's file is re-read when it changes: a kind unmapped in one version is coded in the next."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = _export(
            Path(d) / "nsi-195.json", "374", [{"code": "198", "remd_code": "119", "allowRemdExport": "true"}]
        )
        named = DictionaryFile(path)
        with pytest.raises(PermanentError, match="version 374"):
            named.current().code_for("227")
        _export(path, "375", [{"code": "198", "remd_code": "119", "allowRemdExport": "true"},
                                 {"code": "316", "remd_code": "227", "allowRemdExport": "true"}])  # fmt: skip
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
        assert (named.current().version, named.current().code_for("227").code) == ("375", 316)
        path.write_text("not json")  # an edit in progress: the last good version stays in use
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
        assert named.current().version == "375"


def test_a_file_that_is_not_dictionary_195_is_refused_by_name(tmp_path):
    """Another dictionary's export is a configuration error naming the file."""
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"oid": "1.2.643.5.1.13.13.11.1520", "version": "1", "items": []}))
    with pytest.raises(Exception, match="other.json"):
        load_dictionary(path)
