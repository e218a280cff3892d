"""The N3.Health route's messages: what our N3 transport sends and how it reads the answers.

A ready СЭМД goes to N3 in two SOAP 1.1 calls (``docs/n3-contract.md``), no SOAP header, the clinic's ``guid`` as
the first parameter of each:

1. PixService ``AddPatient(guid, idLPU, patient)``: the patient, the СНИЛС as identity document 223 / ПФР
   (:func:`build_add_patient`);
2. EmkService ``AddMedRecord(guid, idLpu, idPatientMis, medRecord)``, ``medRecord`` with ``xsi:type`` MedDocument:
   the signed СЭМД in ``MedDocumentDto.DocumentAttachment/Data`` with the МО's detached signature
   (``OrganizationSign``) and each doctor's (``PersonalSigns``), the author, the creation date, the title, the
   localUid and the dictionary-195 code of its kind (:func:`build_add_med_record`).

Every element in the namespace and the order N3's WSDL gives (WCF drops a member that comes out of order), every
name from :mod:`services.remd.n3_names`; each request is valid against the project's schema of what it sends,
``services/data/n3/n3-subset.xsd`` (:func:`validate`). Answers: the empty ``…Response`` (taken), or a SOAP fault
whose detail is N3's ``RequestFault``/``ArrayOfRequestFault`` (refused; nested ``Errors`` flattened) or
``RequestWarning``/``ArrayOfRequestWarning`` (remarks): :func:`parse_answer`. Also the status poll's request and
answer ([G]: :func:`status_query`, :func:`parse_status_answer`) and the document storage search with its real
parameters and output (:func:`search_query`, :func:`parse_search_answer`). Received bytes are parsed only with
``producer.xmlsafe.parse_xml``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

from lxml import etree

from producer.text import digits
from services.remd import envelope, soap
from services.remd import n3_names as n3
from services.remd import names as n
from services.remd.envelope import SoapParseError, child, value_of

__all__ = [
    "N3Answer",
    "N3Codes",
    "N3Problem",
    "StaffCodes",
    "StoredDocument",
    "build_add_med_record",
    "build_add_patient",
    "parse_answer",
    "parse_search_answer",
    "parse_status_answer",
    "patient_fingerprint",
    "patient_problems",
    "pix_endpoint_for",
    "schema",
    "search_query",
    "soap_action",
    "staff_problems",
    "status_query",
    "validate",
]


def soap_action(operation: str) -> str:
    """The SOAPAction of an operation (WCF's ``<ns>I<Service>/<Operation>``): AddPatient is PixService's."""
    interface = n3.PIX_INTERFACE if operation == n3.ADD_PATIENT else n3.EMK_INTERFACE
    return f"{n3.NS_SERVICE}{interface}/{operation}"


def pix_endpoint_for(emk_endpoint: str) -> str:
    """PixService's address: the sibling ``PixService.svc`` of the EmkService address (N3's layout, its samples);
    ``ValueError`` when the address does not end in ``EMKService.svc`` (then it must be configured)."""
    head, sep, last = emk_endpoint.rstrip("/").rpartition("/")
    if not sep or last.lower() != n3.EMK_SERVICE_FILE.lower():
        raise ValueError(
            f"{emk_endpoint} does not end in /{n3.EMK_SERVICE_FILE}: name PixService's address (remd.n3.pix_endpoint)"
        )
    return f"{head}/{n3.PIX_SERVICE_FILE}"


# --- the schema of what we send ------------------------------------------------------------------------


@functools.cache
def schema() -> etree.XMLSchema:
    """The project's XSD of the N3 requests it sends and the fault details it reads (``services/data/n3``)."""
    entry = resources.files("services").joinpath("data", "n3", "n3-subset.xsd")
    with resources.as_file(entry) as path:
        return etree.XMLSchema(etree.parse(str(path)))


def validate(payload: etree._Element) -> list[str]:
    """The schema's complaints about a Body payload (an operation element or a fault detail); [] when valid."""
    s = schema()
    if s.validate(payload):
        return []
    return [f"line {e.line}: {e.message}" for e in s.error_log]


