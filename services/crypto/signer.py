"""The ``Signer`` interface: what the signer worker needs from whoever holds the private key.

A worker only ever calls ``signer.sign(document_bytes)`` and reads ``signer.certificate``; it never sees
a key. Today's implementation, :class:`LocalKeySigner`, holds a software key in the process
(``services.crypto.keys``) and signs with ``services.crypto.cades``. Others fit the same two members without touching
any worker:

* **CryptoPro DSS** (REST, the usual server-side answer for a *qualified* signature): ``certificate``
  is fetched once from ``GET /api/certificates/{id}``; ``sign`` posts the document (or, for large
  documents, its Streebog hash with ``IsHash=true``) to ``POST /api/documents`` with the CAdES-BES,
  detached parameters, then returns the base64-decoded CMS. Network failures raise ``TransientError``,
  a refused PIN or a revoked certificate ``PermanentError``.
* **PKCS#11 token** (Рутокен ЭЦП 2.0/3.0, JaCarta-2 ГОСТ): the key never leaves the token. ``sign``
  builds the signed attributes exactly as ``services.crypto.cades`` does (its template is per certificate),
  hashes them with Streebog, asks the token for ``C_Sign`` with ``CKM_GOSTR3410`` over that digest
  (the token returns ``s‖r``, the wire order) and splices the result in.

Both must return DER CMS that ``services.crypto.cades.verify_detached`` accepts; the contract test for a new
implementation is exactly that.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from producer.errors import ConfigurationError
from services.crypto import cades, gost
from services.crypto.certificates import Certificate

__all__ = ["Signer", "LocalKeySigner"]


@runtime_checkable
class Signer(Protocol):
    """Signs documents with one certificate's key; returns detached CAdES-BES as DER."""

    @property
    def certificate(self) -> Certificate: ...

    def sign(
        self, data: bytes, *, signing_time: dt.datetime | None = None, digest: bytes | None = None
    ) -> bytes:
        """Detached CAdES-BES of ``data``. ``digest``: its Streebog digest of the certificate's size, when the
        caller has it already (DSS: "sign hash", IsHash=true; a token signs over it either way)."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Raw GOST R 34.10 signature (s‖r) over a Streebog digest: what WS-Security XMLDSig needs.
        (A DSS service offers this as "sign hash"; a PKCS#11 token as C_Sign on the digest.)"""
        ...


class LocalKeySigner:
    """A software key in this process (PKCS#8 or PFX, see ``services.crypto.keys``)."""

    def __init__(self, key: gost.PrivateKey, certificate: Certificate) -> None:
        if key.public_key() != certificate.public_key:
            raise ConfigurationError(
                "the private key does not belong to the certificate", reason="KEY_CERT_MISMATCH"
            )
        self._key = key
        self._certificate = certificate

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    def sign(
        self, data: bytes, *, signing_time: dt.datetime | None = None, digest: bytes | None = None
    ) -> bytes:
        return cades.sign_detached(
            data, key=self._key, certificate=self._certificate, signing_time=signing_time, digest=digest
        )

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign_digest(digest)

    def __repr__(self) -> str:
        return f"LocalKeySigner({self._certificate!r})"
