"""Building and parsing the РЭМД SOAP messages, both directions (МИС and the emulator of РЭМД/ИПС).

Messages (brief §2, §8), each with a ``build_*`` returning signed bytes and a ``parse_*`` returning
a typed result:

=============================  =====================  ==========================================
message                        direction              build / parse
=============================  =====================  ==========================================
registerDocument request       МИС → РЭМД             build_register_document / parse_register_document
synchronous answer             РЭМД → МИС             build_sync_answer / parse_answer → SyncAnswer | SoapFault
SOAP Fault (1.1 and 1.2)       either                 build_fault / parse_answer, parse_fault
registerDocumentResult         РЭМД → МИС callback    build_register_result / parse_register_result
callback acknowledgement       МИС → РЭМД             build_callback_ack / parse_callback_ack
getDocumentFile                РЭМД → МИС             build_file_request / parse_file_request
getDocumentFileResponse        МИС → РЭМД             build_file_response / parse_file_response
searchRegistryItem             МИС → РЭМД, answer     build_search_request / parse_search_request,
                                                      build_search_response / parse_search_response
getRegistryItem                МИС → РЭМД, answer     build_get_registry_item / parse_get_registry_item,
                                                      build_registry_item_response / parse_registry_item_response
=============================  =====================  ==========================================

Every element name comes from :mod:`services.remd_names` (most are guesses until the official XSD is
obtained). Readers are tolerant: children are matched by local name in any namespace, so a
namespace that turns out different does not break parsing, while writers use the brief's namespaces.
Parsing only goes through ``services.xmlsafe.parse_xml``. Signing (``key``/``certificate``) is
``services.wssec``; pass ``key=None`` to build an unsigned message (tests, the emulator's sync
answers). Verifying a received message's signature is the caller's step (``wssec.verify_envelope``),
done on the same bytes before parsing.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from lxml import etree

from services import remd_names as n
from services import wssec
from services.errors import PermanentError
from services.remd_codes import CodeInfo, classify
from services.xmlsafe import parse_xml

__all__ = [
    "CallbackAck", "Doctor", "FileRequest", "FileResponse", "Headers", "OrganizationSign", "Patient",
    "PersonalSign", "PowerOfAttorney", "RegisterRequest", "RegisterResult", "Registration", "RegistryItem",
    "RegistryItemAnswer", "RemdError", "SearchQuery", "SearchRequest", "SearchResult", "SoapFault",
    "SoapParseError", "SyncAnswer", "build_callback_ack", "build_fault", "build_file_request",
    "build_file_response", "build_get_registry_item", "build_register_document", "build_register_result",
    "build_registry_item_response", "build_search_request", "build_search_response", "build_sync_answer",
    "checksum", "new_message_id", "normalize_message_id", "parse_answer", "parse_callback_ack", "parse_fault",
    "parse_file_request", "parse_file_response", "parse_get_registry_item", "parse_register_document",
    "parse_register_result", "parse_registry_item_response", "parse_search_request", "parse_search_response",
]


class SoapParseError(PermanentError):
    """The bytes are XML but not the SOAP message expected (wrong operation, missing element)."""

    reason = "SOAP_UNEXPECTED"


# --- identifiers and checksums ------------------------------------------------------------------

def new_message_id() -> str:
    """A fresh wsa:MessageID: a plain random UUID, as the reference signer writes it (brief §2.3 [C])."""
    return str(uuid.uuid4())


def normalize_message_id(value: str | None) -> str:
    """The one form MessageIDs are compared in: no ``urn:uuid:``/``uuid:`` prefix, lower case.

    A UUID written without hyphens (seen in gateway journals, brief §2.3) gets its hyphens back,
    so every spelling of one UUID compares equal. Non-UUID ids are kept, stripped and lower-cased.
    """
    text = (value or "").strip()
    low = text.lower()
    for prefix in ("urn:uuid:", "uuid:"):
        if low.startswith(prefix):
            low = low[len(prefix):]
            break
    try:
        return str(uuid.UUID(low))
    except ValueError:
        return low


def checksum(data: bytes) -> int:
    """The ``checksum`` that accompanies base64 ``data`` (brief §2.5 [G]: believed CRC32 of the bytes).

    The one place this guess lives: change it here when the official XSD says otherwise.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


# --- typed data ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RemdError:
    """One ``errors/item`` of a РЭМД answer."""

    code: str
    message: str = ""

    @property
    def info(self) -> CodeInfo:
        return classify(self.code)


@dataclass(frozen=True, slots=True)
class Headers:
    """WS-Addressing and transport header values of a received message."""

    message_id: str | None = None
    relates_to: str | None = None
    action: str | None = None
    to: str | None = None
    reply_to: str | None = None
    client_entity_id: str | None = None
    soap_version: str = "1.2"


@dataclass(frozen=True, slots=True)
class Patient:
    snils: str | None = None
    local_id: str | None = None
    family: str | None = None
    given: str | None = None
    patronymic: str | None = None
    gender: str | None = None
    birth_date: str | None = None


