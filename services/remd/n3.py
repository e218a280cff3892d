"""The N3.Health route's messages, both directions (our N3 transport and the emulator's N3 face).

* ``AddCase`` — EmkService, SOAP 1.1, no WS-Security: the auth GUID is the call's first parameter
  (brief §5). The case holds one ``MedDocument`` whose ``DocumentAttachment`` carries the signed СЭМД
  (``Data``), the organisation's detached signature (``OrganizationSign``) and each doctor's
  (``PersonalSigns``: ``Sign`` + ``Doctor``). ``build_add_case`` / ``parse_add_case``.
* its answer: ``AddCaseResponse`` (taken), or a SOAP Fault whose detail is N3's ``RequestFault``
  (``ErrorCode``, ``Message``, ``PropertyName``). ``build_add_case_response``, ``build_request_fault``,
  ``parse_add_case_answer`` (→ True, or the ``SoapFault`` with ``detail_code`` = ``ErrorCode``).
* the document-storage search (JSON) polling asks: ``search_query`` / ``search_answer`` /
  ``parse_search_answer`` → the registry items it names.

Every name is in :mod:`services.remd.n3_names`, most of them guesses (docs/transports.md says which).
Received bytes are parsed only with ``producer.xmlsafe.parse_xml``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal

from lxml import etree

from services.remd import envelope, soap
from services.remd import n3_names as n3
from services.remd import names as n
from services.remd.envelope import SoapParseError, child, children, value_of

__all__ = [
    "N3Case",
    "build_add_case",
    "build_add_case_response",
    "build_request_fault",
    "parse_add_case",
    "parse_add_case_answer",
    "parse_search_answer",
    "search_answer",
    "search_query",
    "soap_action",
]


def soap_action(operation: str = n3.ADD_CASE) -> str:
    """The SOAPAction of an EmkService operation (WCF's ``<ns>I<Service>/<Operation>``)."""
    return f"{n3.NS_SERVICE}{n3.SERVICE_INTERFACE}/{operation}"


def _q(local: str, ns: str = n3.NS_DTO) -> str:
    return f"{{{ns}}}{local}"


def _text(parent: etree._Element, local: str, value: Any) -> None:
    if value is not None:
        etree.SubElement(parent, _q(local)).text = str(value)


def _staff(parent: etree._Element, local: str, signer: soap.Signer) -> None:
    staff = etree.SubElement(parent, _q(local))
    person = etree.SubElement(staff, _q(n3.PERSON))
    for name, value in (
        (n3.ID_PERSON_MIS, signer.local_id),
        (n3.FAMILY_NAME, signer.family),
        (n3.GIVEN_NAME, signer.given),
        (n3.MIDDLE_NAME, signer.patronymic),
        (n3.SNILS, signer.snils),
    ):
        _text(person, name, value)
    _text(staff, n3.ID_POSITION, signer.position.code if signer.position else None)
    _text(staff, n3.POSITION_VERSION, signer.position.code_system_version if signer.position else None)
    _text(staff, n3.ID_SPECIALITY, signer.speciality.code if signer.speciality else None)
    _text(staff, n3.ROLE, signer.role.code)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class N3Case:
    """What one ``AddCase`` carries (the emulator's view)."""

    token: str
    lpu_id: str
    local_uid: str
    patient_local_id: str | None
    kind: str | None
    creation_date: str | None
    document: bytes
    personal_signatures: tuple[soap.PersonalSignature, ...]
    org_signature: bytes | None


def build_add_case(registration: soap.Registration, *, document: bytes, token: str, lpu_id: str) -> bytes:
    """``AddCase(guid, idLpu, caseDto)``: one closed case holding the signed СЭМД and its signatures."""
    r = registration
    env = etree.Element(f"{{{n.NS_SOAP11}}}Envelope", nsmap={"s": n.NS_SOAP11})
    etree.SubElement(env, f"{{{n.NS_SOAP11}}}Header")
    body = etree.SubElement(env, f"{{{n.NS_SOAP11}}}Body")
    call = etree.SubElement(body, _q(n3.ADD_CASE, n3.NS_SERVICE), nsmap={None: n3.NS_SERVICE})
    etree.SubElement(call, _q(n3.GUID, n3.NS_SERVICE)).text = token
    etree.SubElement(call, _q(n3.ID_LPU, n3.NS_SERVICE)).text = lpu_id
    case = etree.SubElement(call, _q(n3.CASE_DTO, n3.NS_SERVICE), nsmap={"a": n3.NS_DTO, "i": n3.NS_XSI})
    case.set(_q("type", n3.NS_XSI), f"a:{n3.CASE_TYPE}")
    for local, value in (
        (n3.ID_CASE_MIS, r.local_uid),
        (n3.ID_PATIENT_MIS, r.patient.local_id),
        (n3.ID_LPU_FIELD, lpu_id),
        (n3.OPEN_DATE, r.creation_date_time),
        (n3.CLOSE_DATE, r.creation_date_time),
    ):
        _text(case, local, value)
    record = etree.SubElement(etree.SubElement(case, _q(n3.MED_RECORDS)), _q(n3.MED_RECORD))
    record.set(_q("type", n3.NS_XSI), f"a:{n3.MED_DOCUMENT}")
    for local, value in (
        (n3.CREATION_DATE, r.creation_date_time),
        (n3.HEADER, r.document_number),
        (n3.ID_DOCUMENT_MIS, r.local_uid),
        (n3.ID_MED_DOCUMENT_TYPE, r.kind),
    ):
        _text(record, local, value)
    if r.personal_signatures:
        _staff(record, n3.AUTHOR, r.personal_signatures[0].signer)
    attachment = etree.SubElement(etree.SubElement(record, _q(n3.ATTACHMENTS)), _q(n3.DOCUMENT_ATTACHMENT))
    _text(attachment, n3.DATA, _b64(document))
    _text(attachment, n3.MIME_TYPE, n3.MIME_TYPE_SEMD)
    if r.org_signature is not None:
        _text(attachment, n3.ORGANIZATION_SIGN, _b64(r.org_signature.signature))
    signs = etree.SubElement(attachment, _q(n3.PERSONAL_SIGNS))
    for ps in r.personal_signatures:
        sign = etree.SubElement(signs, _q(n3.PERSONAL_SIGN))
        _staff(sign, n3.DOCTOR, ps.signer)
        _text(sign, n3.SIGN, _b64(ps.signature))
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def _coded(code: str | None, version: str | None) -> soap.Coded | None:
    return soap.Coded(code, version) if code else None


def _read_staff(el: etree._Element | None) -> soap.Signer:
    person = child(el, n3.PERSON)
    return soap.Signer(
        role=soap.Coded(value_of(el, n3.ROLE) or n.DEFAULT_SIGNER_ROLE, n.DEFAULT_SIGNER_ROLE_VERSION),
        snils=value_of(person, n3.SNILS),
        local_id=value_of(person, n3.ID_PERSON_MIS),
        family=value_of(person, n3.FAMILY_NAME),
        given=value_of(person, n3.GIVEN_NAME),
        patronymic=value_of(person, n3.MIDDLE_NAME),
        position=_coded(value_of(el, n3.ID_POSITION), value_of(el, n3.POSITION_VERSION)),
        speciality=_coded(value_of(el, n3.ID_SPECIALITY), None),
    )


def parse_add_case(data: bytes) -> N3Case:
    """An ``AddCase`` request (the emulator's side): SoapParseError when it is not one or lacks the document."""
    headers, call = envelope.open_envelope(data)
    envelope.expect(call, n3.ADD_CASE)
    case = child(call, n3.CASE_DTO)
    record = child(child(case, n3.MED_RECORDS), n3.MED_RECORD)
    attachment = child(child(record, n3.ATTACHMENTS), n3.DOCUMENT_ATTACHMENT)
    if attachment is None or value_of(attachment, n3.DATA) is None:
        raise SoapParseError(
            f"{n3.ADD_CASE}: no {n3.MED_DOCUMENT} with a {n3.DOCUMENT_ATTACHMENT} and its {n3.DATA}",
            reason="SOAP_MISSING_ELEMENT",
            element=n3.DATA,
        )
    signs = []
    for sign in children(child(attachment, n3.PERSONAL_SIGNS), n3.PERSONAL_SIGN):
        signs.append(
            soap.PersonalSignature(
                signer=_read_staff(child(sign, n3.DOCTOR)),
                signature=envelope.unb64(value_of(sign, n3.SIGN), n3.SIGN),
            )
        )
    org = value_of(attachment, n3.ORGANIZATION_SIGN)
    return N3Case(
        token=envelope.required(call, n3.GUID, n3.ADD_CASE),
        lpu_id=envelope.required(call, n3.ID_LPU, n3.ADD_CASE),
        local_uid=envelope.required(record, n3.ID_DOCUMENT_MIS, n3.MED_DOCUMENT),
        patient_local_id=value_of(case, n3.ID_PATIENT_MIS),
        kind=value_of(record, n3.ID_MED_DOCUMENT_TYPE),
        creation_date=value_of(record, n3.CREATION_DATE),
        document=envelope.unb64(value_of(attachment, n3.DATA), n3.DATA),
        personal_signatures=tuple(signs),
        org_signature=envelope.unb64(org, n3.ORGANIZATION_SIGN) if org else None,
    )


def _envelope() -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{n.NS_SOAP11}}}Envelope", nsmap={"s": n.NS_SOAP11})
    return env, etree.SubElement(env, f"{{{n.NS_SOAP11}}}Body")


