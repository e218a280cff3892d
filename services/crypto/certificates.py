"""X.509 certificates with the fields of a Russian qualified certificate (Приказ ФСБ № 795).

:class:`Certificate` wraps an asn1crypto certificate and reads what the pipeline needs: the GOST public
key (asn1crypto cannot decode GOST keys, ``services.crypto.keys`` does), validity, key usage, and the subject's
СНИЛС (1.2.643.100.3), ОГРН (1.2.643.100.1), ОГРНИП (1.2.643.100.5), ИНН (1.2.643.3.131.1.1), ИНН ЮЛ
(1.2.643.100.4), surname, givenName ("Имя Отчество"), CN, O and title. Values that identify a person
(СНИЛС, names) are for matching, never for logs.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from functools import cached_property
from pathlib import Path

from asn1crypto import pem, x509

from producer.errors import PermanentError
from services.crypto import gost, keys

__all__ = [
    "Certificate",
    "certificate_from_der",
    "load_certificate",
    "OID_SNILS",
    "OID_OGRN",
    "OID_OGRNIP",
    "OID_INN",
    "OID_INNLE",
]

OID_OGRN = "1.2.643.100.1"
OID_SNILS = "1.2.643.100.3"
OID_INNLE = "1.2.643.100.4"
OID_OGRNIP = "1.2.643.100.5"
OID_INN = "1.2.643.3.131.1.1"


class Certificate:
    """An X.509 certificate with a GOST R 34.10-2012 key. Immutable; equality is by DER."""

    def __init__(self, der: bytes) -> None:
        try:
            self._cert = x509.Certificate.load(der)
            self._cert["tbs_certificate"]["serial_number"].native  # noqa: B018 (force a parse)
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"unreadable certificate: {exc}", reason="CERT_INVALID") from None
        self.der = bytes(der)

    @property
    def asn1(self) -> x509.Certificate:
        return self._cert

    @property
    def tbs(self):
        return self._cert["tbs_certificate"]

    @cached_property
    def public_key(self) -> gost.PublicKey:
        """The subject's GOST public key (PermanentError CERT_INVALID for any other key type)."""
        try:
            return keys.public_key_from_info(self.tbs["subject_public_key_info"].dump())
        except (ValueError, KeyError) as exc:
            raise PermanentError(
                f"certificate key is not a usable GOST key: {exc}", reason="CERT_INVALID"
            ) from None

    def issued_by(self, ca: Certificate) -> bool:
        """True when ``ca`` is the issuer: its subject is our issuer and its key verifies our signature."""
        if ca.subject.dump() != self.issuer.dump():
            return False
        try:
            digest = gost.streebog(self.tbs.dump(), ca.public_key.curve.bits)
            return ca.public_key.verify_digest(digest, self._cert["signature_value"].native)
        except (PermanentError, ValueError):
            return False

    @property
    def serial_number(self) -> int:
        return self.tbs["serial_number"].native

    @property
    def issuer(self) -> x509.Name:
        return self.tbs["issuer"]

    @property
    def subject(self) -> x509.Name:
        return self.tbs["subject"]

    @property
    def issuer_der(self) -> bytes:
        return self.tbs["issuer"].dump()

    @property
    def not_before(self) -> dt.datetime:
        return self.tbs["validity"]["not_before"].native

    @property
    def not_after(self) -> dt.datetime:
        return self.tbs["validity"]["not_after"].native

    def is_valid_at(self, when: dt.datetime) -> bool:
        """True if ``when`` (timezone-aware; naive means UTC) lies in [notBefore, notAfter]."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return self.not_before <= when <= self.not_after

    @property
    def key_usage(self) -> frozenset[str]:
        """asn1crypto names (``digital_signature``, ``non_repudiation``…); empty when absent."""
        value = self._cert.key_usage_value
        return frozenset(value.native) if value is not None else frozenset()

    @property
    def is_ca(self) -> bool:
        bc = self._cert.basic_constraints_value
        return bool(bc and bc["ca"].native)

    def _attr(self, oid: str, name: x509.Name | None = None) -> str | None:
        for rdn in (name or self.subject).chosen:
            for atv in rdn:
                if atv["type"].dotted == oid:
                    value = atv["value"].native
                    return str(value).strip() if value is not None else None
        return None

    @property
    def snils(self) -> str | None:
        return self._attr(OID_SNILS)

    @property
    def ogrn(self) -> str | None:
        return self._attr(OID_OGRN)

    @property
    def ogrnip(self) -> str | None:
        return self._attr(OID_OGRNIP)

    @property
    def inn(self) -> str | None:
        """ИНН of the person (1.2.643.3.131.1.1)."""
        return self._attr(OID_INN)

    @property
    def inn_le(self) -> str | None:
        """ИНН of the legal entity (1.2.643.100.4)."""
        return self._attr(OID_INNLE)

    @property
    def surname(self) -> str | None:
        return self._attr("2.5.4.4")

    @property
    def given_name(self) -> str | None:
        """givenName: "Имя Отчество" in a Russian qualified certificate."""
        return self._attr("2.5.4.42")

    @property
    def common_name(self) -> str | None:
        return self._attr("2.5.4.3")

    @property
    def organization(self) -> str | None:
        return self._attr("2.5.4.10")

    @property
    def title(self) -> str | None:
        return self._attr("2.5.4.12")

    @cached_property
    def fingerprint_streebog256(self) -> bytes:
        """Streebog-256 of the DER: the ESSCertIDv2 certHash."""
        return gost.streebog256(self.der)

    def fingerprint(self, bits: int = 256) -> bytes:
        return self.fingerprint_streebog256 if bits == 256 else gost.streebog512(self.der)

    def to_pem(self) -> bytes:
        return pem.armor("CERTIFICATE", self.der)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"Certificate(serial={self.serial_number:#x}, not_after={self.not_after:%Y-%m-%d})"


@functools.lru_cache(maxsize=256)
def certificate_from_der(der: bytes) -> Certificate:
    """The certificate of these DER bytes, parsed once: the same few certificates arrive in every CMS and
    WS-Security header a process verifies, and each parse (with its key and fields) cost more than the check.
    A ``Certificate`` is immutable, so one object serves every caller; an unreadable one is not kept.

    Parsed whole before it is shared: asn1crypto parses a structure's children lazily, on first access, and two
    threads doing that at once on one shared object can read a half-built child (emulator jobs failed on a
    СНИЛС attribute with ``No field numbered 1``, and on the key usage extension with ``No field numbered 2``).
    So the parts a check reads are parsed here, and the extensions asn1crypto sets on first use are set now."""
    certificate = Certificate(der)
    tbs = certificate._cert["tbs_certificate"]
    for name in (tbs["subject"], tbs["issuer"]):  # the names' attributes, read by every check
        for rdn in name.chosen:
            for atv in rdn:
                atv["type"].dotted, atv["value"].native  # noqa: B018 - parsed now, later reads do not mutate
    for part in ("validity", "extensions"):  # the rest a check reads (Certificate parsed the key already)
        if hasattr(tbs[part], "_parse_children"):  # absent extensions are a Void
            tbs[part]._parse_children(recurse=True)
    certificate._cert.key_usage_value  # noqa: B018 - and the extension attributes asn1crypto caches on first use
    return certificate


def load_certificate(source: bytes | str | os.PathLike) -> Certificate:
    """A certificate from PEM or DER bytes, or from a file path holding either."""
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
    if pem.detect(data):
        label, _, data = pem.unarmor(data)
        if label not in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
            raise PermanentError(f"expected a CERTIFICATE PEM block, got {label}", reason="CERT_INVALID")
    return certificate_from_der(bytes(data))