@dataclass(frozen=True, slots=True)
class Doctor:
    role: str
    position: str | None = None
    speciality: str | None = None
    local_id: str | None = None
    snils: str | None = None
    family: str | None = None
    given: str | None = None
    patronymic: str | None = None


@dataclass(frozen=True, slots=True)
class PowerOfAttorney:
    """МЧД reference on a signature (brief §6, all names [G]): НомДовер + optionally the МЧД and its signature."""

    number: str
    principal_inn: str | None = None
    principal_ogrn: str | None = None
    document: bytes | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class PersonalSign:
    doctor: Doctor
    signature: bytes                      # detached CMS, DER
    power_of_attorney: PowerOfAttorney | None = None


@dataclass(frozen=True, slots=True)
class OrganizationSign:
    signature: bytes                      # detached CMS, DER
    power_of_attorney: PowerOfAttorney | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """What a ``registerDocument`` request says about one document (brief §2.4)."""

    kind: str
    system: str
    organization: str
    local_uid: str
    creation_date_time: str
    patient: Patient
    personal_signs: Sequence[PersonalSign]
    organization_sign: OrganizationSign | None = None
    department: str | None = None
    document_number: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A parsed ``registerDocument`` request (the emulator's view)."""

    headers: Headers
    registration: Registration


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    """The synchronous ``registerDocumentResponse``: ``success`` means *accepted*, not registered."""

    status: str
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)

    @property
    def accepted(self) -> bool:
        return self.status.lower() == n.STATUS_SUCCESS and not self.errors


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.1 or 1.2 Fault, with the РЭМД code and ИПС fault type when the detail has them."""

    code: str                       # faultcode / Code/Value, e.g. "soap:Server"
    reason: str                     # faultstring / Reason/Text
    detail_code: str | None = None  # detail code (or errorCode): an НСИ .305 mnemonic when from РЭМД
    detail_message: str | None = None
    ips_fault: str | None = None    # ValidationFault | AuthorizationFault | SystemFault
    headers: Headers = field(default_factory=Headers)

    @property
    def info(self) -> CodeInfo | None:
        return classify(self.detail_code) if self.detail_code else None

    @property
    def server_side(self) -> bool:
        """The fault blames the server (SOAP 1.1 Server / 1.2 Receiver): a retry may help."""
        local = self.code.rsplit(":", 1)[-1]
        return local in ("Server", "Receiver")


@dataclass(frozen=True, slots=True)
class RegistryItem:
    emdr_id: str | None = None
    local_uid: str | None = None
    kind: str | None = None
    organization: str | None = None
    registration_date_time: str | None = None
    store_till_date: str | None = None
    document_version: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """The asynchronous ``registerDocumentResult`` callback."""

    relates_to_message: str
    status: str
    local_uid: str | None = None
    kind: str | None = None
    organization: str | None = None
    registry_item: RegistryItem | None = None
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)

    @property
    def registered(self) -> bool:
        return self.status.lower() == n.STATUS_SUCCESS and self.registry_item is not None \
            and bool(self.registry_item.emdr_id)


@dataclass(frozen=True, slots=True)
class CallbackAck:
    status: str
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class FileRequest:
    local_uid: str
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class FileResponse:
    data: bytes
    checksum: int | None
    headers: Headers = field(default_factory=Headers)

    @property
    def checksum_ok(self) -> bool:
        return self.checksum is not None and self.checksum == checksum(self.data)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    organization: str | None = None
    kind: str | None = None
    register_date_begin: str | None = None
    register_date_end: str | None = None
    patient_snils: str | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: SearchQuery
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class SearchResult:
    status: str
    items: tuple[RegistryItem, ...] = ()
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class RegistryItemAnswer:
    status: str
    item: RegistryItem | None = None
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)


# --- writing ------------------------------------------------------------------------------------

def _soap_ns(version: str) -> str:
    if version not in ("1.1", "1.2"):
        raise ValueError("soap_version must be '1.1' or '1.2'")
    return n.NS_SOAP11 if version == "1.1" else n.NS_SOAP12


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _sub(parent: etree._Element, ns: str, local: str, value: Any = None, *, always: bool = False) -> etree._Element | None:
    """Append ``<local>value</local>``; skipped when value is None unless ``always``."""
    if value is None and not always:
        return None
    el = etree.SubElement(parent, _q(ns, local))
    if value is not None:
        el.text = _text(value)
    return el


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _envelope(*, soap_version: str, action: str, message_id: str, to: str | None = None,
              reply_to: str | None = None, relates_to: str | None = None,
              client_entity_id: str | None = None, body_ns: str) -> tuple[etree._Element, etree._Element]:
    """(Envelope, Body) with the header in the reference signer's order (brief §2.3)."""
    soap = _soap_ns(soap_version)
    nsmap = {"soap": soap, "wsa": n.NS_WSA, "wsu": n.NS_WSU, "wsse": n.NS_WSSE, "ds": n.NS_DS}
    if client_entity_id is not None:
        nsmap["egisz"] = n.NS_EGISZ
    nsmap["emdr" if body_ns == n.NS_EMDR_SERVICE else "cb"] = body_ns
    env = etree.Element(_q(soap, "Envelope"), nsmap=nsmap)
    header = etree.SubElement(env, _q(soap, "Header"))
    if client_entity_id is not None:
        th = etree.SubElement(header, _q(n.NS_EGISZ, n.TRANSPORT_HEADER))
        ai = etree.SubElement(th, _q(n.NS_EGISZ, n.AUTH_INFO))
        etree.SubElement(ai, _q(n.NS_EGISZ, n.CLIENT_ENTITY_ID)).text = client_entity_id
    etree.SubElement(header, _q(n.NS_WSA, "MessageID")).text = message_id
    if reply_to is not None:
        rt = etree.SubElement(header, _q(n.NS_WSA, "ReplyTo"))
        etree.SubElement(rt, _q(n.NS_WSA, "Address")).text = reply_to
    if to is not None:
        etree.SubElement(header, _q(n.NS_WSA, "To")).text = to
    etree.SubElement(header, _q(n.NS_WSA, "Action")).text = action
    if relates_to is not None:
        etree.SubElement(header, _q(n.NS_WSA, "RelatesTo")).text = relates_to
    body = etree.SubElement(env, _q(soap, "Body"))
    return env, body


