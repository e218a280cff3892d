"""Building and parsing the РЭМД SOAP messages, both directions (МИС and the emulator of РЭМД/ИПС).

Messages (``docs/protocol.md#message-shapes``), each with a ``build_*`` returning signed bytes and a
``parse_*`` returning a typed result:

=============================  =====================  ==========================================
message                        direction              build / parse
=============================  =====================  ==========================================
registerDocument request       МИС → РЭМД             build_register_document / parse_register_document
synchronous answer             РЭМД → МИС             build_sync_answer / parse_answer → SyncAnswer | SoapFault
SOAP Fault (1.1 and 1.2)       either                 build_fault / parse_answer, parse_fault
registerDocumentResult         РЭМД → МИС callback    build_register_result / parse_register_result
callback acknowledgement       МИС → РЭМД             build_callback_ack / parse_callback_ack
getDocumentFile (localUid or   РЭМД → МИС             build_file_request / parse_file_request
emdrId)
getDocumentFileResponse        МИС → РЭМД             build_file_response / parse_file_response
searchRegistryItem             МИС → РЭМД, answer     build_search_request / parse_search_request,
                                                      build_search_response / parse_search_response
getRegistryItem                МИС → РЭМД, answer     build_get_registry_item / parse_get_registry_item,
                               (an acknowledgement)   build_registry_item_response / parse_registry_item_response
getRegistryItemResult          РЭМД → МИС callback    build_registry_item_result / parse_registry_item_result
either callback                РЭМД → МИС             parse_callback → RegisterResult | RegistryItemResult
=============================  =====================  ==========================================

``getRegistryItem`` answers asynchronously, like ``registerDocument``: the synchronous answer only says РЭМД
took the request; the record (``status``, ``emdrId``, ``registrationDateTime``, ``storeTillDate``) arrives
later on the МИС's callback address (the request's ``wsa:ReplyTo``), ``relatesToMessage`` naming the
request's MessageID ([P] medflex, ``docs/protocol.md#getregistryitem``; element names [G]).

The envelope, headers and faults are :mod:`services.remd.envelope`; the typed values
:mod:`services.remd.messages` (re-exported here: ``soap`` is the protocol's public face). Every element name
comes from :mod:`services.remd.names`, tagged with its evidence. One dialect: the names of the КРЭМД request
(``personalSignatures/item/signer``, ``orgSignature``, ``surname/name/patrName``, coded values with their
code-system version). Readers of what РЭМД/ИПС send are tolerant (children matched by local name in any
namespace; ``kind`` as text, nested code or attribute; either registration-date element), the reader of a
``registerDocument`` request is strict, as the service is (an unknown element is an unmarshalling error).
Parsing only goes through ``producer.xmlsafe.parse_xml``. Signing (``key``/``certificate``) is
``services.remd.wssec``; pass ``key=None`` to build an unsigned message (tests, the emulator's sync
answers). Verifying a received message's signature is the caller's step (``wssec.verify_envelope``),
done on the same bytes before parsing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from lxml import etree

from producer.ids import new_message_id
from services.remd import names as n
from services.remd import wssec
from services.remd.envelope import (
    SoapParseError,
    b64,
    build_fault,
    check_shape,
    child,
    children,
    code_of,
    expect,
    finish,
    int_or_none,
    local_name,
    new_envelope,
    open_envelope,
    parse_fault,
    qname,
    read_fault,
    required,
    sub,
    unb64,
    value_of,
)
from services.remd.messages import (
    Association,
    CallbackAck,
    Coded,
    FileRequest,
    FileResponse,
    Headers,
    OffsetDate,
    OrgSignature,
    Patient,
    PersonalSignature,
    PowerOfAttorney,
    Recipient,
    RegisterRequest,
    RegisterResult,
    Registration,
    RegistryItem,
    RegistryItemAnswer,
    RegistryItemResult,
    RemdError,
    SearchQuery,
    SearchRequest,
    SearchResult,
    Signer,
    SoapFault,
    SyncAnswer,
    checksum,
    parse_date,
    parse_date_time,
)

__all__ = [
    "Association",
    "CallbackAck",
    "Coded",
    "FileRequest",
    "FileResponse",
    "Headers",
    "OffsetDate",
    "OrgSignature",
    "Patient",
    "PersonalSignature",
    "PowerOfAttorney",
    "Recipient",
    "RegisterRequest",
    "RegisterResult",
    "Registration",
    "RegistryItem",
    "RegistryItemAnswer",
    "RegistryItemResult",
    "RemdError",
    "SearchQuery",
    "SearchRequest",
    "SearchResult",
    "Signer",
    "SoapFault",
    "SoapParseError",
    "SyncAnswer",
    "build_callback_ack",
    "build_fault",
    "build_file_request",
    "build_file_response",
    "build_get_registry_item",
    "build_register_document",
    "build_register_result",
    "build_registry_item_response",
    "build_registry_item_result",
    "build_search_request",
    "build_search_response",
    "build_sync_answer",
    "checksum",
    "parse_answer",
    "parse_callback",
    "parse_callback_ack",
    "parse_date",
    "parse_date_time",
    "parse_fault",
    "parse_file_request",
    "parse_file_response",
    "parse_get_registry_item",
    "parse_register_document",
    "parse_register_result",
    "parse_registry_item_response",
    "parse_registry_item_result",
    "parse_search_request",
    "parse_search_response",
]


# --- writing ------------------------------------------------------------------------------------


def _errors(parent: etree._Element, ns: str, errors: Iterable[RemdError], local: str = n.ERRORS) -> None:
    errors = list(errors)
    if not errors:
        return
    container = etree.SubElement(parent, qname(ns, local))
    for err in errors:
        item = etree.SubElement(container, qname(ns, n.ITEM))
        sub(item, ns, n.CODE, err.code, always=True)
        sub(item, ns, n.MESSAGE, err.message, always=True)


def _poa(parent: etree._Element, ns: str, poa: PowerOfAttorney | None) -> None:
    if poa is None:
        return
    el = etree.SubElement(parent, qname(ns, n.POWER_OF_ATTORNEY))
    sub(el, ns, n.POA_NUMBER, poa.number, always=True)
    sub(el, ns, n.POA_PRINCIPAL_INN, poa.principal_inn)
    sub(el, ns, n.POA_PRINCIPAL_OGRN, poa.principal_ogrn)
    if poa.document is not None:
        sub(el, ns, n.POA_DOCUMENT, b64(poa.document))
    if poa.signature is not None:
        sub(el, ns, n.POA_SIGNATURE, b64(poa.signature))


def _signed_data(parent: etree._Element, ns: str, data: bytes) -> None:
    sub(parent, ns, n.DATA, b64(data), always=True)
    sub(parent, ns, n.CHECKSUM, checksum(data), always=True)


def _coded(parent: etree._Element, ns: str, local: str, value: Coded | None) -> None:
    if value is None:
        return
    el = etree.SubElement(parent, qname(ns, local))
    sub(el, ns, n.CODE, value.code, always=True)
    sub(el, ns, n.CODE_SYSTEM_VERSION, value.code_system_version)


def _department(parent: etree._Element, ns: str, oid: str | None) -> None:
    if oid is not None:
        sub(
            etree.SubElement(etree.SubElement(parent, qname(ns, n.DEPARTMENT)), qname(ns, n.LOCAL_ID)),
            ns,
            n.CODE,
            oid,
            always=True,
        )


def _signer(parent: etree._Element, ns: str, s: Signer) -> None:
    el = etree.SubElement(parent, qname(ns, n.SIGNER))
    sub(el, ns, n.LOCAL_ID, s.local_id)
    _coded(el, ns, n.ROLE, s.role)
    for local, value in (
        (n.SURNAME, s.family),
        (n.NAME, s.given),
        (n.PATR_NAME, s.patronymic),
        (n.SNILS, s.snils),
        (n.BIRTH_DATE, s.birth_date),
    ):
        sub(el, ns, local, value)
    _coded(el, ns, n.POSITION, s.position)
    _coded(el, ns, n.SPECIALITY, s.speciality)
    _department(el, ns, s.department)


def _recipient(parent: etree._Element, ns: str, r: Recipient | None) -> None:
    if r is None:
        return
    el = etree.SubElement(parent, qname(ns, n.RECIPIENT))
    sub(etree.SubElement(el, qname(ns, n.KIND)), ns, n.CODE, r.kind, always=True)
    if r.snils is not None:
        sub(etree.SubElement(el, qname(ns, n.RECIPIENT_KIND_PERSON)), ns, n.SNILS, r.snils, always=True)
    if r.organization is not None:
        org = etree.SubElement(
            etree.SubElement(el, qname(ns, n.RECIPIENT_KIND_ORGANIZATION)), qname(ns, n.ORGANIZATION)
        )
        sub(org, ns, n.CODE, r.organization, always=True)


def build_register_document(
    registration: Registration,
    *,
    client_entity_id: str,
    to: str,
    reply_to: str,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    soap_version: str = "1.2",
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """The signed ``registerDocument`` request and its MessageID (store it *before* sending:
    docs/protocol.md#registration-flow).

    ValueError when the registration lacks what every request must carry: a personal signature, and for
    each signer its role and its position with the position's code-system version.
    """
    r = registration
    if not r.personal_signatures:
        raise ValueError("registerDocument needs at least one personal signature")
    for ps in r.personal_signatures:
        s = ps.signer
        if not s.role.code or s.position is None or not s.position.code or not s.position.code_system_version:
            raise ValueError(
                f"signer {s.local_id or '?'}: role, position and the position's codeSystemVersion "
                f"are required"
            )
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_REGISTER_DOCUMENT,
        message_id=message_id,
        to=to,
        reply_to=reply_to,
        client_entity_id=client_entity_id,
        body_ns=ns,
    )
    req = etree.SubElement(body, qname(ns, n.REGISTER_DOCUMENT_REQUEST))
    sub(etree.SubElement(req, qname(ns, n.KIND)), ns, n.CODE, r.kind, always=True)
    sub(req, ns, n.SYSTEM, r.system, always=True)
    sub(req, ns, n.ORGANIZATION, r.organization, always=True)
    _department(req, ns, r.department)
    sub(req, ns, n.LOCAL_UID, r.local_uid, always=True)
    sub(req, ns, n.DOCUMENT_NUMBER, r.document_number)
    sub(req, ns, n.CREATION_DATE_TIME, r.creation_date_time, always=True)
    p = etree.SubElement(req, qname(ns, n.PATIENT))
    for local, value in (
        (n.SNILS, r.patient.snils),
        (n.LOCAL_ID, r.patient.local_id),
        (n.SURNAME, r.patient.family),
        (n.NAME, r.patient.given),
        (n.PATR_NAME, r.patient.patronymic),
        (n.GENDER, r.patient.gender),
        (n.BIRTH_DATE, r.patient.birth_date),
    ):
        sub(p, ns, local, value)
    _recipient(req, ns, r.recipient)
    if r.associations:
        links = etree.SubElement(req, qname(ns, n.ASSOCIATIONS))
        for a in r.associations:
            item = etree.SubElement(links, qname(ns, n.ITEM))
            sub(item, ns, n.TARGET, a.target, always=True)
            sub(item, ns, n.TYPE, a.type, always=True)
    signatures = etree.SubElement(req, qname(ns, n.PERSONAL_SIGNATURES))
    for ps in r.personal_signatures:
        item = etree.SubElement(signatures, qname(ns, n.ITEM))
        _signer(item, ns, ps.signer)
        _signed_data(etree.SubElement(item, qname(ns, n.SIGNATURE)), ns, ps.signature)
        _poa(item, ns, ps.power_of_attorney)
    if r.org_signature is not None:
        org = etree.SubElement(req, qname(ns, n.ORG_SIGNATURE))
        _signed_data(org, ns, r.org_signature.signature)
        _poa(org, ns, r.org_signature.power_of_attorney)
    return finish(env, key, certificate, now), message_id


def build_sync_answer(
    *,
    relates_to: str,
    status: str = n.STATUS_SUCCESS,
    errors: Iterable[RemdError] = (),
    key: Any = None,
    certificate: Any = None,
    message_id: str | None = None,
    soap_version: str = "1.2",
    now: datetime | None = None,
) -> bytes:
    """РЭМД's synchronous ``registerDocumentResponse`` (the emulator's side)."""
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_REGISTER_DOCUMENT_RESPONSE,
        message_id=message_id or new_message_id(),
        relates_to=relates_to,
        body_ns=ns,
    )
    resp = etree.SubElement(body, qname(ns, n.REGISTER_DOCUMENT_RESPONSE))
    sub(resp, ns, n.STATUS, status, always=True)
    _errors(resp, ns, errors)
    return finish(env, key, certificate, now)


def _kind(parent: etree._Element, ns: str, code: str | None, form: str = "text") -> None:
    """``kind`` as text, as ``kind/code`` or as a ``code`` attribute: the forms callbacks use
    (docs/protocol.md#callback-shapes)."""
    if code is None:
        return
    if form == "text":
        sub(parent, ns, n.KIND, code, always=True)
    elif form == "code":
        sub(etree.SubElement(parent, qname(ns, n.KIND)), ns, n.CODE, code, always=True)
    elif form == "attribute":
        etree.SubElement(parent, qname(ns, n.KIND)).set(n.CODE, code)
    else:
        raise ValueError("kind form must be text, code or attribute")


def _registry_item(
    parent: etree._Element,
    ns: str,
    item: RegistryItem,
    *,
    full: bool,
    kind_form: str = "text",
    date_element: str = n.REGISTRATION_DATE_TIME,
    element: str | None = None,
) -> None:
    """A registry record: as ``registryItem`` of a result (``full``: with its localUid, kind and organisation) or
    as a search match's ``item``."""
    el = etree.SubElement(parent, qname(ns, element or (n.REGISTRY_ITEM if not full else n.ITEM)))
    sub(el, ns, n.EMDR_ID, item.emdr_id)
    if full:
        sub(el, ns, n.LOCAL_UID, item.local_uid)
        _kind(el, ns, item.kind, kind_form)
        sub(el, ns, n.ORGANIZATION, item.organization)
    sub(el, ns, n.CREATION_DATE_TIME, item.creation_date_time)
    sub(el, ns, date_element, item.registration_date_time)
    sub(el, ns, n.STORE_TILL_DATE, item.store_till_date)
    sub(el, ns, n.DOCUMENT_VERSION, item.document_version)
    _errors(el, ns, item.warnings, n.REGISTRATION_WARNINGS)


def build_register_result(
    result: RegisterResult,
    *,
    to: str,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    soap_version: str = "1.1",
    wsa_prefix: bool = True,
    fixed_ids: bool = False,
    reply_to: str | None = None,
    kind_form: str = "text",
    date_element: str = n.REGISTRATION_DATE_TIME,
    now: datetime | None = None,
) -> bytes:
    """The ``registerDocumentResult`` callback (the emulator's side; SOAP 1.1 as in peer samples).

    The shape options are the variants real ИПС traffic shows (docs/protocol.md#callback-shapes):
    ``soap_version``, unprefixed WS-Addressing (``wsa_prefix=False``) with ИПС's fixed wsu:Ids, a ``reply_to``
    (the 2004/08 anonymous URI), ``kind`` as text / ``kind/code`` / attribute, ``registrationDate`` instead
    of ``…DateTime``.
    """
    ns = n.NS_EMDR_CALLBACK
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_REGISTER_DOCUMENT_RESULT,
        message_id=message_id or new_message_id(),
        to=to,
        reply_to=reply_to,
        body_ns=ns,
        wsa_prefix=wsa_prefix,
        fixed_ids=fixed_ids,
    )
    el = etree.SubElement(body, qname(ns, n.REGISTER_DOCUMENT_RESULT))
    sub(el, ns, n.RELATES_TO_MESSAGE, result.relates_to_message, always=True)
    sub(el, ns, n.STATUS, result.status, always=True)
    sub(el, ns, n.DOCUMENT_STATUS, result.document_status)
    sub(el, ns, n.LOCAL_UID, result.local_uid)
    _kind(el, ns, result.kind, kind_form)
    sub(el, ns, n.ORGANIZATION, result.organization)
    if result.registry_item is not None:
        _registry_item(el, ns, result.registry_item, full=False, date_element=date_element)
    _errors(el, ns, result.errors)
    return finish(env, key, certificate, now)


