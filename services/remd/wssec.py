"""WS-Security for ИПС ЕГИСЗ: GOST R 34.10-2012/256 XMLDSig, exclusive c14n (docs/protocol.md#ws-security).

``sign_envelope`` adds to a SOAP envelope (1.1 or 1.2) a ``wsse:Security`` header holding, in the
order of the reference signer: ``wsse:BinarySecurityToken`` (the ИС certificate), ``ds:Signature``,
``wsu:Timestamp``. The signature has one ``ds:Reference`` per signed part — by default Body,
Timestamp, MessageID, ReplyTo, To, Action, each with the exc-c14n transform and a Streebog-256
digest; every signed header element gets ``wsu:Id="id-<uuid>"``, the Body ``wsu:Id="body"``.
SignedInfo is exc-c14n too; SignatureValue is the raw 64-byte GOST signature, s‖r as in CMS.
The message is serialised and re-parsed before any digest, so digests are over the final bytes.

A large Body signed again and again (the file answer of ``getDocumentFile``: ~140 KB of base64) is
canonicalised once: ``canonical_body`` gives its exc-c14n bytes and digest, and ``sign_envelope(...,
body=)`` signs an envelope around it without serialising, parsing or canonicalising it again. Exclusive c14n
of an element does not depend on the namespaces in scope around it (it renders on the apex exactly those it
visibly uses), so the canonical bytes placed in the envelope canonicalise to themselves where the verifier
finds them: the digest holds.

``verify_envelope`` checks, in this order, and raises ``WsSecurityError`` with one reason:

* ``WSS_MISSING``                 no Security header, Signature, token, SignedInfo or Timestamp
* ``WSS_MALFORMED``               broken structure: duplicate ids, bad base64, unreadable times
* ``WSS_UNTRUSTED_CERTIFICATE``   the token's certificate is not one of ``trusted_certificates``
* ``WSS_SIGNATURE_INVALID``       unsupported algorithm, or SignatureValue does not verify
* ``WSS_DIGEST_MISMATCH``         a referenced part changed after signing
* ``WSS_NOT_COVERED``             Body or a required header is absent, duplicated or not signed
* ``WSS_EXPIRED``                 Timestamp not yet valid or expired (beyond ``max_skew``)

Trust here is by pinning (the certificate's DER must equal a trusted one); chain building and
revocation are the certificate module's concern, not the transport's.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from producer.errors import PermanentError
from producer.xmlsafe import base64_content, parse_xml
from services.crypto.certificates import load_certificate
from services.crypto.gost import streebog256
from services.remd import names as n
from services.timestamps import soap_time

__all__ = [
    "CanonicalBody",
    "DEFAULT_REFERENCES",
    "REQUIRED_REFERENCES",
    "VerifiedEnvelope",
    "WsSecurityError",
    "c14n",
    "canonical_body",
    "sign_envelope",
    "verify_envelope",
]

# XMLDSig / WSS algorithm and profile URIs ([C], docs/protocol.md#ws-security)
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
SIG_GOST2012_256 = "http://www.w3.org/2001/04/xmldsig-more#gostr34102012-gostr34112012-256"
DIGEST_GOST2012_256 = "http://www.w3.org/2001/04/xmldsig-more#gostr34112012-256"
BST_ENCODING = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
BST_VALUE_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"

#: what ``sign_envelope`` signs by default: the full ИПС recipe (docs/protocol.md#ws-security)
DEFAULT_REFERENCES = ("Body", "Timestamp", "MessageID", "ReplyTo", "To", "Action")
#: what ``verify_envelope`` insists is signed; "?" = only when the message carries it
REQUIRED_REFERENCES = ("Body", "Timestamp", "MessageID", "To", "Action", "ReplyTo?")

_WSU_ID = f"{{{n.NS_WSU}}}Id"
# signable parts: name → (namespace, local name); Body and Timestamp are found specially
_HEADER_PARTS = {
    "MessageID": n.NS_WSA,
    "ReplyTo": n.NS_WSA,
    "To": n.NS_WSA,
    "Action": n.NS_WSA,
    "RelatesTo": n.NS_WSA,
    "FaultTo": n.NS_WSA,
    "From": n.NS_WSA,
}
_SOAP_NS = (n.NS_SOAP12, n.NS_SOAP11)


class WsSecurityError(PermanentError):
    """The message's WS-Security is missing, broken or fails verification (reasons: module docstring)."""

    reason = "WSS_SIGNATURE_INVALID"


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """What a successful verification vouches for."""

    certificate: Any  # services.crypto.certificates.Certificate of the signer
    signed_ids: frozenset[str]  # wsu:Id values whose digests verified
    created: datetime  # Timestamp/Created
    expires: datetime | None  # Timestamp/Expires