def _finish(env: etree._Element, key: Any, certificate: Any, now: datetime | None) -> bytes:
    if key is None:
        return etree.tostring(env, encoding="UTF-8", xml_declaration=True)
    if certificate is None:
        raise ValueError("a certificate is needed to sign")
    return wssec.sign_envelope(env, key=key, certificate=certificate, now=now)


def _errors(parent: etree._Element, ns: str, errors: Iterable[RemdError]) -> None:
    errors = list(errors)
    if not errors:
        return
    container = etree.SubElement(parent, _q(ns, n.ERRORS))
    for err in errors:
        item = etree.SubElement(container, _q(ns, n.ITEM))
        _sub(item, ns, n.CODE, err.code, always=True)
        _sub(item, ns, n.MESSAGE, err.message, always=True)


def _poa(parent: etree._Element, ns: str, poa: PowerOfAttorney | None) -> None:
    if poa is None:
        return
    el = etree.SubElement(parent, _q(ns, n.POWER_OF_ATTORNEY))
    _sub(el, ns, n.POA_NUMBER, poa.number, always=True)
    _sub(el, ns, n.POA_PRINCIPAL_INN, poa.principal_inn)
    _sub(el, ns, n.POA_PRINCIPAL_OGRN, poa.principal_ogrn)
    if poa.document is not None:
        _sub(el, ns, n.POA_DOCUMENT, _b64(poa.document))
    if poa.signature is not None:
        _sub(el, ns, n.POA_SIGNATURE, _b64(poa.signature))


def _signed_data(parent: etree._Element, ns: str, data: bytes) -> None:
    _sub(parent, ns, n.DATA, _b64(data), always=True)
    _sub(parent, ns, n.CHECKSUM, checksum(data), always=True)


def build_register_document(registration: Registration, *, client_entity_id: str, to: str, reply_to: str,
                            key: Any, certificate: Any, message_id: str | None = None,
                            soap_version: str = "1.2", now: datetime | None = None) -> tuple[bytes, str]:
    """The signed ``registerDocument`` request and its MessageID (store it *before* sending, brief §4)."""
    if not registration.personal_signs:
        raise ValueError("registerDocument needs at least one personal signature")
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_REGISTER_DOCUMENT, message_id=message_id,
                          to=to, reply_to=reply_to, client_entity_id=client_entity_id, body_ns=ns)
    r = registration
    req = etree.SubElement(body, _q(ns, n.REGISTER_DOCUMENT_REQUEST))
    _sub(req, ns, n.KIND, r.kind, always=True)
    _sub(req, ns, n.SYSTEM, r.system, always=True)
    _sub(req, ns, n.ORGANIZATION, r.organization, always=True)
    _sub(req, ns, n.DEPARTMENT, r.department)
    _sub(req, ns, n.LOCAL_UID, r.local_uid, always=True)
    _sub(req, ns, n.DOCUMENT_NUMBER, r.document_number)
    _sub(req, ns, n.CREATION_DATE_TIME, r.creation_date_time, always=True)
    p = etree.SubElement(req, _q(ns, n.PATIENT))
    for local, value in ((n.SNILS, r.patient.snils), (n.LOCAL_ID, r.patient.local_id), (n.FAMILY, r.patient.family),
                         (n.GIVEN, r.patient.given), (n.PATRONYMIC, r.patient.patronymic),
                         (n.GENDER, r.patient.gender), (n.BIRTH_DATE, r.patient.birth_date)):
        _sub(p, ns, local, value)
    signs = etree.SubElement(req, _q(ns, n.PERSONAL_SIGNS))
    for ps in r.personal_signs:
        sign = etree.SubElement(signs, _q(ns, n.PERSONAL_SIGN))
        doc = etree.SubElement(sign, _q(ns, n.DOCTOR))
        d = ps.doctor
        for local, value in ((n.ROLE, d.role), (n.POSITION, d.position), (n.SPECIALITY, d.speciality),
                             (n.LOCAL_ID, d.local_id), (n.SNILS, d.snils), (n.FAMILY, d.family),
                             (n.GIVEN, d.given), (n.PATRONYMIC, d.patronymic)):
            _sub(doc, ns, local, value)
        _signed_data(etree.SubElement(sign, _q(ns, n.SIGNATURE)), ns, ps.signature)
        _poa(sign, ns, ps.power_of_attorney)
    if r.organization_sign is not None:
        org = etree.SubElement(req, _q(ns, n.ORGANIZATION_SIGN))
        _signed_data(org, ns, r.organization_sign.signature)
        _poa(org, ns, r.organization_sign.power_of_attorney)
    return _finish(env, key, certificate, now), message_id