# --- what the codes are ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaffCodes:
    """A doctor's N3 codes (``IdSpeciality``, ``IdPosition``), from the organisations file."""

    speciality: int
    position: int


@dataclass(frozen=True, kw_only=True)
class N3Codes:
    """What N3 needs beyond the registration: the dictionary-195 code and name of the kind, each doctor's codes."""

    document_type: int  #: IdMedDocumentType
    title: str  #: Header: the dictionary's name of that type
    staff: Mapping[str, StaffCodes]  #: СНИЛС (digits) → codes
    dictionary_version: str = ""


def patient_problems(patient: soap.Patient) -> list[str]:
    """What AddPatient would lack for this patient (N3's minimal sample makes each of these mandatory)."""
    problems = []
    if not patient.local_id:
        problems.append("the patient's id in the МИС")
    if len(digits(patient.snils)) != 11:
        problems.append("the patient's СНИЛС (identity document 223)")
    if not patient.family or not patient.given:
        problems.append("the patient's family and given names")
    if not patient.birth_date:
        problems.append("the patient's birth date")
    if not (patient.gender or "").isdigit():
        problems.append("the patient's sex (НСИ 1.2.643.5.1.13.13.11.1040 code)")
    return problems


def staff_problems(signer: soap.Signer) -> list[str]:
    """What a doctor's MedicalStaff would lack (names, id in the МИС, СНИЛС)."""
    problems = []
    if len(digits(signer.snils)) != 11:
        problems.append("a signer's СНИЛС")
    if not signer.family or not signer.given:
        problems.append("a signer's family and given names")
    if not signer.local_id:
        problems.append("a signer's id in the МИС")
    return problems


def patient_fingerprint(patient: soap.Patient, lpu_id: str) -> str:
    """A digest of what AddPatient tells N3 about the patient: it is sent again when this changes."""
    fields = (lpu_id, patient.local_id, digits(patient.snils), patient.family, patient.given,
              patient.patronymic, patient.birth_date, patient.gender)  # fmt: skip
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


# --- writing ------------------------------------------------------------------------------------------


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _text(parent: etree._Element, ns: str, local: str, value: Any) -> etree._Element:
    el = etree.SubElement(parent, _q(ns, local))
    el.text = str(value)
    return el


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _call(operation: str) -> tuple[etree._Element, etree._Element]:
    """A SOAP 1.1 envelope without a header (as N3's samples) and the operation's wrapper in the service namespace."""
    env = etree.Element(_q(n.NS_SOAP11, "Envelope"), nsmap={"s": n.NS_SOAP11})
    body = etree.SubElement(env, _q(n.NS_SOAP11, "Body"))
    return env, etree.SubElement(body, _q(n3.NS_SERVICE, operation), nsmap={None: n3.NS_SERVICE})


def _serialise(env: etree._Element) -> bytes:
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def _snils_document(parent: etree._Element, ns: str, item: str, snils: str | None) -> None:
    doc = etree.SubElement(etree.SubElement(parent, _q(ns, n3.DOCUMENTS)), _q(ns, item))
    _text(doc, ns, n3.DOC_N, digits(snils))
    _text(doc, ns, n3.ID_DOCUMENT_TYPE, n3.SNILS_DOCUMENT_TYPE)
    _text(doc, ns, n3.PROVIDER_NAME, n3.SNILS_PROVIDER)