def build_add_case_response() -> bytes:
    """EmkService's answer to a case it took (WCF: an empty ``AddCaseResponse``)."""
    env, body = _envelope()
    etree.SubElement(body, _q(n3.ADD_CASE_RESPONSE, n3.NS_SERVICE), nsmap={None: n3.NS_SERVICE})
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def build_request_fault(
    *, code: str, message: str, property_name: str | None = None, server: bool = False
) -> bytes:
    """A SOAP 1.1 Fault whose detail is N3's ``RequestFault`` (``server`` → ``s:Server``: worth retrying)."""
    env, body = _envelope()
    fault = etree.SubElement(body, f"{{{n.NS_SOAP11}}}Fault")
    etree.SubElement(fault, "faultcode").text = "s:Server" if server else "s:Client"
    etree.SubElement(fault, "faultstring").text = message
    detail = etree.SubElement(
        etree.SubElement(fault, "detail"), _q(n3.REQUEST_FAULT), nsmap={None: n3.NS_DTO}
    )
    _text(detail, n3.FAULT_CODE, code)
    _text(detail, n3.FAULT_MESSAGE, message)
    _text(detail, n3.FAULT_PROPERTY, property_name)
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def parse_add_case_answer(data: bytes) -> Literal[True] | soap.SoapFault:
    """True for ``AddCaseResponse``; the fault (``detail_code`` = ``RequestFault/ErrorCode``) otherwise."""
    headers, payload = envelope.open_envelope(data)
    if envelope.local_name(payload) != "Fault":
        envelope.expect(payload, n3.ADD_CASE_RESPONSE)
        return True
    fault = envelope.read_fault(headers, payload)
    request_fault = next(
        (el for el in payload.iter(etree.Element) if envelope.local_name(el) == n3.REQUEST_FAULT), None
    )
    if request_fault is None:
        return fault
    return replace(
        fault,
        detail_code=value_of(request_fault, n3.FAULT_CODE) or fault.detail_code,
        detail_message=value_of(request_fault, n3.FAULT_MESSAGE) or fault.detail_message,
    )