def build_sync_answer(*, relates_to: str, status: str = n.STATUS_SUCCESS, errors: Iterable[RemdError] = (),
                      key: Any = None, certificate: Any = None, message_id: str | None = None,
                      soap_version: str = "1.2", now: datetime | None = None) -> bytes:
    """РЭМД's synchronous ``registerDocumentResponse`` (the emulator's side)."""
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_REGISTER_DOCUMENT_RESPONSE,
                          message_id=message_id or new_message_id(), relates_to=relates_to, body_ns=ns)
    resp = etree.SubElement(body, _q(ns, n.REGISTER_DOCUMENT_RESPONSE))
    _sub(resp, ns, n.STATUS, status, always=True)
    _errors(resp, ns, errors)
    return _finish(env, key, certificate, now)


def build_fault(*, code: str, reason: str, detail_code: str | None = None, detail_message: str | None = None,
                ips_fault: str | None = None, relates_to: str | None = None, soap_version: str = "1.1",
                key: Any = None, certificate: Any = None, message_id: str | None = None,
                now: datetime | None = None) -> bytes:
    """A SOAP Fault. ``code``: ``Client``/``Server`` (1.1) or ``Sender``/``Receiver`` (1.2), unprefixed.

    The detail carries ``code``/``message`` (РЭМД style) and, with ``ips_fault``, an ИПС typed fault
    element holding the message.
    """
    soap = _soap_ns(soap_version)
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_FAULT, message_id=message_id or new_message_id(),
                          relates_to=relates_to, body_ns=n.NS_EMDR_SERVICE)
    fault = etree.SubElement(body, _q(soap, "Fault"))
    if soap_version == "1.1":
        etree.SubElement(fault, "faultcode").text = f"soap:{code}"
        etree.SubElement(fault, "faultstring").text = reason
        detail = etree.SubElement(fault, "detail")
    else:
        etree.SubElement(etree.SubElement(fault, _q(soap, "Code")), _q(soap, "Value")).text = f"soap:{code}"
        text = etree.SubElement(etree.SubElement(fault, _q(soap, "Reason")), _q(soap, "Text"))
        text.text = reason
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "ru")
        detail = etree.SubElement(fault, _q(soap, "Detail"))
    if ips_fault is not None:
        if ips_fault not in n.IPS_FAULTS:
            raise ValueError(f"ips_fault must be one of {n.IPS_FAULTS}")
        _sub(etree.SubElement(detail, _q(n.NS_EGISZ, ips_fault)), n.NS_EGISZ, n.MESSAGE,
             detail_message or reason, always=True)
    if detail_code is not None:
        _sub(detail, n.NS_EMDR_SERVICE, n.CODE, detail_code, always=True)
        _sub(detail, n.NS_EMDR_SERVICE, n.MESSAGE, detail_message or "", always=True)
    return _finish(env, key, certificate, now)


def _registry_item(parent: etree._Element, ns: str, item: RegistryItem, *, full: bool) -> None:
    el = etree.SubElement(parent, _q(ns, n.REGISTRY_ITEM if not full else n.ITEM))
    _sub(el, ns, n.EMDR_ID, item.emdr_id)
    if full:
        _sub(el, ns, n.LOCAL_UID, item.local_uid)
        _sub(el, ns, n.KIND, item.kind)
        _sub(el, ns, n.ORGANIZATION, item.organization)
    _sub(el, ns, n.REGISTRATION_DATE_TIME, item.registration_date_time)
    _sub(el, ns, n.STORE_TILL_DATE, item.store_till_date)
    _sub(el, ns, n.DOCUMENT_VERSION, item.document_version)


