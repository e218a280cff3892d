"""Detached CMS SignedData with GOST R 34.10-2012 / Streebog: CAdES-BES, signed and verified.

What :func:`sign_detached` writes (what РЭМД and ``openssl cms -sign -cades`` expect)::

    ContentInfo { signedData, SignedData {
      version 1, digestAlgorithms {Streebog-256}, encapContentInfo {data} (detached: no eContent),
      certificates [the signer's certificate],
      signerInfos { SignerInfo { version 1, sid issuerAndSerialNumber, digestAlgorithm Streebog-256,
        signedAttrs [contentType data, signingTime, messageDigest, signingCertificateV2 {ESSCertIDv2 {
          hashAlgorithm Streebog-256 (explicit: absent would mean SHA-256), certHash, issuerSerial}}],
        signatureAlgorithm GOST R 34.10-2012 (1.2.643.7.1.1.1.1, as openssl writes it),
        signature s‖r } } } }

Speed: the DER that depends only on the certificate (sid, ESS attribute, certificate set, algorithm
identifiers) is built once per certificate with asn1crypto and cached; each signature only splices the
digest, the time and the signature value into it. Together with the fixed-base 34.10 of
``services.crypto.gost`` that is well over 500 signatures/s for a 50 KB document on one core
(``bench/bench_crypto.py``).

:func:`verify_detached` raises :class:`SignatureError` (a ``PermanentError``) whose ``reason`` says what is
wrong, in the order checked::

    SIGNATURE_DECODING_ERROR   not a DER CMS SignedData
    MULTIPLE_SIGNERS           not exactly one SignerInfo
    NO_END_ENTITY_CERTIFICATE  the signer's certificate is not embedded
    UNKNOWN_ALGORITHM          digest / signature algorithm is not GOST 2012 (or does not fit the key)
    NO_SIGNED_ATTRIBUTES       no signedAttrs (a bare PKCS#7 signature, not CAdES)
    DIGEST_MISMATCH            messageDigest is not the digest of the document
    SIGNATURE_INVALID          the 34.10 signature over signedAttrs does not verify
    ESS_CERT_MISSING           no signingCertificate(V2) attribute (not CAdES-BES)
    ESS_CERT_MISMATCH          its certHash / issuerSerial does not name the signer's certificate
                               (``openssl cms -verify`` does not check this)
    NO_SIGNING_TIME            no signingTime attribute
    CERT_NOT_YET_VALID         certificate not yet valid at signingTime / document time / ``at``
    CERT_EXPIRED               certificate expired by signingTime / document time / ``at``
    INVALID_CERT_KEY_USAGE     keyUsage present without digitalSignature or nonRepudiation

Chain building and revocation (CRL/OCSP) are not done here: they need the trust store and network of
the deployment, and РЭМД checks them again on registration.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import weakref
from collections.abc import MutableMapping
from dataclasses import dataclass

from asn1crypto import algos, cms, core, tsp, x509

from producer.errors import PermanentError
from producer.xmlsafe import base64_content
from services.crypto import gost
from services.crypto.certificates import Certificate, certificate_from_der

__all__ = [
    "sign_detached",
    "verify_detached",
    "verify_signature",
    "check_certificate",
    "VerifiedSignature",
    "SignatureError",
    "to_base64",
    "from_wire",
    "SIGNATURE_REASONS",
]

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
_OID_SIGNING_CERT = "1.2.840.113549.1.9.16.2.12"
_OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"

_DIGEST_BITS = {gost.OID_STREEBOG256: 256, gost.OID_STREEBOG512: 512}
#: signature algorithm OID → key size in bytes (openssl writes the key OID; RFC 9337 the sign-with OID)
_SIGNATURE_SIZES = {
    gost.OID_GOST2012_256: 32,
    gost.OID_SIGN_WITH_STREEBOG256: 32,
    gost.OID_GOST2012_512: 64,
    gost.OID_SIGN_WITH_STREEBOG512: 64,
}
#: ESS hash algorithms we can recompute (OID → function of the certificate DER)
_ESS_HASHES = {
    gost.OID_STREEBOG256: gost.streebog256,
    gost.OID_STREEBOG512: gost.streebog512,
    "2.16.840.1.101.3.4.2.1": lambda d: __import__("hashlib").sha256(d).digest(),
    "1.3.14.3.2.26": lambda d: __import__("hashlib").sha1(d).digest(),
}

SIGNATURE_REASONS = (
    "SIGNATURE_DECODING_ERROR",
    "MULTIPLE_SIGNERS",
    "NO_END_ENTITY_CERTIFICATE",
    "UNKNOWN_ALGORITHM",
    "NO_SIGNED_ATTRIBUTES",
    "DIGEST_MISMATCH",
    "SIGNATURE_INVALID",
    "ESS_CERT_MISSING",
    "ESS_CERT_MISMATCH",
    "NO_SIGNING_TIME",
    "CERT_NOT_YET_VALID",
    "CERT_EXPIRED",
    "INVALID_CERT_KEY_USAGE",
)


class SignatureError(PermanentError):
    """The CMS signature is not valid; ``reason`` is one of :data:`SIGNATURE_REASONS`."""

    reason = "SIGNATURE_INVALID"


@dataclass(frozen=True)
class VerifiedSignature:
    """What a valid signature says: who signed, when (as claimed by the signer), with which digest."""

    certificate: Certificate
    signing_time: dt.datetime
    digest_algorithm: str  # OID, e.g. 1.2.643.7.1.1.2.2 (Streebog-256)
    message_digest: bytes


# ---------------------------------------------------------------------------------------------------
# DER splicing


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _len(len(content)) + content


def _oid(dotted: str) -> bytes:
    return core.ObjectIdentifier(dotted).dump()


def _attribute(oid: str, value_der: bytes) -> bytes:
    return _tlv(0x30, _oid(oid) + _tlv(0x31, value_der))


def _time_der(when: dt.datetime) -> bytes:
    when = when.astimezone(dt.UTC)
    if 1950 <= when.year < 2050:  # RFC 5652 §11.3: UTCTime until 2049, GeneralizedTime after
        return _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


@dataclass(frozen=True)
class _Template:
    """The DER of one signer's CMS that does not change between signatures."""

    bits: int
    attr_content_type: bytes
    attr_ess: bytes
    signer_prefix: bytes  # version + sid + digestAlgorithm
    signer_suffix_alg: bytes  # signatureAlgorithm
    sd_prefix: bytes  # version + digestAlgorithms + encapContentInfo + certificates
    mdigest_oid: bytes