#: callback element → (our acknowledgement's element, its wsa:Action)
_ACKS = {
    n.REGISTER_DOCUMENT_RESULT: (
        n.REGISTER_DOCUMENT_RESULT_RESPONSE,
        n.ACTION_REGISTER_DOCUMENT_RESULT_RESPONSE,
    ),
    n.GET_REGISTRY_ITEM_RESULT: (
        n.GET_REGISTRY_ITEM_RESULT_RESPONSE,
        n.ACTION_GET_REGISTRY_ITEM_RESULT_RESPONSE,
    ),
}


def build_callback_ack(
    *,
    relates_to: str,
    key: Any,
    certificate: Any,
    status: str = n.STATUS_SUCCESS,
    message_id: str | None = None,
    soap_version: str = "1.1",
    answering: str = n.REGISTER_DOCUMENT_RESULT,
    now: datetime | None = None,
) -> bytes:
    """Our signed acknowledgement of a callback: accept at once, ``wsa:RelatesTo`` = its MessageID
    (docs/protocol.md#registerdocumentresult). ``answering``: the callback's element (``registerDocumentResult``
    or ``getRegistryItemResult``)."""
    ns = n.NS_EMDR_CALLBACK
    element, action = _ACKS[answering]
    env, body = new_envelope(
        soap_version=soap_version,
        action=action,
        message_id=message_id or new_message_id(),
        relates_to=relates_to,
        body_ns=ns,
    )
    sub(etree.SubElement(body, qname(ns, element)), ns, n.STATUS, status, always=True)
    return finish(env, key, certificate, now)