@dataclass(frozen=True, slots=True)
class CanonicalBody:
    """A SOAP Body in its exclusive-c14n form, with ``wsu:Id="body"``, and the Streebog-256 of those bytes."""

    xml: bytes
    digest: bytes


BODY_ID = "body"


# --- GOST primitives, from services.crypto.gost / services.crypto.certificates --------------------------------

_streebog256 = streebog256
_load_certificate = load_certificate


def _signer(key: Any) -> Callable[[bytes], bytes]:
    """A key object (``sign_digest``) or a plain ``sign(canonical_bytes) -> s‖r`` callable."""
    if hasattr(key, "sign_digest"):
        return lambda data: key.sign_digest(_streebog256(data))
    if callable(key):
        return key
    raise TypeError("key must have sign_digest(digest) or be a callable sign(bytes) -> bytes")


def _der(certificate: Any) -> bytes:
    if isinstance(certificate, (bytes, bytearray)):
        return bytes(certificate)
    der = getattr(certificate, "der", None)
    if not isinstance(der, (bytes, bytearray)):
        raise TypeError("certificate must be DER bytes or have a .der attribute")
    return bytes(der)


# --- XML helpers --------------------------------------------------------------------------------


def c14n(element: etree._Element) -> bytes:
    """Exclusive XML canonicalisation 1.0 without comments of ``element``'s subtree."""
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


_parse = parse_xml


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _soap_parts(root: etree._Element) -> tuple[str, etree._Element | None, etree._Element]:
    """(SOAP namespace, Header, Body) of an envelope; raises if it is not one."""
    ns = etree.QName(root).namespace
    if ns not in _SOAP_NS or etree.QName(root).localname != "Envelope":
        raise WsSecurityError("not a SOAP envelope", reason="WSS_MALFORMED")
    headers = [c for c in root if c.tag == _q(ns, "Header")]
    bodies = [c for c in root if c.tag == _q(ns, "Body")]
    if len(headers) > 1 or len(bodies) != 1:
        raise WsSecurityError("envelope must have one Body and at most one Header", reason="WSS_NOT_COVERED")
    return ns, (headers[0] if headers else None), bodies[0]


def _part(
    name: str, header: etree._Element | None, body: etree._Element, security: etree._Element | None
) -> list[etree._Element]:
    """Every element that plays signable part ``name`` (more than one is an attack or a bug)."""
    if name == "Body":
        return [body]
    if name == "Timestamp":
        return [] if security is None else [c for c in security if c.tag == _q(n.NS_WSU, "Timestamp")]
    if name not in _HEADER_PARTS:
        raise ValueError(f"unknown reference {name!r}; known: Body, Timestamp, {', '.join(_HEADER_PARTS)}")
    return [] if header is None else [c for c in header if c.tag == _q(_HEADER_PARTS[name], name)]


# --- signing ------------------------------------------------------------------------------------


def canonical_body(envelope: etree._Element) -> CanonicalBody:
    """The Body of ``envelope`` (given ``wsu:Id="body"``), exc-c14n, and its digest. No round trip through
    bytes is needed here, unlike for the other parts: these canonical bytes are themselves what the message
    carries, and canonicalising them again gives them back."""
    _ns, _header, body = _soap_parts(envelope)
    if body.get(_WSU_ID, BODY_ID) != BODY_ID:
        raise ValueError(f"the Body's wsu:Id must be {BODY_ID!r}")
    body.set(_WSU_ID, BODY_ID)
    xml = c14n(body)
    return CanonicalBody(xml=xml, digest=_streebog256(xml))