def build_add_patient(patient: soap.Patient, *, token: str, lpu_id: str) -> bytes:
    """PixService ``AddPatient(guid, idLPU, patient)``: the members N3's minimal sample sends, in the WSDL's order."""
    env, call = _call(n3.ADD_PATIENT)
    _text(call, n3.NS_SERVICE, n3.GUID, token)
    _text(call, n3.NS_SERVICE, n3.PIX_ID_LPU, lpu_id)
    dto = etree.SubElement(call, _q(n3.NS_SERVICE, n3.PATIENT), nsmap={"d4p1": n3.NS_PIX, "i": n3.NS_XSI})
    _text(dto, n3.NS_PIX, n3.BIRTH_DATE, patient.birth_date)
    _snils_document(dto, n3.NS_PIX, n3.DOCUMENT_DTO, patient.snils)
    _text(dto, n3.NS_PIX, n3.FAMILY_NAME, patient.family)
    _text(dto, n3.NS_PIX, n3.GIVEN_NAME, patient.given)
    _text(dto, n3.NS_PIX, n3.ID_PATIENT_MIS_DTO, patient.local_id)
    if patient.patronymic:
        _text(dto, n3.NS_PIX, n3.MIDDLE_NAME, patient.patronymic)
    _text(dto, n3.NS_PIX, n3.SEX, patient.gender)
    return _serialise(env)


def _staff(parent: etree._Element, local: str, signer: soap.Signer, codes: StaffCodes) -> None:
    """A MedicalStaff: Person {HumanName, IdPersonMis, Documents (СНИЛС)}, IdSpeciality, IdPosition."""
    staff = etree.SubElement(parent, _q(n3.NS_MEDDOC, local), nsmap={"d5p1": n3.NS_DTO})
    person = etree.SubElement(staff, _q(n3.NS_DTO, n3.PERSON))
    name = etree.SubElement(person, _q(n3.NS_DTO, n3.HUMAN_NAME))
    _text(name, n3.NS_DTO, n3.GIVEN_NAME, signer.given)
    if signer.patronymic:
        _text(name, n3.NS_DTO, n3.MIDDLE_NAME, signer.patronymic)
    _text(name, n3.NS_DTO, n3.FAMILY_NAME, signer.family)
    _text(person, n3.NS_DTO, n3.ID_PERSON_MIS, signer.local_id)
    _snils_document(person, n3.NS_DTO, n3.IDENTITY_DOCUMENT, signer.snils)
    _text(staff, n3.NS_DTO, n3.ID_SPECIALITY, codes.speciality)
    _text(staff, n3.NS_DTO, n3.ID_POSITION, codes.position)


def _codes_of(codes: N3Codes, signer: soap.Signer) -> StaffCodes:
    found = codes.staff.get(digits(signer.snils))
    if found is None:  # the pipeline refuses such a document at the signer (N3_DOCTOR_UNMAPPED): a bug here
        raise ValueError("a signer has no N3 codes (IdSpeciality, IdPosition)")
    return found


def build_add_med_record(
    registration: soap.Registration, *, document: bytes, token: str, lpu_id: str, codes: N3Codes
) -> bytes:
    """EmkService ``AddMedRecord(guid, idLpu, idPatientMis, medRecord)``: a MedDocument holding the exact signed
    СЭМД with every signature; the first signer is the author."""
    r = registration
    if not r.personal_signatures:
        raise ValueError("a MedDocument needs at least one personal signature")
    env, call = _call(n3.ADD_MED_RECORD)
    _text(call, n3.NS_SERVICE, n3.GUID, token)
    _text(call, n3.NS_SERVICE, n3.EMK_ID_LPU, lpu_id)
    _text(call, n3.NS_SERVICE, n3.ID_PATIENT_MIS, r.patient.local_id)
    record = etree.SubElement(
        call,
        _q(n3.NS_SERVICE, n3.MED_RECORD),
        nsmap={"d4p1": n3.NS_MEDREC, "i": n3.NS_XSI, "d4p3": n3.NS_MEDDOC},
    )
    record.set(_q(n3.NS_XSI, "type"), f"d4p3:{n3.MED_DOCUMENT}")
    attachment = etree.SubElement(
        etree.SubElement(record, _q(n3.NS_MEDDOC, n3.ATTACHMENTS)), _q(n3.NS_MEDDOC, n3.DOCUMENT_ATTACHMENT)
    )
    _text(attachment, n3.NS_MEDDOC, n3.DATA, _b64(document))
    if r.org_signature is not None:
        _text(attachment, n3.NS_MEDDOC, n3.ORGANIZATION_SIGN, _b64(r.org_signature.signature))
    signs = etree.SubElement(attachment, _q(n3.NS_MEDDOC, n3.PERSONAL_SIGNS))
    for ps in r.personal_signatures:
        sign = etree.SubElement(signs, _q(n3.NS_MEDDOC, n3.PERSONAL_SIGN))
        _text(sign, n3.NS_MEDDOC, n3.SIGN, _b64(ps.signature))
        _staff(sign, n3.DOCTOR, ps.signer, _codes_of(codes, ps.signer))
    _text(attachment, n3.NS_MEDDOC, n3.MIME_TYPE, n3.MIME_TYPE_SEMD)
    author = r.personal_signatures[0].signer
    _staff(record, n3.AUTHOR, author, _codes_of(codes, author))
    _text(record, n3.NS_MEDDOC, n3.CREATION_DATE, r.creation_date_time)
    _text(record, n3.NS_MEDDOC, n3.HEADER, codes.title)
    _text(record, n3.NS_MEDDOC, n3.ID_DOCUMENT_MIS, r.local_uid)
    _text(record, n3.NS_MEDDOC, n3.ID_MED_DOCUMENT_TYPE, codes.document_type)
    return _serialise(env)