def build_register_result(result: RegisterResult, *, to: str, key: Any, certificate: Any,
                          message_id: str | None = None, soap_version: str = "1.1",
                          now: datetime | None = None) -> bytes:
    """The ``registerDocumentResult`` callback (the emulator's side; SOAP 1.1 as in peer samples)."""
    ns = n.NS_EMDR_CALLBACK
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_REGISTER_DOCUMENT_RESULT,
                          message_id=message_id or new_message_id(), to=to, body_ns=ns)
    el = etree.SubElement(body, _q(ns, n.REGISTER_DOCUMENT_RESULT))
    _sub(el, ns, n.RELATES_TO_MESSAGE, result.relates_to_message, always=True)
    _sub(el, ns, n.STATUS, result.status, always=True)
    _sub(el, ns, n.LOCAL_UID, result.local_uid)
    _sub(el, ns, n.KIND, result.kind)
    _sub(el, ns, n.ORGANIZATION, result.organization)
    if result.registry_item is not None:
        _registry_item(el, ns, result.registry_item, full=False)
    _errors(el, ns, result.errors)
    return _finish(env, key, certificate, now)


def build_callback_ack(*, relates_to: str, key: Any, certificate: Any, status: str = n.STATUS_SUCCESS,
                       message_id: str | None = None, soap_version: str = "1.1",
                       now: datetime | None = None) -> bytes:
    """Our signed acknowledgement of a callback: accept at once, ``wsa:RelatesTo`` = its MessageID (§8.4)."""
    ns = n.NS_EMDR_CALLBACK
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_REGISTER_DOCUMENT_RESULT_RESPONSE,
                          message_id=message_id or new_message_id(), relates_to=relates_to, body_ns=ns)
    _sub(etree.SubElement(body, _q(ns, n.REGISTER_DOCUMENT_RESULT_RESPONSE)), ns, n.STATUS, status, always=True)
    return _finish(env, key, certificate, now)


def build_file_request(*, local_uid: str, to: str, key: Any, certificate: Any, reply_to: str | None = None,
                       message_id: str | None = None, soap_version: str = "1.2",
                       now: datetime | None = None) -> bytes:
    """РЭМД's ``getDocumentFile`` request to the МИС (the emulator's side)."""
    ns = n.NS_EMDR_CALLBACK
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_GET_DOCUMENT_FILE,
                          message_id=message_id or new_message_id(), to=to, reply_to=reply_to, body_ns=ns)
    _sub(etree.SubElement(body, _q(ns, n.GET_DOCUMENT_FILE)), ns, n.LOCAL_UID, local_uid, always=True)
    return _finish(env, key, certificate, now)


def build_file_response(*, relates_to: str, data: bytes, key: Any, certificate: Any,
                        message_id: str | None = None, soap_version: str = "1.2",
                        now: datetime | None = None) -> bytes:
    """The МИС's ``getDocumentFileResponse``: exactly the signed bytes, base64, with their checksum."""
    ns = n.NS_EMDR_CALLBACK
    env, body = _envelope(soap_version=soap_version, action=n.ACTION_GET_DOCUMENT_FILE_RESPONSE,
                          message_id=message_id or new_message_id(), relates_to=relates_to, body_ns=ns)
    _signed_data(etree.SubElement(body, _q(ns, n.GET_DOCUMENT_FILE_RESPONSE)), ns, data)
    return _finish(env, key, certificate, now)


def build_search_request(query: SearchQuery, *, client_entity_id: str, to: str, key: Any, certificate: Any,
                         message_id: str | None = None, now: datetime | None = None) -> tuple[bytes, str]:
    """``searchRegistryItemRequest`` (element names [C] from the remd-dev stand, brief §2.1)."""
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version="1.2", action=n.ACTION_SEARCH_REGISTRY_ITEM, message_id=message_id,
                          to=to, reply_to=n.WSA_ANONYMOUS, client_entity_id=client_entity_id, body_ns=ns)
    el = etree.SubElement(body, _q(ns, n.SEARCH_REGISTRY_ITEM_REQUEST))
    _sub(el, ns, n.ORGANIZATION, query.organization)
    _sub(el, ns, n.KIND, query.kind)
    _sub(el, ns, n.REGISTER_DATE_BEGIN, query.register_date_begin)
    _sub(el, ns, n.REGISTER_DATE_END, query.register_date_end)
    _sub(el, ns, n.PATIENT_SNILS, query.patient_snils)
    return _finish(env, key, certificate, now), message_id


def build_search_response(*, relates_to: str, items: Iterable[RegistryItem] = (), status: str = n.STATUS_SUCCESS,
                          errors: Iterable[RemdError] = (), key: Any = None, certificate: Any = None,
                          message_id: str | None = None, now: datetime | None = None) -> bytes:
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version="1.2", action=n.ACTION_SEARCH_REGISTRY_ITEM_RESPONSE,
                          message_id=message_id or new_message_id(), relates_to=relates_to, body_ns=ns)
    el = etree.SubElement(body, _q(ns, n.SEARCH_REGISTRY_ITEM_RESPONSE))
    _sub(el, ns, n.STATUS, status, always=True)
    matches = etree.SubElement(el, _q(ns, n.MATCHES))
    for item in items:
        _registry_item(matches, ns, item, full=True)
    _errors(el, ns, errors)
    return _finish(env, key, certificate, now)


