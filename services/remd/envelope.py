"""The SOAP layer under every РЭМД message: envelopes, WS-Addressing headers, faults, element helpers.

:mod:`services.remd.soap` builds and parses the operations on top of this; the callback service uses
:func:`open_envelope` to see which operation arrived before it parses it. Readers match children by
local name in any namespace (a namespace that turns out different does not break parsing); writers use
the namespaces of docs/protocol.md#namespaces. Parsing only goes through ``producer.xmlsafe.parse_xml``.
"""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

from lxml import etree

from producer.errors import PermanentError
from producer.ids import new_message_id
from producer.xmlsafe import base64_content, parse_xml
from services.remd import names as n
from services.remd import wssec
from services.remd.messages import Headers, SoapFault

__all__ = [
    "SoapParseError",
    "b64",
    "build_fault",
    "check_shape",
    "child",
    "children",
    "code_of",
    "content_type",
    "expect",
    "finish",
    "http_headers",
    "int_or_none",
    "is_anonymous",
    "local_name",
    "new_envelope",
    "open_envelope",
    "parse_fault",
    "qname",
    "read_fault",
    "required",
    "soap_ns",
    "sub",
    "text_of",
    "unb64",
    "value_of",
    "version_of",
]


class SoapParseError(PermanentError):
    """The bytes are XML but not the SOAP message expected (wrong operation, missing element)."""

    reason = "SOAP_UNEXPECTED"


# --- writing -------------------------------------------------------------------------------------


def soap_ns(version: str) -> str:
    if version not in ("1.1", "1.2"):
        raise ValueError("soap_version must be '1.1' or '1.2'")
    return n.NS_SOAP11 if version == "1.1" else n.NS_SOAP12


def content_type(soap_version: str, *, action: str | None = None) -> str:
    """The HTTP media type of a SOAP message: 1.1 ``text/xml``; 1.2 ``application/soap+xml``, which carries
    the action as its ``action`` parameter (RFC 3902; 1.1 sends it as ``SOAPAction``, see ``http_headers``)."""
    if soap_ns(soap_version) == n.NS_SOAP11:
        return "text/xml; charset=utf-8"
    return "application/soap+xml; charset=utf-8" + (f'; action="{action}"' if action else "")


def http_headers(soap_version: str, *, action: str | None = None) -> dict[str, str]:
    """The HTTP headers a SOAP request travels with: its ``content_type`` and, for 1.1, ``SOAPAction``."""
    headers = {"Content-Type": content_type(soap_version, action=action)}
    if soap_version == "1.1" and action:
        headers["SOAPAction"] = f'"{action}"'
    return headers