def build_file_request(
    *,
    to: str,
    key: Any,
    certificate: Any,
    local_uid: str | None = None,
    emdr_id: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
    soap_version: str = "1.2",
    wsa_prefix: bool = True,
    now: datetime | None = None,
) -> bytes:
    """РЭМД's ``getDocumentFile`` request to the МИС (the emulator's side): by localUid or by emdrId."""
    if (local_uid is None) == (emdr_id is None):
        raise ValueError("getDocumentFile names exactly one of local_uid, emdr_id")
    ns = n.NS_EMDR_CALLBACK
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_GET_DOCUMENT_FILE,
        message_id=message_id or new_message_id(),
        to=to,
        reply_to=reply_to,
        body_ns=ns,
        wsa_prefix=wsa_prefix,
    )
    el = etree.SubElement(body, qname(ns, n.GET_DOCUMENT_FILE))
    if local_uid is not None:
        sub(el, ns, n.LOCAL_UID, local_uid, always=True)
    else:
        sub(el, ns, n.EMDR_ID, emdr_id, always=True)
    return finish(env, key, certificate, now)


def build_file_response(
    *,
    relates_to: str,
    data: bytes,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    soap_version: str = "1.2",
    now: datetime | None = None,
) -> bytes:
    """The МИС's ``getDocumentFileResponse``: exactly the signed bytes, base64, with their checksum.

    Signed, its Body (the document in base64, ~140 KB) is canonicalised once per document and kept for the
    next pulls of the same document (``file_response_body``); only the headers are built and signed each time.
    """
    env, body = _file_envelope(soap_version, relates_to=relates_to, message_id=message_id or new_message_id())
    if key is None:
        _file_answer(body, data)
        return finish(env, key, certificate, now)
    if certificate is None:
        raise ValueError("a certificate is needed to sign")
    return wssec.sign_envelope(
        env, key=key, certificate=certificate, now=now, body=file_response_body(data, soap_version)
    )