def sign_envelope(
    envelope: etree._Element | bytes,
    *,
    key: Any,
    certificate: Any,
    references: Iterable[str] = DEFAULT_REFERENCES,
    ttl: float | None = 300.0,
    now: datetime | None = None,
    body: CanonicalBody | None = None,
) -> bytes:
    """Sign ``envelope`` for ИПС and return the serialised signed message.

    ``key``: a ``services.crypto.gost.PrivateKey`` (anything with ``sign_digest``) or a callable
    ``sign(canonical_signed_info) -> 64-byte s‖r``. ``certificate``: a ``Certificate`` or its DER.
    ``references``: parts to sign (``DEFAULT_REFERENCES``); ReplyTo and other optional headers are
    skipped when the envelope has none. ``ttl``: seconds from Created to Expires (default 300; None: a
    Timestamp without Expires, as some senders write it).
    ``body``: the Body, already canonical (``canonical_body``): it replaces whatever the envelope's Body holds.
    """
    sign = _signer(key)
    cert_der = _der(certificate)
    now = now or datetime.now(UTC)
    root = _parse(etree.tostring(envelope) if isinstance(envelope, etree._Element) else bytes(envelope))
    ns, header, body_el = _soap_parts(root)
    placeholder = _hold_place(body_el) if body is not None else None
    if header is None:
        header = etree.Element(_q(ns, "Header"))
        root.insert(0, header)
    if any(c.tag == _q(n.NS_WSSE, "Security") for c in header):
        raise ValueError("envelope already has a wsse:Security header")

    security = etree.Element(_q(n.NS_WSSE, "Security"), nsmap={"wsse": n.NS_WSSE, "wsu": n.NS_WSU})
    header.insert(0, security)
    token_id = f"X509-{uuid.uuid4()}"
    bst = etree.SubElement(
        security,
        _q(n.NS_WSSE, "BinarySecurityToken"),
        {"EncodingType": BST_ENCODING, "ValueType": BST_VALUE_TYPE, _WSU_ID: token_id},
    )
    bst.text = base64.b64encode(cert_der).decode("ascii")
    ts = etree.SubElement(security, _q(n.NS_WSU, "Timestamp"), {_WSU_ID: f"TS-{uuid.uuid4()}"})
    etree.SubElement(ts, _q(n.NS_WSU, "Created")).text = soap_time(now)
    if ttl is not None:
        etree.SubElement(ts, _q(n.NS_WSU, "Expires")).text = soap_time(now + timedelta(seconds=ttl))

    ids: list[str] = []
    for name in dict.fromkeys(references):
        elements = _part(name, header, body_el, security)
        if not elements:
            if name in ("Body", "Timestamp"):
                raise ValueError(f"cannot sign {name}: not found")
            continue  # an optional header this message does not carry
        if len(elements) > 1:
            raise ValueError(f"cannot sign {name}: the envelope has {len(elements)} of them")
        el = elements[0]
        id_ = el.get(_WSU_ID)
        if id_ is None:
            id_ = "body" if name == "Body" else f"id-{uuid.uuid4()}"
            el.set(_WSU_ID, id_)
        ids.append(id_)

    # Digests over the final bytes: serialise, re-parse, then canonicalise what was parsed.
    root = _parse(etree.tostring(root, encoding="UTF-8", xml_declaration=True))
    by_id = _index_ids(root)
    ns, header, _body = _soap_parts(root)
    security = next(c for c in _found(header, "Header") if c.tag == _q(n.NS_WSSE, "Security"))

    sig = etree.Element(_q(n.NS_DS, "Signature"), {"Id": f"SIG-{uuid.uuid4()}"}, nsmap={"ds": n.NS_DS})
    signed_info = etree.SubElement(sig, _q(n.NS_DS, "SignedInfo"))
    etree.SubElement(signed_info, _q(n.NS_DS, "CanonicalizationMethod"), Algorithm=EXC_C14N)
    etree.SubElement(signed_info, _q(n.NS_DS, "SignatureMethod"), Algorithm=SIG_GOST2012_256)
    for id_ in ids:
        ref = etree.SubElement(signed_info, _q(n.NS_DS, "Reference"), URI=f"#{id_}")
        transforms = etree.SubElement(ref, _q(n.NS_DS, "Transforms"))
        etree.SubElement(transforms, _q(n.NS_DS, "Transform"), Algorithm=EXC_C14N)
        etree.SubElement(ref, _q(n.NS_DS, "DigestMethod"), Algorithm=DIGEST_GOST2012_256)
        if placeholder is not None and body is not None and id_ == BODY_ID:
            digest = body.digest  # canonicalised once, by canonical_body
        else:
            digest = _streebog256(c14n(by_id[id_][0]))
        etree.SubElement(ref, _q(n.NS_DS, "DigestValue")).text = base64.b64encode(digest).decode("ascii")
    etree.SubElement(sig, _q(n.NS_DS, "SignatureValue"))
    key_info = etree.SubElement(sig, _q(n.NS_DS, "KeyInfo"), Id=f"KI-{uuid.uuid4()}")
    str_ = etree.SubElement(
        key_info, _q(n.NS_WSSE, "SecurityTokenReference"), {_WSU_ID: f"STR-{uuid.uuid4()}"}
    )
    etree.SubElement(str_, _q(n.NS_WSSE, "Reference"), URI=f"#{token_id}", ValueType=BST_VALUE_TYPE)
    security.insert(1, sig)  # after the token, before the Timestamp, as the reference signer orders them

    # SignedInfo canonicalised in its final place (its in-scope namespaces are part of the input).
    root = _parse(etree.tostring(root, encoding="UTF-8", xml_declaration=True))
    placed = _found(root.find(f".//{_q(n.NS_DS, 'SignedInfo')}"), "SignedInfo")
    value = sign(c14n(placed))
    if len(value) != 64:
        raise ValueError(f"GOST R 34.10-2012/256 signature must be 64 bytes, got {len(value)}")
    value_el = _found(placed.getparent(), "Signature").find(_q(n.NS_DS, "SignatureValue"))
    _found(value_el, "SignatureValue").text = base64.b64encode(value).decode("ascii")
    signed = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    if placeholder is None or body is None:
        return signed
    return _put_body(signed, placeholder, body)