#: certificate → its template, kept as long as the certificate object: a signer holds its credentials' for its
#: life, and a bounded cache (it was 64) turned over with a hundred doctors' keys, rebuilding one per signature
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _template(certificate: Certificate) -> _Template:
    tpl = _TEMPLATES.get(certificate)
    return tpl if tpl is not None else _TEMPLATES.setdefault(certificate, _build_template(certificate))


def _build_template(certificate: Certificate) -> _Template:
    curve = certificate.public_key.curve
    bits = curve.bits
    digest_alg = algos.DigestAlgorithm({"algorithm": curve.digest_oid}).dump()
    sig_alg = algos.SignedDigestAlgorithm({"algorithm": curve.key_algorithm_oid}).dump()
    issuer = x509.Name.load(certificate.issuer_der)
    ess = tsp.SigningCertificateV2(
        {
            "certs": [
                tsp.ESSCertIDv2(
                    {
                        "hash_algorithm": {"algorithm": curve.digest_oid},
                        "cert_hash": certificate.fingerprint(bits),
                        "issuer_serial": {
                            "issuer": [x509.GeneralName(name="directory_name", value=issuer)],
                            "serial_number": certificate.serial_number,
                        },
                    }
                )
            ]
        }
    ).dump()
    sid = cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": certificate.serial_number}).dump()
    return _Template(
        bits=bits,
        attr_content_type=_attribute(_OID_CONTENT_TYPE, _oid(_OID_DATA)),
        attr_ess=_attribute(_OID_SIGNING_CERT_V2, ess),
        signer_prefix=b"\x02\x01\x01" + sid + digest_alg,
        signer_suffix_alg=sig_alg,
        sd_prefix=(
            b"\x02\x01\x01"
            + _tlv(0x31, digest_alg)
            + _tlv(0x30, _oid(_OID_DATA))
            + _tlv(0xA0, certificate.der)
        ),
        mdigest_oid=_oid(_OID_MESSAGE_DIGEST),
    )