# --- document storage (JSON) ---------------------------------------------------------------------------


def search_query(*, organization: str, kind: str, since: date, until: date) -> dict[str, Any]:
    """The document-storage search for an organisation's documents of a kind in a date window."""
    return {
        n3.DOC_OID_MO: organization,
        n3.DOC_REMD_CODE: [kind],
        n3.DOC_DATE_FROM: since.isoformat(),
        n3.DOC_DATE_TO: until.isoformat(),
    }


def search_answer(
    items: Iterable[soap.RegistryItem], *, id_cda: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The emulator's answer: each document N3 holds, with its РЭМД number once registered."""
    return {
        n3.DOC_RESULT: [
            {
                n3.DOC_ID_DOCUMENT_MIS: i.local_uid,
                n3.DOC_ID_CDA: (id_cda or {}).get(i.local_uid or ""),
                n3.DOC_REMD_CODE: i.kind,
                n3.DOC_OID_MO: i.organization,
                n3.DOC_CREATED_DATE: i.creation_date_time,
                n3.DOC_EMDR_ID: i.emdr_id,
                n3.DOC_REGISTRATION_DATE: i.registration_date_time,
            }
            for i in items
        ]
    }


def parse_search_answer(data: Any) -> list[soap.RegistryItem]:
    """The registry items of a document-storage answer; SoapParseError when it is not one."""
    rows = data.get(n3.DOC_RESULT) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SoapParseError("document storage answer has no result list", reason="MALFORMED_ANSWER")
    return [
        soap.RegistryItem(
            emdr_id=r.get(n3.DOC_EMDR_ID),
            local_uid=r.get(n3.DOC_ID_DOCUMENT_MIS),
            kind=r.get(n3.DOC_REMD_CODE),
            organization=r.get(n3.DOC_OID_MO),
            creation_date_time=r.get(n3.DOC_CREATED_DATE),
            registration_date_time=r.get(n3.DOC_REGISTRATION_DATE),
        )
        for r in rows
    ]