# --- reading the answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class N3Problem:
    """One ``RequestFault`` or ``RequestWarning``, nested ones flattened after their parent."""

    property_name: str | None
    message: str | None
    code: int | None  #: ErrorCode / WarningCode (N3's numbers; their meanings are not public)

    def describe(self) -> str:
        where = f" [{self.property_name}]" if self.property_name else ""
        number = f" {self.code}" if self.code is not None else ""
        return f"N3{number}{where}: {self.message or '(no message)'}"


@dataclass(frozen=True, kw_only=True)
class N3Answer:
    """An answer to AddPatient or AddMedRecord: ``taken`` (the empty response, or a warning-only fault), or not."""

    taken: bool
    fault: soap.SoapFault | None = None
    errors: tuple[N3Problem, ...] = ()
    warnings: tuple[N3Problem, ...] = ()
    #: the fault's detail is a list (``ArrayOfRequestFault``/``ArrayOfRequestWarning``: the ListOf_ variants)
    listed: bool = False
    remd_codes: tuple[str, ...] = field(default=())


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _elements(parent: etree._Element | None) -> list[etree._Element]:
    return [] if parent is None else [c for c in parent if isinstance(c.tag, str)]


def _problems(el: etree._Element, item: str, code: str, nested: str) -> Iterator[N3Problem]:
    """``el`` (one RequestFault/RequestWarning) and everything nested under it, depth first."""
    yield N3Problem(value_of(el, n3.FAULT_PROPERTY), value_of(el, n3.FAULT_MESSAGE), _int(value_of(el, code)))
    for sub in envelope.children(child(el, nested), item):
        yield from _problems(sub, item, code, nested)


_REMD_CODE = re.compile(re.escape(n3.REMD_CODE_MARKER) + r"\s*([A-Z][A-Z0-9_]{2,})")


def remd_codes_in(texts: Sequence[str | None]) -> tuple[str, ...]:
    """РЭМД codes N3 quotes in its messages (``Code: OBJECT_NOT_FOUND``), in order, once each."""
    found: list[str] = []
    for text in texts:
        for code in _REMD_CODE.findall(text or ""):
            if code not in found:
                found.append(code)
    return tuple(found)