def _hold_place(body: etree._Element) -> str:
    """Empty ``body`` but for a placeholder element, and give it the id of a canonical Body."""
    if body.get(_WSU_ID, BODY_ID) != BODY_ID:
        raise ValueError(f"the Body's wsu:Id must be {BODY_ID!r}")
    body.set(_WSU_ID, BODY_ID)
    for child in list(body):
        body.remove(child)
    body.text = None
    tag = f"emd-body-{uuid.uuid4().hex}"
    etree.SubElement(body, tag)
    return tag


def _put_body(signed: bytes, placeholder: str, body: CanonicalBody) -> bytes:
    """``signed`` with its Body element (holding only ``placeholder``) replaced by the canonical Body."""
    mark = f"<{placeholder}/>".encode()
    at = signed.index(mark)
    start = signed.rindex(b"<", 0, at)  # the Body's start tag: no "<" inside it (attributes escape it)
    end = signed.index(b">", at + len(mark)) + 1  # the Body's end tag
    if not signed[start:at].split(None, 1)[0].endswith(b":Body") or not signed[at + len(mark) : end].endswith(
        b":Body>"
    ):
        raise ValueError("the signed envelope's Body is not where it was put")
    return signed[:start] + body.xml + signed[end:]


def _found(el: etree._Element | None, what: str) -> etree._Element:
    """An element signing has just put in place (re-parsing the envelope it built cannot lose it)."""
    if el is None:
        raise ValueError(f"the signed envelope has no {what}")
    return el


def _index_ids(root: etree._Element) -> dict[str, list[etree._Element]]:
    by_id: dict[str, list[etree._Element]] = {}
    for el in root.iter(etree.Element):
        id_ = el.get(_WSU_ID)
        if id_ is not None:
            by_id.setdefault(id_, []).append(el)
    return by_id


# --- verification -------------------------------------------------------------------------------


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64_content(text)
    except ValueError:
        raise WsSecurityError(f"{what} is not valid base64", reason="WSS_MALFORMED") from None


def _time(el: etree._Element | None, what: str) -> datetime | None:
    if el is None:
        return None
    try:
        dt = datetime.fromisoformat((el.text or "").strip())
    except ValueError:
        raise WsSecurityError(f"Timestamp {what} is not an ISO 8601 time", reason="WSS_MALFORMED") from None
    if dt.tzinfo is None:
        raise WsSecurityError(f"Timestamp {what} has no time zone", reason="WSS_MALFORMED")
    return dt


def _one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = [c for c in parent if c.tag == tag]
    if not found:
        raise WsSecurityError(f"no {what}", reason="WSS_MISSING")
    if len(found) > 1:
        raise WsSecurityError(f"more than one {what}", reason="WSS_MALFORMED")
    return found[0]