def version_of(data: bytes) -> str:
    """The SOAP version of a message we built, from its envelope's namespace (our envelopes declare it first)."""
    return "1.2" if n.NS_SOAP12.encode() in data[:600] else "1.1"


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def text_of(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def sub(
    parent: etree._Element, ns: str, local: str, value: Any = None, *, always: bool = False
) -> etree._Element | None:
    """Append ``<local>value</local>``; skipped when value is None unless ``always``."""
    if value is None and not always:
        return None
    el = etree.SubElement(parent, qname(ns, local))
    if value is not None:
        el.text = text_of(value)
    return el


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: the fixed wsu:Ids an ИПС callback uses for its signed headers, for ``fixed_ids=True``
#: (``docs/protocol.md#callback-shapes``, [A])
FIXED_IDS = {"MessageID": "id-messageid", "ReplyTo": "id-replyto", "To": "id-to", "Action": "id-action"}


def new_envelope(
    *,
    soap_version: str,
    action: str,
    message_id: str,
    to: str | None = None,
    reply_to: str | None = None,
    relates_to: str | None = None,
    client_entity_id: str | None = None,
    body_ns: str,
    wsa_prefix: bool = True,
    fixed_ids: bool = False,
) -> tuple[etree._Element, etree._Element]:
    """(Envelope, Body) with the header in the reference signer's order (docs/protocol.md#soap-header).

    ``wsa_prefix=False`` writes the WS-Addressing headers unprefixed (a default namespace on each), and
    ``fixed_ids=True`` gives them the fixed wsu:Ids, as ИПС itself sends callbacks
    (``docs/protocol.md#callback-shapes``).
    """
    soap = soap_ns(soap_version)
    nsmap = {"soap": soap, "wsu": n.NS_WSU, "wsse": n.NS_WSSE, "ds": n.NS_DS}
    if wsa_prefix:
        nsmap["wsa"] = n.NS_WSA
    if client_entity_id is not None:
        nsmap["egisz"] = n.NS_EGISZ
    nsmap["emdr" if body_ns == n.NS_EMDR_SERVICE else "cb"] = body_ns
    env = etree.Element(qname(soap, "Envelope"), nsmap=nsmap)
    header = etree.SubElement(env, qname(soap, "Header"))
    if client_entity_id is not None:
        th = etree.SubElement(header, qname(n.NS_EGISZ, n.TRANSPORT_HEADER))
        ai = etree.SubElement(th, qname(n.NS_EGISZ, n.AUTH_INFO))
        etree.SubElement(ai, qname(n.NS_EGISZ, n.CLIENT_ENTITY_ID)).text = client_entity_id

    def wsa(parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
        el = etree.SubElement(parent, qname(n.NS_WSA, local), nsmap=None if wsa_prefix else {None: n.NS_WSA})
        if fixed_ids and local in FIXED_IDS:
            el.set(qname(n.NS_WSU, "Id"), FIXED_IDS[local])
        if text is not None:
            el.text = text
        return el

    wsa(header, "MessageID", message_id)
    if reply_to is not None:
        etree.SubElement(wsa(header, "ReplyTo"), qname(n.NS_WSA, "Address")).text = reply_to
    if to is not None:
        wsa(header, "To", to)
    wsa(header, "Action", action)
    if relates_to is not None:
        wsa(header, "RelatesTo", relates_to)
    body = etree.SubElement(env, qname(soap, "Body"))
    return env, body


def is_anonymous(address: str | None) -> bool:
    """Whether a ReplyTo address means "answer on this exchange" (either WS-Addressing spelling)."""
    return (address or "").strip() in n.ANONYMOUS_ADDRESSES


def finish(env: etree._Element, key: Any, certificate: Any, now: datetime | None) -> bytes:
    if key is None:
        return etree.tostring(env, encoding="UTF-8", xml_declaration=True)
    if certificate is None:
        raise ValueError("a certificate is needed to sign")
    return wssec.sign_envelope(env, key=key, certificate=certificate, now=now)


#: the SOAP 1.2 names of the 1.1 fault codes
_SOAP12_FAULT_CODES = {"Client": "Sender", "Server": "Receiver"}


def build_fault(
    *,
    code: str,
    reason: str,
    detail_code: str | None = None,
    detail_message: str | None = None,
    ips_fault: str | None = None,
    relates_to: str | None = None,
    soap_version: str = "1.1",
    key: Any = None,
    certificate: Any = None,
    message_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """A SOAP Fault. ``code``: ``Client`` or ``Server``, unprefixed; a 1.2 fault says ``Sender``/``Receiver``
    for them (and takes those names too).

    The detail carries ``code``/``message`` (РЭМД style) and, with ``ips_fault``, an ИПС typed fault
    element holding the message.
    """
    soap = soap_ns(soap_version)
    if soap_version == "1.2":
        code = _SOAP12_FAULT_CODES.get(code, code)
    env, body = new_envelope(
        soap_version=soap_version,
        action=n.ACTION_FAULT,
        message_id=message_id or new_message_id(),
        relates_to=relates_to,
        body_ns=n.NS_EMDR_SERVICE,
    )
    fault = etree.SubElement(body, qname(soap, "Fault"))
    if soap_version == "1.1":
        etree.SubElement(fault, "faultcode").text = f"soap:{code}"
        etree.SubElement(fault, "faultstring").text = reason
        detail = etree.SubElement(fault, "detail")
    else:
        etree.SubElement(
            etree.SubElement(fault, qname(soap, "Code")), qname(soap, "Value")
        ).text = f"soap:{code}"
        text = etree.SubElement(etree.SubElement(fault, qname(soap, "Reason")), qname(soap, "Text"))
        text.text = reason
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "ru")
        detail = etree.SubElement(fault, qname(soap, "Detail"))
    if ips_fault is not None:
        if ips_fault not in n.IPS_FAULTS:
            raise ValueError(f"ips_fault must be one of {n.IPS_FAULTS}")
        sub(
            etree.SubElement(detail, qname(n.NS_EGISZ, ips_fault)),
            n.NS_EGISZ,
            n.MESSAGE,
            detail_message or reason,
            always=True,
        )
    if detail_code is not None:
        sub(detail, n.NS_EMDR_SERVICE, n.CODE, detail_code, always=True)
        sub(detail, n.NS_EMDR_SERVICE, n.MESSAGE, detail_message or "", always=True)
    return finish(env, key, certificate, now)


# --- reading -------------------------------------------------------------------------------------


def local_name(el: etree._Element) -> str:
    return etree.QName(el).localname


def child(parent: etree._Element | None, local: str) -> etree._Element | None:
    if parent is None:
        return None
    for c in parent:
        if isinstance(c.tag, str) and local_name(c) == local:
            return c
    return None


def children(parent: etree._Element | None, local: str) -> list[etree._Element]:
    if parent is None:
        return []
    return [c for c in parent if isinstance(c.tag, str) and local_name(c) == local]


def value_of(parent: etree._Element | None, local: str) -> str | None:
    el = child(parent, local)
    if el is None:
        return None
    text = "".join(el.itertext()).strip()
    return text or None


def code_of(el: etree._Element | None) -> str | None:
    """A coded value in any of the forms РЭМД messages use: ``<kind>58</kind>``, ``<kind><code>58</code>…
    </kind>`` or ``<kind code="58"/>`` (docs/protocol.md#callback-shapes)."""
    if el is None:
        return None
    nested = value_of(el, n.CODE)
    if nested is not None:
        return nested
    attribute = (el.get(n.CODE) or "").strip()
    if attribute:
        return attribute
    if any(isinstance(c.tag, str) for c in el):
        return None  # structured, but without a code: nothing to read
    text = (el.text or "").strip()
    return text or None


def check_shape(el: etree._Element, shape: dict[str, Any] | None, path: str) -> None:
    """Refuse any element ``shape`` does not allow below ``el``, as a schema-validating service does.

    ``shape``: child local name → its own shape (``None``: a text leaf, which must have no children).
    The error's message is the unmarshalling text a JAXB endpoint answers with.
    """
    for c in el:
        if not isinstance(c.tag, str):
            continue
        local = local_name(c)
        if shape is None or local not in shape:
            expected = ", ".join(f"<{{{etree.QName(c).namespace or ''}}}{x}>" for x in (shape or {}))
            raise SoapParseError(
                f'Unmarshalling Error: unexpected element (uri:"{etree.QName(c).namespace or ""}", local:"{local}") '
                f"in {path}. Expected elements are {expected or 'none (text only)'}",
                reason="SOAP_UNEXPECTED_ELEMENT",
                element=f"{path}/{local}",
            )
        check_shape(c, shape[local], f"{path}/{local}")


def required(parent: etree._Element | None, local: str, what: str) -> str:
    value = value_of(parent, local)
    if value is None:
        raise SoapParseError(f"{what}: no {local}", reason="SOAP_MISSING_ELEMENT", element=local)
    return value


def unb64(text: str | None, what: str) -> bytes:
    try:
        return base64_content(text)
    except ValueError:
        raise SoapParseError(f"{what} is not valid base64", reason="SOAP_BAD_BASE64") from None


def int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def open_envelope(data: bytes) -> tuple[Headers, etree._Element]:
    """(headers, the Body's first element) of a SOAP 1.1/1.2 message."""
    root = parse_xml(data)
    ns = etree.QName(root).namespace
    if ns not in (n.NS_SOAP11, n.NS_SOAP12) or local_name(root) != "Envelope":
        raise SoapParseError("not a SOAP envelope", reason="SOAP_NOT_ENVELOPE")
    header = root.find(qname(ns, "Header"))
    body = root.find(qname(ns, "Body"))
    payload = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if payload is None:
        raise SoapParseError("SOAP Body is empty", reason="SOAP_EMPTY_BODY")

    def wsa(local: str) -> str | None:
        el = header.find(qname(n.NS_WSA, local)) if header is not None else None
        return el.text.strip() if el is not None and el.text else None

    reply = (
        header.find(f"{qname(n.NS_WSA, 'ReplyTo')}/{qname(n.NS_WSA, 'Address')}")
        if header is not None
        else None
    )
    client = header.find(f".//{qname(n.NS_EGISZ, n.CLIENT_ENTITY_ID)}") if header is not None else None
    headers = Headers(
        message_id=wsa("MessageID"),
        relates_to=wsa("RelatesTo"),
        action=wsa("Action"),
        to=wsa("To"),
        reply_to=reply.text.strip() if reply is not None and reply.text else None,
        client_entity_id=client.text.strip() if client is not None and client.text else None,
        soap_version="1.1" if ns == n.NS_SOAP11 else "1.2",
    )
    return headers, payload


def expect(payload: etree._Element, *locals_: str) -> None:
    if local_name(payload) not in locals_:
        raise SoapParseError(
            f"expected {' or '.join(locals_)}, got {local_name(payload)}",
            reason="SOAP_UNEXPECTED",
            element=local_name(payload),
        )


def read_fault(headers: Headers, fault: etree._Element) -> SoapFault:
    if headers.soap_version == "1.1":
        code = value_of(fault, "faultcode") or ""
        reason = value_of(fault, "faultstring") or ""
        detail = child(fault, "detail")
    else:
        code = value_of(child(fault, "Code"), "Value") or ""
        reason = value_of(child(fault, "Reason"), "Text") or ""
        detail = child(fault, "Detail")
    detail_code = detail_message = ips_fault = None
    if detail is not None:
        for el in detail.iter(etree.Element):
            local = local_name(el)
            if local in n.IPS_FAULTS and ips_fault is None:
                ips_fault = local
                detail_message = detail_message or value_of(el, n.MESSAGE)
            elif (
                local in (n.CODE, n.FAULT_ERROR_CODE) and detail_code is None and el.text and el.text.strip()
            ):
                detail_code = el.text.strip()
            elif (
                local == n.MESSAGE
                and (parent := el.getparent()) is not None
                and local_name(parent) not in n.IPS_FAULTS
                and detail_message is None
                and el.text
            ):
                detail_message = el.text.strip()
    return SoapFault(
        code=code,
        reason=reason,
        detail_code=detail_code,
        detail_message=detail_message,
        ips_fault=ips_fault,
        headers=headers,
    )


def parse_fault(data: bytes) -> SoapFault:
    """A SOAP Fault (1.1 or 1.2); SoapParseError when the message is not one."""
    headers, payload = open_envelope(data)
    expect(payload, "Fault")
    return read_fault(headers, payload)
