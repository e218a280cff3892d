"""A development / test PKI in pure Python: a self-signed GOST CA that issues qualified-looking certificates.

For tests, the РЭМД emulator and the ``make run`` demo; **never** for production signatures (the keys
are software keys and the CA is nobody's). Certificates carry the fields of a Russian qualified
certificate (СНИЛС, ИНН, ОГРН, surname, givenName "Имя Отчество", O, title), the key usage asked for
and a chosen validity window, so every verification rule (expired, wrong key usage…) can be exercised.
Keys are written as PKCS#8 PEM exactly as ``openssl genpkey -engine gost`` writes them, so OpenSSL
reads them too::

    ca = DevCA.create("Тестовый УЦ", paramset="A")
    key, cert = ca.issue(subject=SubjectInfo("Иванов", "Иван Иванович", snils="12345678901"))
    write_pem(key, cert, key_path="doctor.key", cert_path="doctor.pem")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from asn1crypto import core, x509
from asn1crypto import keys as a_keys

from producer.files import write_private
from services.crypto import gost, keys
from services.crypto.certificates import (
    OID_INN,
    OID_INNLE,
    OID_OGRN,
    OID_OGRNIP,
    OID_SNILS,
    Certificate,
)

__all__ = ["SubjectInfo", "DevCA", "write_pem", "DEFAULT_KEY_USAGE"]

#: what a signing certificate of a doctor or an organisation has
DEFAULT_KEY_USAGE = ("digital_signature", "non_repudiation")
_OID_SUBJECT_SIGN_TOOL = "1.2.643.100.111"


@dataclass(frozen=True)
class SubjectInfo:
    """The subject of a qualified certificate; any field may be None except ``family``."""

    family: str
    given: str | None = None  # "Имя Отчество"
    snils: str | None = None  # 11 digits
    inn: str | None = None  # ИНН ФЛ, 12 digits
    ogrn: str | None = None  # ОГРН, 13 digits
    org: str | None = None
    title: str | None = None
    inn_le: str | None = None  # ИНН ЮЛ, 10 digits
    ogrnip: str | None = None
    common_name: str | None = None  # default: "family given" (or org when there is no person)
    country: str = "RU"


def _atv(oid: str, value: core.Asn1Value) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameTypeAndValue({"type": oid, "value": value})])


def _name(info: SubjectInfo) -> x509.Name:
    utf8 = x509.DirectoryString
    rdns = [_atv("2.5.4.6", core.PrintableString(info.country))]
    cn = info.common_name or " ".join(p for p in (info.family, info.given) if p)
    for oid, value in (
        ("2.5.4.10", info.org),
        ("2.5.4.12", info.title),
        ("2.5.4.3", cn),
        ("2.5.4.4", info.family),
        ("2.5.4.42", info.given),
    ):
        if value:
            rdns.append(_atv(oid, utf8(name="utf8_string", value=value)))
    # the numbers are NumericString, as Приказ ФСБ № 795 requires
    for oid, value in (
        (OID_SNILS, info.snils),
        (OID_INN, info.inn),
        (OID_OGRN, info.ogrn),
        (OID_INNLE, info.inn_le),
        (OID_OGRNIP, info.ogrnip),
    ):
        if value:
            rdns.append(_atv(oid, core.NumericString(value)))
    return x509.Name(name="", value=x509.RDNSequence(rdns))


def _key_id(public: gost.PublicKey) -> bytes:
    return hashlib.sha1(public.to_bytes()).digest()  # RFC 5280 §4.2.1.2 method (1), on the key bytes


def _build(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public: gost.PublicKey,
    signer: gost.PrivateKey,
    issuer_key_id: bytes,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key_usage: Iterable[str],
    ca: bool,
) -> Certificate:
    spki = a_keys.PublicKeyInfo.load(
        keys.public_key_info(public).dump()
    )  # opaque: asn1crypto cannot parse it
    extensions = [
        {"extn_id": "key_usage", "critical": True, "extn_value": x509.KeyUsage(set(key_usage))},
        {"extn_id": "basic_constraints", "critical": ca, "extn_value": {"ca": ca}},
        {"extn_id": "key_identifier", "critical": False, "extn_value": _key_id(public)},
        {
            "extn_id": "authority_key_identifier",
            "critical": False,
            "extn_value": {"key_identifier": issuer_key_id},
        },
        {
            "extn_id": _OID_SUBJECT_SIGN_TOOL,
            "critical": False,
            "extn_value": core.ParsableOctetString(
                core.UTF8String("emd-pipeline devpki (not a certified provider)").dump()
            ),
        },
    ]
    sig_alg = {"algorithm": signer.curve.signature_oid}
    tbs = x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": secrets.randbits(127) | (1 << 126),
            "signature": sig_alg,
            "issuer": issuer,
            "validity": {
                "not_before": x509.Time(name="utc_time", value=not_before),
                "not_after": x509.Time(name="utc_time", value=not_after),
            },
            "subject": subject,
            "subject_public_key_info": spki,
            "extensions": extensions,
        }
    )
    tbs_der = tbs.dump()
    signature = signer.sign_digest(gost.streebog(tbs_der, signer.curve.bits))
    der = x509.Certificate(
        {
            "tbs_certificate": x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": sig_alg,
            "signature_value": signature,
        }
    ).dump()
    return Certificate(der)


def _utc(when: dt.datetime) -> dt.datetime:
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0)


class DevCA:
    """A self-signed GOST R 34.10-2012 certification authority held in memory."""

    def __init__(self, key: gost.PrivateKey, certificate: Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def create(
        cls,
        name: str = "emd-pipeline test CA",
        *,
        paramset: str = "A",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        org: str | None = None,
    ) -> DevCA:
        """A new CA; ``paramset`` as openssl's (A, B, C, TCA, TCB…) or a tc26 name. Valid 10 years."""
        key = gost.PrivateKey.generate(gost.curve_by_name(paramset))
        now = dt.datetime.now(dt.UTC)
        name_ = _name(SubjectInfo(family="", common_name=name, org=org or name))
        cert = _build(
            subject=name_,
            issuer=name_,
            public=key.public_key(),
            signer=key,
            issuer_key_id=_key_id(key.public_key()),
            not_before=_utc(not_before or now - dt.timedelta(days=1)),
            not_after=_utc(not_after or now + dt.timedelta(days=3650)),
            key_usage=("key_cert_sign", "crl_sign", "digital_signature"),
            ca=True,
        )
        return cls(key, cert)

    def issue(
        self,
        *,
        subject: SubjectInfo,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_usage: Iterable[str] = DEFAULT_KEY_USAGE,
        paramset: str | None = None,
        key: gost.PrivateKey | None = None,
    ) -> tuple[gost.PrivateKey, Certificate]:
        """A new end-entity key (or ``key``) and its certificate; valid from yesterday for a year by default.

        ``paramset`` defaults to the CA's curve; ``key_usage`` takes asn1crypto names
        (``digital_signature``, ``non_repudiation``, ``key_encipherment``…).
        """
        if key is None:
            curve = gost.curve_by_name(paramset) if paramset else self.key.curve
            key = gost.PrivateKey.generate(curve)
        now = dt.datetime.now(dt.UTC)
        cert = _build(
            subject=_name(subject),
            issuer=self.certificate.subject,
            public=key.public_key(),
            signer=self.key,
            issuer_key_id=_key_id(self.key.public_key()),
            not_before=_utc(not_before or now - dt.timedelta(days=1)),
            not_after=_utc(not_after or now + dt.timedelta(days=365)),
            key_usage=key_usage,
            ca=False,
        )
        return key, cert


def write_pem(
    key: gost.PrivateKey | None,
    certificate: Certificate,
    *,
    cert_path: str | os.PathLike,
    key_path: str | os.PathLike | None = None,
) -> None:
    """Write the certificate (PEM) and, if given, the key (PKCS#8 PEM); both 0600 in a 0700 directory."""
    write_private(cert_path, certificate.to_pem())
    if key is not None and key_path is not None:
        write_private(key_path, keys.dump_pkcs8_pem(key))