def _file_envelope(
    soap_version: str, *, relates_to: str, message_id: str
) -> tuple[etree._Element, etree._Element]:
    return new_envelope(
        soap_version=soap_version,
        action=n.ACTION_GET_DOCUMENT_FILE_RESPONSE,
        message_id=message_id,
        relates_to=relates_to,
        body_ns=n.NS_EMDR_CALLBACK,
    )


def _file_answer(body: etree._Element, data: bytes) -> None:
    ns = n.NS_EMDR_CALLBACK
    _signed_data(etree.SubElement(body, qname(ns, n.GET_DOCUMENT_FILE_RESPONSE)), ns, data)


@functools.lru_cache(maxsize=16)
def file_response_body(data: bytes, soap_version: str) -> wssec.CanonicalBody:
    """The canonical Body of the file answer for ``data``: made once, kept for the next pulls (ИПС asks again
    after a timeout or a resend; the 16 latest documents, ~4 MB)."""
    env, body = _file_envelope(soap_version, relates_to="", message_id="")
    _file_answer(body, data)
    return wssec.canonical_body(env)


def build_search_request(
    query: SearchQuery,
    *,
    client_entity_id: str,
    to: str,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """``searchRegistryItemRequest``, its names [C] from the remd-dev stand (docs/protocol.md#operations)."""
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version="1.2",
        action=n.ACTION_SEARCH_REGISTRY_ITEM,
        message_id=message_id,
        to=to,
        reply_to=n.WSA_ANONYMOUS,
        client_entity_id=client_entity_id,
        body_ns=ns,
    )
    el = etree.SubElement(body, qname(ns, n.SEARCH_REGISTRY_ITEM_REQUEST))
    sub(el, ns, n.ORGANIZATION, query.organization)
    sub(el, ns, n.KIND, query.kind)
    sub(el, ns, n.REGISTER_DATE_BEGIN, query.register_date_begin)
    sub(el, ns, n.REGISTER_DATE_END, query.register_date_end)
    sub(el, ns, n.PATIENT_SNILS, query.patient_snils)
    return finish(env, key, certificate, now), message_id