def verify_envelope(
    xml_bytes: bytes,
    *,
    trusted_certificates: Iterable[Any] | None = None,
    required: Iterable[str] = REQUIRED_REFERENCES,
    max_skew: float = 300.0,
    now: datetime | None = None,
    certificate_loader: Callable[[bytes], Any] | None = None,
) -> VerifiedEnvelope:
    """Verify an ИПС-signed SOAP message, or raise ``WsSecurityError`` (reasons: module docstring).

    ``trusted_certificates``: certificates (objects with ``.der``, or DER bytes) the signer must be
    one of; ``None`` accepts any certificate that verifies (the caller then checks ``.certificate``).
    ``required``: parts that must be present once and signed; a name ending in ``?`` only when
    present (default: Body, Timestamp, MessageID, To, Action, and ReplyTo if there is one). ``max_skew``: seconds of clock
    difference tolerated on Timestamp Created/Expires (default 300). ``certificate_loader``: DER →
    certificate with ``.public_key.verify_digest(digest, signature)`` (default
    ``services.crypto.certificates.load_certificate``).
    """
    now = now or datetime.now(UTC)
    root = _parse(xml_bytes)
    _ns, header, body = _soap_parts(root)
    if header is None:
        raise WsSecurityError("no SOAP Header", reason="WSS_MISSING")
    security = _one(header, _q(n.NS_WSSE, "Security"), "wsse:Security header")
    signature = _one(security, _q(n.NS_DS, "Signature"), "ds:Signature")
    signed_info = _one(signature, _q(n.NS_DS, "SignedInfo"), "ds:SignedInfo")
    value = _b64(_one(signature, _q(n.NS_DS, "SignatureValue"), "ds:SignatureValue").text, "SignatureValue")
    by_id = _unique_ids(root)
    certificate = _token_certificate(
        signature, security, by_id, trusted_certificates, certificate_loader or _load_certificate
    )
    _check_signature_value(signed_info, value, certificate)
    signed = _verified_references(signed_info, by_id)
    _check_coverage(required, header, body, security, signed)
    created, expires = _fresh_timestamp(header, body, security, now=now, max_skew=max_skew)
    return VerifiedEnvelope(
        certificate=certificate, signed_ids=frozenset(signed), created=created, expires=expires
    )


def _unique_ids(root: etree._Element) -> dict[str, list[etree._Element]]:
    """Every wsu:Id of the message; two elements with one id (the classic signature-wrapping set-up) is an error."""
    by_id = _index_ids(root)
    for id_, elements in by_id.items():
        if len(elements) > 1:
            raise WsSecurityError(f"wsu:Id {id_!r} occurs {len(elements)} times", reason="WSS_MALFORMED")
    return by_id


def _token_certificate(
    signature: etree._Element,
    security: etree._Element,
    by_id: dict[str, list[etree._Element]],
    trusted_certificates: Iterable[Any] | None,
    load: Callable[[bytes], Any],
) -> Any:
    """The signing certificate: KeyInfo → SecurityTokenReference → a BinarySecurityToken of this Security
    header, trusted (when a list is given) and loadable."""
    ref = signature.find(
        f"{_q(n.NS_DS, 'KeyInfo')}/{_q(n.NS_WSSE, 'SecurityTokenReference')}/{_q(n.NS_WSSE, 'Reference')}"
    )
    uri = ref.get("URI", "") if ref is not None else ""
    token = by_id.get(uri[1:], [None])[0] if uri.startswith("#") else None
    if (
        token is None
        or token.tag != _q(n.NS_WSSE, "BinarySecurityToken")
        or token.getparent() is not security
    ):
        raise WsSecurityError("no BinarySecurityToken referenced from KeyInfo", reason="WSS_MISSING")
    cert_der = _b64(token.text, "BinarySecurityToken")
    if trusted_certificates is not None and cert_der not in {_der(c) for c in trusted_certificates}:
        raise WsSecurityError("the signing certificate is not trusted", reason="WSS_UNTRUSTED_CERTIFICATE")
    try:
        return load(cert_der)
    except WsSecurityError:
        raise
    except Exception as exc:
        raise WsSecurityError(
            f"BinarySecurityToken is not a usable certificate: {exc}", reason="WSS_MALFORMED"
        ) from None