def sign_detached(
    data: bytes,
    *,
    key: gost.PrivateKey,
    certificate: Certificate,
    signing_time: dt.datetime | None = None,
    digest: bytes | None = None,
) -> bytes:
    """DER CMS SignedData (CAdES-BES), detached, one signer, certificate embedded.

    ``signing_time`` defaults to now (UTC, whole seconds). The key must match the certificate. ``digest``: the
    Streebog digest of ``data`` of the certificate's size, when the caller already has it (a document signed by
    several people is hashed once); it is what the signature attests, so it must be the digest of ``data``.
    """
    tpl = _template(certificate)
    if key.curve is not certificate.public_key.curve:
        raise PermanentError(
            "the key and the certificate are on different curves", reason="KEY_CERT_MISMATCH"
        )
    when = (signing_time or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if digest is None:
        digest = gost.streebog(data, tpl.bits)
    elif len(digest) != tpl.bits // 8:
        raise ValueError(f"a {tpl.bits}-bit key signs a {tpl.bits // 8}-byte digest, got {len(digest)} bytes")
    attrs = sorted(
        (  # DER: a SET OF is sorted by encoding
            tpl.attr_content_type,
            _attribute(_OID_SIGNING_TIME, _time_der(when)),
            _tlv(0x30, tpl.mdigest_oid + _tlv(0x31, _tlv(0x04, digest))),
            tpl.attr_ess,
        )
    )
    attrs_content = b"".join(attrs)
    # the signature covers the attributes with the SET tag (0x31), the message carries [0] (0xA0)
    signature = key.sign_digest(gost.streebog(_tlv(0x31, attrs_content), tpl.bits))
    signer = _tlv(
        0x30, tpl.signer_prefix + _tlv(0xA0, attrs_content) + tpl.signer_suffix_alg + _tlv(0x04, signature)
    )
    signed_data = _tlv(0x30, tpl.sd_prefix + _tlv(0x31, signer))
    return _tlv(0x30, _oid(_OID_SIGNED_DATA) + _tlv(0xA0, signed_data))


# ---------------------------------------------------------------------------------------------------
# wire format


def to_base64(cms_der: bytes) -> str:
    """Base64 (no line breaks) of a DER CMS: the form the event payloads and РЭМД carry."""
    return base64.b64encode(cms_der).decode("ascii")


def from_wire(value: bytes | str) -> bytes:
    """DER CMS from DER, base64 (line breaks allowed) or a PEM ``CMS``/``PKCS7`` block."""
    if isinstance(value, bytes) and value[:1] == b"\x30":
        return value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if "-----BEGIN" in text:
        text = "".join(line for line in text.splitlines() if not line.startswith("-----"))
    try:
        return base64_content(text)
    except ValueError:
        raise SignatureError(
            "the signature is neither DER nor base64", reason="SIGNATURE_DECODING_ERROR"
        ) from None


# ---------------------------------------------------------------------------------------------------
# verification


def _fail(reason: str, message: str) -> SignatureError:
    return SignatureError(message, reason=reason)


def _find_signer_cert(sd: cms.SignedData, sid: cms.SignerIdentifier) -> Certificate | None:
    for choice in sd["certificates"]:
        if choice.name != "certificate":
            continue
        cert = certificate_from_der(choice.chosen.dump())
        if sid.name == "issuer_and_serial_number":
            want = sid.chosen
            if (
                cert.serial_number == want["serial_number"].native
                and cert.issuer_der == want["issuer"].dump()
            ):
                return cert
        elif sid.name == "subject_key_identifier":
            ski = cert.asn1.key_identifier
            if ski is not None and ski == sid.chosen.native:
                return cert
    return None


def _attr_values(signed_attrs: cms.CMSAttributes, oid: str) -> list:
    for attr in signed_attrs:
        if attr["type"].dotted == oid:
            return list(attr["values"])
    return []


def verify_detached(
    data: bytes,
    cms_der: bytes,
    *,
    at: dt.datetime | None = None,
    document_time: dt.datetime | None = None,
    digests: MutableMapping[int, bytes] | None = None,
    parsed: cms.ContentInfo | None = None,
) -> VerifiedSignature:
    """Verify a detached CAdES-BES signature of ``data``; raise :class:`SignatureError` if invalid.

    The certificate must be valid at the signingTime it claims, at ``document_time`` when given (the
    СЭМД's creation time) and at ``at`` when given (e.g. now, like ``openssl -attime``). ``digests``: bits →
    Streebog digest of ``data``, read and filled in, so that several signatures over one document hash it once.
    ``parsed``: ``cms_der`` already loaded by the caller (one parse, not two); asn1crypto parses lazily and is
    not thread-safe, so it must be the caller's own object, never one shared between threads.
    """
    verified = verify_signature(data, cms_der, digests=digests, parsed=parsed)
    check_certificate(verified, at=at, document_time=document_time)
    return verified


def verify_signature(
    data: bytes,
    cms_der: bytes,
    *,
    digests: MutableMapping[int, bytes] | None = None,
    parsed: cms.ContentInfo | None = None,
) -> VerifiedSignature:
    """The checks of :func:`verify_detached` that depend only on the two byte strings, up to NO_SIGNING_TIME.

    Its result may be cached for bytes that recur (an МЧД's signature); :func:`check_certificate` must
    then still run for each moment of use.
    """
    sd, si = _only_signer_info(cms_der, parsed)
    try:
        cert = _find_signer_cert(sd, si["sid"])
        digest_oid = si["digest_algorithm"]["algorithm"].dotted
        sig_oid = si["signature_algorithm"]["algorithm"].dotted
        signature = si["signature"].native
        signed_attrs = si["signed_attrs"]
        has_attrs = bool(signed_attrs.contents)
    except PermanentError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail("SIGNATURE_DECODING_ERROR", f"unreadable SignerInfo: {exc}") from None
    if cert is None:
        raise _fail("NO_END_ENTITY_CERTIFICATE", "the signer's certificate is not in the CMS")
    public_key = _signer_key(cert, digest_oid, sig_oid)
    if not has_attrs:
        raise _fail("NO_SIGNED_ATTRIBUTES", "no signed attributes: not a CAdES signature")
    message_digest, signing_time, ess_v2, ess_v1, tbs = _signed_attributes(signed_attrs)

    bits = public_key.curve.size * 8
    computed = _document_digest(data, bits, digests)
    if message_digest is None or not hmac.compare_digest(message_digest, computed):
        raise _fail("DIGEST_MISMATCH", "the messageDigest is not the digest of this document")
    if not public_key.verify_digest(gost.streebog(tbs, bits), signature):
        raise _fail("SIGNATURE_INVALID", "the signature does not verify with the signer's key")
    _check_ess(cert, ess_v2, ess_v1)
    if signing_time is None:
        raise _fail("NO_SIGNING_TIME", "no signingTime attribute")
    return VerifiedSignature(
        certificate=cert,
        signing_time=signing_time,
        digest_algorithm=digest_oid,
        message_digest=message_digest,
    )


def _only_signer_info(
    cms_der: bytes, parsed: cms.ContentInfo | None
) -> tuple[cms.SignedData, cms.SignerInfo]:
    """(SignedData, its one SignerInfo) of the CMS; DECODING_ERROR or MULTIPLE_SIGNERS otherwise."""
    try:
        info = parsed if parsed is not None else cms.ContentInfo.load(cms_der, strict=True)
        if info["content_type"].dotted != _OID_SIGNED_DATA:
            raise _fail("SIGNATURE_DECODING_ERROR", "the CMS is not SignedData")
        sd = info["content"]
        signer_infos = sd["signer_infos"]
        count = len(signer_infos)
    except SignatureError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail("SIGNATURE_DECODING_ERROR", f"not a DER CMS SignedData: {exc}") from None
    if count != 1:
        raise _fail("MULTIPLE_SIGNERS", f"expected exactly one signer, found {count}")
    try:
        return sd, signer_infos[0]
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail("SIGNATURE_DECODING_ERROR", f"unreadable SignerInfo: {exc}") from None


def _signer_key(cert: Certificate, digest_oid: str, sig_oid: str) -> gost.PublicKey:
    """The certificate's GOST R 34.10-2012 key, when the digest and signature algorithms are of its size."""
    try:
        public_key = cert.public_key
    except PermanentError:
        raise _fail("UNKNOWN_ALGORITHM", "the signer's certificate has no GOST R 34.10-2012 key") from None
    size = public_key.curve.size
    if (
        digest_oid not in _DIGEST_BITS
        or _DIGEST_BITS[digest_oid] != size * 8
        or _SIGNATURE_SIZES.get(sig_oid) != size
    ):
        raise _fail("UNKNOWN_ALGORITHM", f"unsupported algorithms: digest {digest_oid}, signature {sig_oid}")
    return public_key


def _signed_attributes(
    signed_attrs: cms.CMSAttributes,
) -> tuple[bytes | None, dt.datetime | None, list[cms.CMSAttribute], list[cms.CMSAttribute], bytes]:
    """(messageDigest, signingTime, ESS signingCertificateV2 values, ESS signingCertificate values, the bytes
    the signature is over) of the signed attributes."""
    try:
        md_values = _attr_values(signed_attrs, _OID_MESSAGE_DIGEST)
        message_digest = md_values[0].native if md_values else None
        st_values = _attr_values(signed_attrs, _OID_SIGNING_TIME)
        signing_time = st_values[0].native if st_values else None
        ess_v2 = _attr_values(signed_attrs, _OID_SIGNING_CERT_V2)
        ess_v1 = _attr_values(signed_attrs, _OID_SIGNING_CERT)
        tbs = b"\x31" + signed_attrs.dump()[1:]  # signed as a SET, carried as [0]
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail("SIGNATURE_DECODING_ERROR", f"unreadable signed attributes: {exc}") from None
    return message_digest, signing_time, ess_v2, ess_v1, tbs


def _document_digest(data: bytes, bits: int, digests: MutableMapping[int, bytes] | None) -> bytes:
    """Streebog-``bits`` of ``data``, taken from ``digests`` when it has it, else computed and put there."""
    computed = digests.get(bits) if digests is not None else None
    if computed is None:
        computed = gost.streebog(data, bits)
        if digests is not None:
            digests[bits] = computed
    return computed


def check_certificate(
    verified: VerifiedSignature, *, at: dt.datetime | None = None, document_time: dt.datetime | None = None
) -> None:
    """The rest of :func:`verify_detached`: the certificate's validity at each moment, then its keyUsage."""
    cert = verified.certificate
    for label, when in (
        ("signing time", verified.signing_time),
        ("document time", document_time),
        ("verification time", at),
    ):
        if when is None:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if when < cert.not_before:
            raise _fail(
                "CERT_NOT_YET_VALID",
                f"the certificate is not yet valid at the {label} "
                f"({when:%Y-%m-%d %H:%M:%S%z}, valid from {cert.not_before:%Y-%m-%d})",
            )
        if when > cert.not_after:
            raise _fail(
                "CERT_EXPIRED",
                f"the certificate has expired by the {label} "
                f"({when:%Y-%m-%d %H:%M:%S%z}, valid until {cert.not_after:%Y-%m-%d})",
            )
    usage = cert.key_usage
    if cert.asn1.key_usage_value is not None and not usage & {"digital_signature", "non_repudiation"}:
        raise _fail("INVALID_CERT_KEY_USAGE", "the certificate's keyUsage allows no signatures")


def _check_ess(cert: Certificate, ess_v2: list, ess_v1: list) -> None:
    try:
        if ess_v2:
            first = ess_v2[0]["certs"][0]
            alg = first["hash_algorithm"]["algorithm"].dotted  # DEFAULT sha256 when absent
            cert_hash = first["cert_hash"].native
        elif ess_v1:
            first = ess_v1[0]["certs"][0]
            alg, cert_hash = "1.3.14.3.2.26", first["cert_hash"].native
        else:
            raise _fail("ESS_CERT_MISSING", "no signingCertificateV2 attribute: not a CAdES-BES signature")
        issuer_serial = first["issuer_serial"]
        # absent (OPTIONAL) is a Void; .native of a present one would convert the whole issuer name for nothing
        serial = None if isinstance(issuer_serial, core.Void) else issuer_serial["serial_number"].native
    except SignatureError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _fail("SIGNATURE_DECODING_ERROR", f"unreadable signingCertificate attribute: {exc}") from None
    hash_fn = _ESS_HASHES.get(alg)
    if hash_fn is None:
        raise _fail("UNKNOWN_ALGORITHM", f"unsupported ESS hash algorithm {alg}")
    if not hmac.compare_digest(hash_fn(cert.der), cert_hash):
        raise _fail("ESS_CERT_MISMATCH", "signingCertificateV2 names another certificate (certHash differs)")
    if serial is not None and serial != cert.serial_number:
        raise _fail("ESS_CERT_MISMATCH", "signingCertificateV2 names another certificate (serial differs)")