def build_search_response(
    *,
    relates_to: str,
    items: Iterable[RegistryItem] = (),
    status: str = n.STATUS_SUCCESS,
    errors: Iterable[RemdError] = (),
    key: Any = None,
    certificate: Any = None,
    message_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version="1.2",
        action=n.ACTION_SEARCH_REGISTRY_ITEM_RESPONSE,
        message_id=message_id or new_message_id(),
        relates_to=relates_to,
        body_ns=ns,
    )
    el = etree.SubElement(body, qname(ns, n.SEARCH_REGISTRY_ITEM_RESPONSE))
    sub(el, ns, n.STATUS, status, always=True)
    matches = etree.SubElement(el, qname(ns, n.MATCHES))
    for item in items:
        _registry_item(matches, ns, item, full=True)
    _errors(el, ns, errors)
    return finish(env, key, certificate, now)


def build_get_registry_item(
    *,
    emdr_id: str,
    client_entity_id: str,
    to: str,
    reply_to: str,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """``getRegistryItemRequest`` for one registry number, and its MessageID (store it *before* sending: the result
    arrives on ``reply_to``, the МИС callback address, naming it)."""
    message_id = message_id or new_message_id()
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version="1.2",
        action=n.ACTION_GET_REGISTRY_ITEM,
        message_id=message_id,
        to=to,
        reply_to=reply_to,
        client_entity_id=client_entity_id,
        body_ns=ns,
    )
    sub(etree.SubElement(body, qname(ns, n.GET_REGISTRY_ITEM_REQUEST)), ns, n.EMDR_ID, emdr_id, always=True)
    return finish(env, key, certificate, now), message_id


def build_registry_item_response(
    *,
    relates_to: str,
    status: str = n.STATUS_SUCCESS,
    errors: Iterable[RemdError] = (),
    key: Any = None,
    certificate: Any = None,
    message_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """РЭМД's synchronous ``getRegistryItemResponse`` (the emulator's side): an acknowledgement, no record."""
    ns = n.NS_EMDR_SERVICE
    env, body = new_envelope(
        soap_version="1.2",
        action=n.ACTION_GET_REGISTRY_ITEM_RESPONSE,
        message_id=message_id or new_message_id(),
        relates_to=relates_to,
        body_ns=ns,
    )
    el = etree.SubElement(body, qname(ns, n.GET_REGISTRY_ITEM_RESPONSE))
    sub(el, ns, n.STATUS, status, always=True)
    _errors(el, ns, errors)
    return finish(env, key, certificate, now)


def build_registry_item_result(
    result: RegistryItemResult,
    *,
    to: str,
    key: Any,
    certificate: Any,
    message_id: str | None = None,
    soap_version: str = "1.1",
    now: datetime | None = None,
) -> bytes:
    """The ``getRegistryItemResult`` callback (the emulator's side), shaped as ``registerDocumentResult``."""
    ns = n.NS_EMDR_CALLBACK
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_GET_REGISTRY_ITEM_RESULT,
        message_id=message_id or new_message_id(),
        to=to,
        body_ns=ns,
    )
    el = etree.SubElement(body, qname(ns, n.GET_REGISTRY_ITEM_RESULT))
    sub(el, ns, n.RELATES_TO_MESSAGE, result.relates_to_message, always=True)
    sub(el, ns, n.STATUS, result.status, always=True)
    if result.registry_item is not None:
        _registry_item(el, ns, result.registry_item, full=True, element=n.REGISTRY_ITEM)
    _errors(el, ns, result.errors)
    return finish(env, key, certificate, now)