def _check_signature_value(signed_info: etree._Element, value: bytes, certificate: Any) -> None:
    """The algorithms SignedInfo names, then the signature over it."""
    c14n_method = signed_info.find(_q(n.NS_DS, "CanonicalizationMethod"))
    sig_method = signed_info.find(_q(n.NS_DS, "SignatureMethod"))
    if c14n_method is None or c14n_method.get("Algorithm") != EXC_C14N:
        raise WsSecurityError("SignedInfo must use exclusive c14n", reason="WSS_SIGNATURE_INVALID")
    if sig_method is None or sig_method.get("Algorithm") != SIG_GOST2012_256:
        raise WsSecurityError(
            "unsupported SignatureMethod",
            reason="WSS_SIGNATURE_INVALID",
            algorithm=None if sig_method is None else sig_method.get("Algorithm"),
        )
    if len(value) != 64 or not certificate.public_key.verify_digest(_streebog256(c14n(signed_info)), value):
        raise WsSecurityError(
            "SignatureValue does not verify against the token's certificate", reason="WSS_SIGNATURE_INVALID"
        )


def _verified_references(signed_info: etree._Element, by_id: dict[str, list[etree._Element]]) -> set[str]:
    """The ids SignedInfo covers, each reference checked: same-document id, exc-c14n only, Streebog-256,
    digest matching."""
    signed: set[str] = set()
    for reference in signed_info.findall(_q(n.NS_DS, "Reference")):
        uri = reference.get("URI", "")
        target = by_id.get(uri[1:]) if uri.startswith("#") else None
        if not target:
            raise WsSecurityError(f"Reference {uri!r} points at nothing", reason="WSS_DIGEST_MISMATCH")
        transforms = [
            t.get("Algorithm")
            for t in reference.iterfind(f"{_q(n.NS_DS, 'Transforms')}/{_q(n.NS_DS, 'Transform')}")
        ]
        method = reference.find(_q(n.NS_DS, "DigestMethod"))
        if transforms != [EXC_C14N] or method is None or method.get("Algorithm") != DIGEST_GOST2012_256:
            raise WsSecurityError(
                f"Reference {uri!r} uses unsupported transforms or digest", reason="WSS_SIGNATURE_INVALID"
            )
        expected = _b64(reference.findtext(_q(n.NS_DS, "DigestValue")), "DigestValue")
        if _streebog256(c14n(target[0])) != expected:
            raise WsSecurityError(
                f"digest of {uri!r} does not match: the part changed after signing",
                reason="WSS_DIGEST_MISMATCH",
                reference=uri,
            )
        signed.add(uri[1:])
    return signed


def _check_coverage(
    required: Iterable[str],
    header: etree._Element,
    body: etree._Element,
    security: etree._Element,
    signed: set[str],
) -> None:
    """The parts that matter are the ones actually in place, and they are signed."""
    for name in dict.fromkeys(required):
        optional, name = name.endswith("?"), name.rstrip("?")
        elements = _part(name, header, body, security)
        if optional and not elements:
            continue
        if len(elements) != 1:
            raise WsSecurityError(
                f"{name}: expected exactly one, found {len(elements)}", reason="WSS_NOT_COVERED"
            )
        if elements[0].get(_WSU_ID) not in signed:
            raise WsSecurityError(
                f"{name} is not covered by the signature", reason="WSS_NOT_COVERED", part=name
            )


def _fresh_timestamp(
    header: etree._Element,
    body: etree._Element,
    security: etree._Element,
    *,
    now: datetime,
    max_skew: float,
) -> tuple[datetime, datetime | None]:
    """(Created, Expires) of the wsu:Timestamp, which is neither from the future nor expired."""
    timestamps = _part("Timestamp", header, body, security)
    if not timestamps:
        raise WsSecurityError("no wsu:Timestamp", reason="WSS_MISSING")
    created = _time(timestamps[0].find(_q(n.NS_WSU, "Created")), "Created")
    expires = _time(timestamps[0].find(_q(n.NS_WSU, "Expires")), "Expires")
    if created is None:
        raise WsSecurityError("wsu:Timestamp has no Created", reason="WSS_MISSING")
    skew = timedelta(seconds=max_skew)
    if created > now + skew:
        raise WsSecurityError(
            "Timestamp Created is in the future", reason="WSS_EXPIRED", created=created.isoformat()
        )
    if expires is not None and expires < now - skew:
        raise WsSecurityError("Timestamp has expired", reason="WSS_EXPIRED", expires=expires.isoformat())
    return created, expires