def parse_answer(data: bytes, operation: str) -> N3Answer:
    """An answer to ``operation`` (AddPatient or AddMedRecord); ``SoapParseError`` when it is neither its response
    nor a SOAP fault."""
    headers, payload = envelope.open_envelope(data)
    if envelope.local_name(payload) != "Fault":
        envelope.expect(payload, f"{operation}Response")
        return N3Answer(taken=True)
    fault = envelope.read_fault(headers, payload)
    detail = child(payload, "detail") if headers.soap_version == "1.1" else child(payload, "Detail")
    errors: list[N3Problem] = []
    warnings: list[N3Problem] = []
    listed = False
    for el in _elements(detail):
        if etree.QName(el).namespace != n3.NS_COMMON:
            continue  # not N3's: a proxy's or WCF's own detail
        local = envelope.local_name(el)
        if local in (n3.ARRAY_OF_REQUEST_FAULT, n3.ARRAY_OF_REQUEST_WARNING):
            listed = True
            items = _elements(el)
        else:
            items = [el]
        for item in items:
            if envelope.local_name(item) == n3.REQUEST_FAULT:
                errors += _problems(item, n3.REQUEST_FAULT, n3.FAULT_CODE, n3.FAULT_ERRORS)
            elif envelope.local_name(item) == n3.REQUEST_WARNING:
                warnings += _problems(item, n3.REQUEST_WARNING, n3.WARNING_CODE, n3.WARNINGS)
    codes = remd_codes_in([fault.reason, *(p.message for p in errors)])
    return N3Answer(
        taken=not errors and bool(warnings),
        fault=fault,
        errors=tuple(errors),
        warnings=tuple(warnings),
        listed=listed,
        remd_codes=codes,
    )


# --- the status poll ([G]: N3 publishes no status method) --------------------------------------------------


def status_query(*, local_uid: str, organization: str) -> dict[str, Any]:
    """The guessed status method's question: this document of this organisation."""
    return {n3.STATUS_ID_DOCUMENT_MIS: local_uid, n3.STATUS_OID_MO: organization}


def parse_status_answer(data: Any, *, local_uid: str) -> soap.RegistryItem | None:
    """The registry item when N3 says РЭМД registered the document (status 4 with its emdrId), else None;
    ``SoapParseError`` when the answer is not the status object."""
    if not isinstance(data, dict) or data.get(n3.STATUS_ID_DOCUMENT_MIS) not in (None, local_uid):
        raise SoapParseError(
            "N3 status answer is not this document's status object", reason="MALFORMED_ANSWER"
        )
    state = data.get(n3.STATUS_STATE)
    emdr_id = data.get(n3.STATUS_EMDR_ID)
    if state != n3.STATUS_REGISTERED or not emdr_id:
        return None
    return soap.RegistryItem(
        emdr_id=str(emdr_id),
        local_uid=local_uid,
        registration_date_time=data.get(n3.STATUS_REGISTRATION_DATE),
    )


# --- the document storage: «Поиск документа по ДМС» -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One document N3's document storage found (its real output: no emdrId, no registration date)."""

    id_cda: str | None
    local_uid: str | None
    kind: str | None
    created: str | None
    organization: str | None


def search_query(
    *, dms_value: str, organization: str, since: date, until: date, kinds: Sequence[str] = ()
) -> dict[str, Any]:
    """The search for a patient's documents by their ДМС policy number, in an organisation, between two dates."""
    query: dict[str, Any] = {
        n3.DOC_DMS_VALUE: dms_value,
        n3.DOC_DATE_START: since.isoformat(),
        n3.DOC_DATE_END: until.isoformat(),
        n3.DOC_OID_MO: organization,
    }
    if kinds:
        query[n3.DOC_REMD_CODE] = [int(k) if str(k).isdigit() else k for k in kinds]
    return query


def parse_search_answer(data: Any) -> list[StoredDocument]:
    """The documents of a search answer (a list, or one wrapped in ``result``); ``SoapParseError`` otherwise."""
    rows = data.get(n3.DOC_RESULT) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SoapParseError("document storage answer is not a list of documents", reason="MALFORMED_ANSWER")
    return [
        StoredDocument(
            id_cda=r.get(n3.DOC_ID_CDA),
            local_uid=r.get(n3.DOC_ID_DOCUMENT_MIS),
            kind=str(r[n3.DOC_REMD_CODE]) if r.get(n3.DOC_REMD_CODE) is not None else None,
            created=r.get(n3.DOC_CREATED_DATE),
            organization=r.get(n3.DOC_OID_MO),
        )
        for r in rows
    ]