# --- reading ------------------------------------------------------------------------------------


def _read_errors(parent: etree._Element | None, local: str = n.ERRORS) -> tuple[RemdError, ...]:
    return tuple(
        RemdError(code=value_of(item, n.CODE) or "", message=value_of(item, n.MESSAGE) or "")
        for item in children(child(parent, local), n.ITEM)
    )


def _read_item(el: etree._Element | None) -> RegistryItem | None:
    if el is None:
        return None
    return RegistryItem(
        emdr_id=value_of(el, n.EMDR_ID),
        local_uid=value_of(el, n.LOCAL_UID),
        kind=code_of(child(el, n.KIND)),
        organization=value_of(el, n.ORGANIZATION),
        registration_date_time=value_of(el, n.REGISTRATION_DATE_TIME) or value_of(el, n.REGISTRATION_DATE),
        store_till_date=value_of(el, n.STORE_TILL_DATE),
        document_version=value_of(el, n.DOCUMENT_VERSION),
        warnings=_read_errors(el, n.REGISTRATION_WARNINGS),
        creation_date_time=value_of(el, n.CREATION_DATE_TIME),
    )


def parse_answer(data: bytes) -> SyncAnswer | SoapFault:
    """The synchronous answer to ``registerDocument``: a ``SyncAnswer`` or the ``SoapFault`` instead."""
    headers, payload = open_envelope(data)
    if local_name(payload) == "Fault":
        return read_fault(headers, payload)
    expect(payload, n.REGISTER_DOCUMENT_RESPONSE)
    return SyncAnswer(
        status=required(payload, n.STATUS, n.REGISTER_DOCUMENT_RESPONSE),
        errors=_read_errors(payload),
        headers=headers,
    )


def _read_poa(parent: etree._Element) -> PowerOfAttorney | None:
    el = child(parent, n.POWER_OF_ATTORNEY)
    if el is None:
        return None
    doc, sig = value_of(el, n.POA_DOCUMENT), value_of(el, n.POA_SIGNATURE)
    return PowerOfAttorney(
        number=required(el, n.POA_NUMBER, n.POWER_OF_ATTORNEY),
        principal_inn=value_of(el, n.POA_PRINCIPAL_INN),
        principal_ogrn=value_of(el, n.POA_PRINCIPAL_OGRN),
        document=unb64(doc, "МЧД document") if doc else None,
        signature=unb64(sig, "МЧД signature") if sig else None,
    )


def _read_signed_data(el: etree._Element, what: str) -> bytes:
    data = unb64(required(el, n.DATA, what), what)
    declared = int_or_none(value_of(el, n.CHECKSUM))
    if declared is None or declared != checksum(data):
        raise SoapParseError(f"{what}: checksum does not match the data", reason="SOAP_CHECKSUM_MISMATCH")
    return data


def _read_coded(el: etree._Element | None) -> Coded | None:
    code = code_of(el)
    return None if code is None else Coded(code=code, code_system_version=value_of(el, n.CODE_SYSTEM_VERSION))


def _read_department(el: etree._Element | None) -> str | None:
    return value_of(child(child(el, n.DEPARTMENT), n.LOCAL_ID), n.CODE)


def _read_signer(item: etree._Element) -> Signer:
    s = child(item, n.SIGNER)
    if s is None:
        raise SoapParseError(
            f"{n.PERSONAL_SIGNATURES}/{n.ITEM}: no {n.SIGNER}",
            reason="SOAP_MISSING_ELEMENT",
            element=n.SIGNER,
        )
    role = _read_coded(child(s, n.ROLE))
    if role is None:
        raise SoapParseError(f"{n.SIGNER}: no {n.ROLE}", reason="SOAP_MISSING_ELEMENT", element=n.ROLE)
    return Signer(
        role=role,
        snils=value_of(s, n.SNILS),
        local_id=value_of(s, n.LOCAL_ID),
        family=value_of(s, n.SURNAME),
        given=value_of(s, n.NAME),
        patronymic=value_of(s, n.PATR_NAME),
        birth_date=value_of(s, n.BIRTH_DATE),
        position=_read_coded(child(s, n.POSITION)),
        speciality=_read_coded(child(s, n.SPECIALITY)),
        department=_read_department(s),
    )