def build_get_registry_item(*, emdr_id: str, client_entity_id: str, to: str, key: Any, certificate: Any,
                            message_id: str | None = None, now: datetime | None = None) -> tuple[bytes, str]:
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version="1.2", action=n.ACTION_GET_REGISTRY_ITEM, message_id=message_id, to=to,
                          reply_to=n.WSA_ANONYMOUS, client_entity_id=client_entity_id, body_ns=ns)
    _sub(etree.SubElement(body, _q(ns, n.GET_REGISTRY_ITEM_REQUEST)), ns, n.EMDR_ID, emdr_id, always=True)
    return _finish(env, key, certificate, now), message_id


def build_registry_item_response(*, relates_to: str, item: RegistryItem | None, status: str = n.STATUS_SUCCESS,
                                 errors: Iterable[RemdError] = (), key: Any = None, certificate: Any = None,
                                 message_id: str | None = None, now: datetime | None = None) -> bytes:
    ns = n.NS_EMDR_SERVICE
    env, body = _envelope(soap_version="1.2", action=n.ACTION_GET_REGISTRY_ITEM_RESPONSE,
                          message_id=message_id or new_message_id(), relates_to=relates_to, body_ns=ns)
    el = etree.SubElement(body, _q(ns, n.GET_REGISTRY_ITEM_RESPONSE))
    _sub(el, ns, n.STATUS, status, always=True)
    if item is not None:
        _registry_item(el, ns, item, full=True)
    _errors(el, ns, errors)
    return _finish(env, key, certificate, now)


# --- reading ------------------------------------------------------------------------------------

def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _child(parent: etree._Element | None, local: str) -> etree._Element | None:
    if parent is None:
        return None
    for c in parent:
        if isinstance(c.tag, str) and _local(c) == local:
            return c
    return None


def _children(parent: etree._Element | None, local: str) -> list[etree._Element]:
    if parent is None:
        return []
    return [c for c in parent if isinstance(c.tag, str) and _local(c) == local]


def _val(parent: etree._Element | None, local: str) -> str | None:
    el = _child(parent, local)
    if el is None:
        return None
    text = "".join(el.itertext()).strip()
    return text or None


def _required(parent: etree._Element, local: str, what: str) -> str:
    value = _val(parent, local)
    if value is None:
        raise SoapParseError(f"{what}: no {local}", reason="SOAP_MISSING_ELEMENT", element=local)
    return value


def _unb64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise SoapParseError(f"{what} is not valid base64", reason="SOAP_BAD_BASE64") from None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _open(data: bytes) -> tuple[Headers, etree._Element]:
    """(headers, the Body's first element) of a SOAP 1.1/1.2 message."""
    root = parse_xml(data)
    ns = etree.QName(root).namespace
    if ns not in (n.NS_SOAP11, n.NS_SOAP12) or _local(root) != "Envelope":
        raise SoapParseError("not a SOAP envelope", reason="SOAP_NOT_ENVELOPE")
    header = root.find(_q(ns, "Header"))
    body = root.find(_q(ns, "Body"))
    payload = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if payload is None:
        raise SoapParseError("SOAP Body is empty", reason="SOAP_EMPTY_BODY")

    def wsa(local: str) -> str | None:
        el = header.find(_q(n.NS_WSA, local)) if header is not None else None
        return el.text.strip() if el is not None and el.text else None

    reply = header.find(f"{_q(n.NS_WSA, 'ReplyTo')}/{_q(n.NS_WSA, 'Address')}") if header is not None else None
    client = header.find(f".//{_q(n.NS_EGISZ, n.CLIENT_ENTITY_ID)}") if header is not None else None
    headers = Headers(
        message_id=wsa("MessageID"), relates_to=wsa("RelatesTo"), action=wsa("Action"), to=wsa("To"),
        reply_to=reply.text.strip() if reply is not None and reply.text else None,
        client_entity_id=client.text.strip() if client is not None and client.text else None,
        soap_version="1.1" if ns == n.NS_SOAP11 else "1.2",
    )
    return headers, payload


def _expect(payload: etree._Element, *locals_: str) -> None:
    if _local(payload) not in locals_:
        raise SoapParseError(f"expected {' or '.join(locals_)}, got {_local(payload)}",
                             reason="SOAP_UNEXPECTED", element=_local(payload))


def _read_errors(parent: etree._Element) -> tuple[RemdError, ...]:
    return tuple(RemdError(code=_val(item, n.CODE) or "", message=_val(item, n.MESSAGE) or "")
                 for item in _children(_child(parent, n.ERRORS), n.ITEM))


def _read_item(el: etree._Element | None) -> RegistryItem | None:
    if el is None:
        return None
    return RegistryItem(
        emdr_id=_val(el, n.EMDR_ID), local_uid=_val(el, n.LOCAL_UID), kind=_val(el, n.KIND),
        organization=_val(el, n.ORGANIZATION),
        registration_date_time=_val(el, n.REGISTRATION_DATE_TIME) or _val(el, n.REGISTRATION_DATE),
        store_till_date=_val(el, n.STORE_TILL_DATE), document_version=_val(el, n.DOCUMENT_VERSION),
    )