def _read_recipient(el: etree._Element | None) -> Recipient | None:
    if el is None:
        return None
    kind = code_of(child(el, n.KIND))
    if kind is None:
        raise SoapParseError(f"{n.RECIPIENT}: no {n.KIND}", reason="SOAP_MISSING_ELEMENT", element=n.KIND)
    return Recipient(
        kind=kind,
        snils=value_of(child(el, n.RECIPIENT_KIND_PERSON), n.SNILS),
        organization=value_of(child(child(el, n.RECIPIENT_KIND_ORGANIZATION), n.ORGANIZATION), n.CODE),
    )


def parse_register_document(data: bytes) -> RegisterRequest:
    """A ``registerDocument`` request (the emulator's side), read as a schema-validating service would: an
    element the request shape does not know is refused (``SOAP_UNEXPECTED_ELEMENT``), checksums are checked."""
    headers, req = open_envelope(data)
    expect(req, n.REGISTER_DOCUMENT_REQUEST)
    check_shape(req, n.REGISTER_DOCUMENT_SHAPE, n.REGISTER_DOCUMENT_REQUEST)
    what = n.REGISTER_DOCUMENT_REQUEST
    p = child(req, n.PATIENT)
    patient = Patient(
        snils=value_of(p, n.SNILS),
        local_id=value_of(p, n.LOCAL_ID),
        family=value_of(p, n.SURNAME),
        given=value_of(p, n.NAME),
        patronymic=value_of(p, n.PATR_NAME),
        gender=value_of(p, n.GENDER),
        birth_date=value_of(p, n.BIRTH_DATE),
    )
    signatures = []
    for item in children(child(req, n.PERSONAL_SIGNATURES), n.ITEM):
        sig = child(item, n.SIGNATURE)
        if sig is None:
            raise SoapParseError(
                f"{n.PERSONAL_SIGNATURES}/{n.ITEM}: no {n.SIGNATURE}",
                reason="SOAP_MISSING_ELEMENT",
                element=n.SIGNATURE,
            )
        signatures.append(
            PersonalSignature(
                signer=_read_signer(item),
                signature=_read_signed_data(sig, n.SIGNATURE),
                power_of_attorney=_read_poa(item),
            )
        )
    org_el = child(req, n.ORG_SIGNATURE)
    org = (
        None
        if org_el is None
        else OrgSignature(
            signature=_read_signed_data(org_el, n.ORG_SIGNATURE), power_of_attorney=_read_poa(org_el)
        )
    )
    kind = code_of(child(req, n.KIND))
    if kind is None:
        raise SoapParseError(f"{what}: no {n.KIND}", reason="SOAP_MISSING_ELEMENT", element=n.KIND)
    associations = tuple(
        Association(target=required(a, n.TARGET, n.ASSOCIATIONS), type=required(a, n.TYPE, n.ASSOCIATIONS))
        for a in children(child(req, n.ASSOCIATIONS), n.ITEM)
    )
    return RegisterRequest(
        headers=headers,
        registration=Registration(
            kind=kind,
            system=required(req, n.SYSTEM, what),
            organization=required(req, n.ORGANIZATION, what),
            department=_read_department(req),
            local_uid=required(req, n.LOCAL_UID, what),
            document_number=value_of(req, n.DOCUMENT_NUMBER),
            creation_date_time=required(req, n.CREATION_DATE_TIME, what),
            patient=patient,
            personal_signatures=tuple(signatures),
            org_signature=org,
            recipient=_read_recipient(child(req, n.RECIPIENT)),
            associations=associations,
        ),
    )


def parse_register_result(data: bytes) -> RegisterResult:
    """A ``registerDocumentResult`` callback, in any of the shapes ИПС delivers
    (docs/protocol.md#callback-shapes): SOAP 1.1 or 1.2,
    ``kind`` as text, nested ``kind/code`` or an attribute, ``registrationDate`` or ``…DateTime``,
    ``documentStatus`` and ``registryItem/registrationWarnings`` when present."""
    headers, el = open_envelope(data)
    expect(el, n.REGISTER_DOCUMENT_RESULT)
    return RegisterResult(
        relates_to_message=required(el, n.RELATES_TO_MESSAGE, n.REGISTER_DOCUMENT_RESULT),
        status=required(el, n.STATUS, n.REGISTER_DOCUMENT_RESULT),
        local_uid=value_of(el, n.LOCAL_UID),
        kind=code_of(child(el, n.KIND)),
        organization=value_of(el, n.ORGANIZATION),
        registry_item=_read_item(child(el, n.REGISTRY_ITEM)),
        errors=_read_errors(el),
        headers=headers,
        document_status=value_of(el, n.DOCUMENT_STATUS),
    )