def _fault(headers: Headers, fault: etree._Element) -> SoapFault:
    if headers.soap_version == "1.1":
        code = _val(fault, "faultcode") or ""
        reason = _val(fault, "faultstring") or ""
        detail = _child(fault, "detail")
    else:
        code = _val(_child(fault, "Code"), "Value") or ""
        reason = _val(_child(fault, "Reason"), "Text") or ""
        detail = _child(fault, "Detail")
    detail_code = detail_message = ips_fault = None
    if detail is not None:
        for el in detail.iter(etree.Element):
            local = _local(el)
            if local in n.IPS_FAULTS and ips_fault is None:
                ips_fault = local
                detail_message = detail_message or _val(el, n.MESSAGE)
            elif local in (n.CODE, n.FAULT_ERROR_CODE) and detail_code is None and el.text and el.text.strip():
                detail_code = el.text.strip()
            elif local == n.MESSAGE and el.getparent() is not None and _local(el.getparent()) not in n.IPS_FAULTS \
                    and detail_message is None and el.text:
                detail_message = el.text.strip()
    return SoapFault(code=code, reason=reason, detail_code=detail_code, detail_message=detail_message,
                     ips_fault=ips_fault, headers=headers)


def parse_fault(data: bytes) -> SoapFault:
    """A SOAP Fault (1.1 or 1.2); SoapParseError when the message is not one."""
    headers, payload = _open(data)
    _expect(payload, "Fault")
    return _fault(headers, payload)


def parse_answer(data: bytes) -> SyncAnswer | SoapFault:
    """The synchronous answer to ``registerDocument``: a ``SyncAnswer`` or the ``SoapFault`` instead."""
    headers, payload = _open(data)
    if _local(payload) == "Fault":
        return _fault(headers, payload)
    _expect(payload, n.REGISTER_DOCUMENT_RESPONSE)
    return SyncAnswer(status=_required(payload, n.STATUS, n.REGISTER_DOCUMENT_RESPONSE),
                      errors=_read_errors(payload), headers=headers)


def _read_poa(parent: etree._Element) -> PowerOfAttorney | None:
    el = _child(parent, n.POWER_OF_ATTORNEY)
    if el is None:
        return None
    doc, sig = _val(el, n.POA_DOCUMENT), _val(el, n.POA_SIGNATURE)
    return PowerOfAttorney(
        number=_required(el, n.POA_NUMBER, n.POWER_OF_ATTORNEY),
        principal_inn=_val(el, n.POA_PRINCIPAL_INN), principal_ogrn=_val(el, n.POA_PRINCIPAL_OGRN),
        document=_unb64(doc, "МЧД document") if doc else None,
        signature=_unb64(sig, "МЧД signature") if sig else None,
    )


def _read_signed_data(el: etree._Element, what: str) -> bytes:
    data = _unb64(_required(el, n.DATA, what), what)
    declared = _int(_val(el, n.CHECKSUM))
    if declared is None or declared != checksum(data):
        raise SoapParseError(f"{what}: checksum does not match the data", reason="SOAP_CHECKSUM_MISMATCH")
    return data


def parse_register_document(data: bytes) -> RegisterRequest:
    """A ``registerDocument`` request (the emulator's side); checksums are checked."""
    headers, req = _open(data)
    _expect(req, n.REGISTER_DOCUMENT_REQUEST)
    what = n.REGISTER_DOCUMENT_REQUEST
    p = _child(req, n.PATIENT)
    patient = Patient(snils=_val(p, n.SNILS), local_id=_val(p, n.LOCAL_ID), family=_val(p, n.FAMILY),
                      given=_val(p, n.GIVEN), patronymic=_val(p, n.PATRONYMIC), gender=_val(p, n.GENDER),
                      birth_date=_val(p, n.BIRTH_DATE))
    signs = []
    for ps in _children(_child(req, n.PERSONAL_SIGNS), n.PERSONAL_SIGN):
        d = _child(ps, n.DOCTOR)
        if d is None:
            raise SoapParseError(f"{n.PERSONAL_SIGN}: no {n.DOCTOR}", reason="SOAP_MISSING_ELEMENT")
        sig = _child(ps, n.SIGNATURE)
        if sig is None:
            raise SoapParseError(f"{n.PERSONAL_SIGN}: no {n.SIGNATURE}", reason="SOAP_MISSING_ELEMENT")
        signs.append(PersonalSign(
            doctor=Doctor(role=_required(d, n.ROLE, n.DOCTOR), position=_val(d, n.POSITION),
                          speciality=_val(d, n.SPECIALITY), local_id=_val(d, n.LOCAL_ID), snils=_val(d, n.SNILS),
                          family=_val(d, n.FAMILY), given=_val(d, n.GIVEN), patronymic=_val(d, n.PATRONYMIC)),
            signature=_read_signed_data(sig, n.PERSONAL_SIGN), power_of_attorney=_read_poa(ps)))
    org_el = _child(req, n.ORGANIZATION_SIGN)
    org = None if org_el is None else OrganizationSign(
        signature=_read_signed_data(org_el, n.ORGANIZATION_SIGN), power_of_attorney=_read_poa(org_el))
    return RegisterRequest(headers=headers, registration=Registration(
        kind=_required(req, n.KIND, what), system=_required(req, n.SYSTEM, what),
        organization=_required(req, n.ORGANIZATION, what), department=_val(req, n.DEPARTMENT),
        local_uid=_required(req, n.LOCAL_UID, what), document_number=_val(req, n.DOCUMENT_NUMBER),
        creation_date_time=_required(req, n.CREATION_DATE_TIME, what), patient=patient,
        personal_signs=tuple(signs), organization_sign=org))


def parse_register_result(data: bytes) -> RegisterResult:
    """A ``registerDocumentResult`` callback. ``kind`` may come nested (``kind/code``): its text is taken."""
    headers, el = _open(data)
    _expect(el, n.REGISTER_DOCUMENT_RESULT)
    kind_el = _child(el, n.KIND)
    kind = None
    if kind_el is not None:
        kind = _val(kind_el, n.CODE) or ("".join(kind_el.itertext()).strip() or None)
    return RegisterResult(
        relates_to_message=_required(el, n.RELATES_TO_MESSAGE, n.REGISTER_DOCUMENT_RESULT),
        status=_required(el, n.STATUS, n.REGISTER_DOCUMENT_RESULT),
        local_uid=_val(el, n.LOCAL_UID), kind=kind, organization=_val(el, n.ORGANIZATION),
        registry_item=_read_item(_child(el, n.REGISTRY_ITEM)), errors=_read_errors(el), headers=headers)


def parse_callback_ack(data: bytes) -> CallbackAck:
    headers, el = _open(data)
    _expect(el, n.REGISTER_DOCUMENT_RESULT_RESPONSE)
    return CallbackAck(status=_val(el, n.STATUS) or "", headers=headers)


def parse_file_request(data: bytes) -> FileRequest:
    headers, el = _open(data)
    _expect(el, n.GET_DOCUMENT_FILE)
    return FileRequest(local_uid=_required(el, n.LOCAL_UID, n.GET_DOCUMENT_FILE), headers=headers)


def parse_file_response(data: bytes) -> FileResponse | SoapFault:
    """The МИС's file answer (``checksum_ok`` tells whether it matches), or the fault it sent instead."""
    headers, el = _open(data)
    if _local(el) == "Fault":
        return _fault(headers, el)
    _expect(el, n.GET_DOCUMENT_FILE_RESPONSE)
    return FileResponse(data=_unb64(_required(el, n.DATA, n.GET_DOCUMENT_FILE_RESPONSE), "file data"),
                        checksum=_int(_val(el, n.CHECKSUM)), headers=headers)


def parse_search_request(data: bytes) -> SearchRequest:
    headers, el = _open(data)
    _expect(el, n.SEARCH_REGISTRY_ITEM_REQUEST)
    return SearchRequest(headers=headers, query=SearchQuery(
        organization=_val(el, n.ORGANIZATION), kind=_val(el, n.KIND),
        register_date_begin=_val(el, n.REGISTER_DATE_BEGIN), register_date_end=_val(el, n.REGISTER_DATE_END),
        patient_snils=_val(el, n.PATIENT_SNILS)))


def parse_search_response(data: bytes) -> SearchResult | SoapFault:
    headers, el = _open(data)
    if _local(el) == "Fault":
        return _fault(headers, el)
    _expect(el, n.SEARCH_REGISTRY_ITEM_RESPONSE)
    items = tuple(_read_item(i) for i in _children(_child(el, n.MATCHES), n.ITEM))
    return SearchResult(status=_required(el, n.STATUS, n.SEARCH_REGISTRY_ITEM_RESPONSE), items=items,
                        errors=_read_errors(el), headers=headers)


def parse_get_registry_item(data: bytes) -> tuple[str, Headers]:
    """(emdrId, headers) of a ``getRegistryItem`` request (the emulator's side)."""
    headers, el = _open(data)
    _expect(el, n.GET_REGISTRY_ITEM_REQUEST)
    return _required(el, n.EMDR_ID, n.GET_REGISTRY_ITEM_REQUEST), headers


def parse_registry_item_response(data: bytes) -> RegistryItemAnswer | SoapFault:
    headers, el = _open(data)
    if _local(el) == "Fault":
        return _fault(headers, el)
    _expect(el, n.GET_REGISTRY_ITEM_RESPONSE)
    return RegistryItemAnswer(status=_required(el, n.STATUS, n.GET_REGISTRY_ITEM_RESPONSE),
                              item=_read_item(_child(el, n.ITEM)), errors=_read_errors(el), headers=headers)