def parse_registry_item_result(data: bytes) -> RegistryItemResult:
    """A ``getRegistryItemResult`` callback, read as tolerantly as ``registerDocumentResult`` (any SOAP version,
    ``kind`` in any form, ``registrationDate`` or ``…DateTime``)."""
    headers, el = open_envelope(data)
    expect(el, n.GET_REGISTRY_ITEM_RESULT)
    return RegistryItemResult(
        relates_to_message=required(el, n.RELATES_TO_MESSAGE, n.GET_REGISTRY_ITEM_RESULT),
        status=required(el, n.STATUS, n.GET_REGISTRY_ITEM_RESULT),
        registry_item=_read_item(child(el, n.REGISTRY_ITEM)),
        errors=_read_errors(el),
        headers=headers,
    )


def parse_callback(data: bytes) -> RegisterResult | RegistryItemResult:
    """Either result callback РЭМД sends the МИС, told apart by its body element."""
    _, el = open_envelope(data)
    if local_name(el) == n.GET_REGISTRY_ITEM_RESULT:
        return parse_registry_item_result(data)
    return parse_register_result(data)


def parse_callback_ack(data: bytes) -> CallbackAck:
    """Our acknowledgement of either result callback."""
    headers, el = open_envelope(data)
    if local_name(el) != n.GET_REGISTRY_ITEM_RESULT_RESPONSE:
        expect(el, n.REGISTER_DOCUMENT_RESULT_RESPONSE)
    return CallbackAck(status=value_of(el, n.STATUS) or "", headers=headers)


def parse_file_request(data: bytes) -> FileRequest:
    """``getDocumentFile`` keyed by ``localUid`` or by ``emdrId`` (one of them; localUid wins if both)."""
    headers, el = open_envelope(data)
    expect(el, n.GET_DOCUMENT_FILE)
    local_uid, emdr_id = value_of(el, n.LOCAL_UID), value_of(el, n.EMDR_ID)
    if local_uid is None and emdr_id is None:
        raise SoapParseError(
            f"{n.GET_DOCUMENT_FILE}: no {n.LOCAL_UID} or {n.EMDR_ID}",
            reason="SOAP_MISSING_ELEMENT",
            element=n.LOCAL_UID,
        )
    return FileRequest(local_uid=local_uid, emdr_id=None if local_uid else emdr_id, headers=headers)


def parse_file_response(data: bytes) -> FileResponse | SoapFault:
    """The МИС's file answer (``checksum_ok`` tells whether it matches), or the fault it sent instead."""
    headers, el = open_envelope(data)
    if local_name(el) == "Fault":
        return read_fault(headers, el)
    expect(el, n.GET_DOCUMENT_FILE_RESPONSE)
    return FileResponse(
        data=unb64(required(el, n.DATA, n.GET_DOCUMENT_FILE_RESPONSE), "file data"),
        checksum=int_or_none(value_of(el, n.CHECKSUM)),
        headers=headers,
    )


def parse_search_request(data: bytes) -> SearchRequest:
    headers, el = open_envelope(data)
    expect(el, n.SEARCH_REGISTRY_ITEM_REQUEST)
    return SearchRequest(
        headers=headers,
        query=SearchQuery(
            organization=value_of(el, n.ORGANIZATION),
            kind=value_of(el, n.KIND),
            register_date_begin=value_of(el, n.REGISTER_DATE_BEGIN),
            register_date_end=value_of(el, n.REGISTER_DATE_END),
            patient_snils=value_of(el, n.PATIENT_SNILS),
        ),
    )


def parse_search_response(data: bytes) -> SearchResult | SoapFault:
    headers, el = open_envelope(data)
    if local_name(el) == "Fault":
        return read_fault(headers, el)
    expect(el, n.SEARCH_REGISTRY_ITEM_RESPONSE)
    items = tuple(item for i in children(child(el, n.MATCHES), n.ITEM) if (item := _read_item(i)) is not None)
    return SearchResult(
        status=required(el, n.STATUS, n.SEARCH_REGISTRY_ITEM_RESPONSE),
        items=items,
        errors=_read_errors(el),
        headers=headers,
    )


def parse_get_registry_item(data: bytes) -> tuple[str, Headers]:
    """(emdrId, headers) of a ``getRegistryItem`` request (the emulator's side)."""
    headers, el = open_envelope(data)
    expect(el, n.GET_REGISTRY_ITEM_REQUEST)
    return required(el, n.EMDR_ID, n.GET_REGISTRY_ITEM_REQUEST), headers


def parse_registry_item_response(data: bytes) -> RegistryItemAnswer | SoapFault:
    """The synchronous answer to ``getRegistryItem``: the acknowledgement, or the fault instead."""
    headers, el = open_envelope(data)
    if local_name(el) == "Fault":
        return read_fault(headers, el)
    expect(el, n.GET_REGISTRY_ITEM_RESPONSE)
    return RegistryItemAnswer(
        status=required(el, n.STATUS, n.GET_REGISTRY_ITEM_RESPONSE),
        errors=_read_errors(el),
        headers=headers,
    )
