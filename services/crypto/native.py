"""GOST R 34.10-2012 signing and verification in C: OpenSSL's ``gost`` engine, through the process's libcrypto.

``services.crypto.gost`` signs and verifies here when the engine loads (Debian ``libengine-gost-openssl``, the
package that also gives Streebog), and in pure Python otherwise. Both give the same results: the signature is
``s ‖ r``, and the digest is read as an integer the same way (the engine's CMS code, which the tests verify our
signatures with, hands it the same bytes); the tests hold the two paths and gostcrypto to each other on every
curve. Measured alone on this project's machine (tc26-256): a signature 0.06 ms instead of 0.32, a verification
0.14–0.28 ms instead of 0.76–0.88 with the key's comb table already built.

A key reaches OpenSSL as DER once (PKCS#8 for a private key, SubjectPublicKeyInfo for a public one,
``services.crypto.keys``); the handles of the keys used last are kept (:data:`PUBLIC_KEYS`, :data:`PRIVATE_KEYS`).
Whatever OpenSSL refuses or fails at (no engine, a curve it lacks, an internal error) returns None here, and the
caller takes the Python path: the verdict never depends on whether C was available.
"""

from __future__ import annotations

import functools

from services.crypto import gost, keys, libcrypto

__all__ = ["available", "sign_digest", "verify_digest", "PUBLIC_KEYS", "PRIVATE_KEYS"]

#: public-key handles kept (a process verifies the same few keys again and again, as with gost's comb tables)
PUBLIC_KEYS = 512
#: private-key handles kept (a process signs with its organisations' keys)
PRIVATE_KEYS = 64


@functools.cache
def available() -> bool:
    """Whether OpenSSL's gost engine signs and verifies in this process."""
    return libcrypto.gost_engine_keys() is not None


@functools.lru_cache(maxsize=PRIVATE_KEYS)
def _private(curve: gost.Curve, d: int) -> libcrypto.Pkey | None:
    return libcrypto.gost_pkey(keys.dump_pkcs8(gost.PrivateKey(curve, d)), private=True)


@functools.lru_cache(maxsize=PUBLIC_KEYS)
def _public(curve: gost.Curve, x: int, y: int) -> libcrypto.Pkey | None:
    return libcrypto.gost_pkey(keys.public_key_info(gost.PublicKey(curve, x, y)).dump(), private=False)


def sign_digest(key: gost.PrivateKey, digest: bytes) -> bytes | None:
    """``s ‖ r`` of ``digest`` (of the curve's size, checked by the caller) made by OpenSSL, or None."""
    handle = _private(key.curve, key.d) if available() else None
    return libcrypto.pkey_sign(handle, digest, 2 * key.curve.size) if handle is not None else None


def verify_digest(key: gost.PublicKey, digest: bytes, signature: bytes) -> bool | None:
    """OpenSSL's verdict on ``signature`` over ``digest`` (sizes checked by the caller), or None."""
    handle = _public(key.curve, key.x, key.y) if available() else None
    return libcrypto.pkey_verify(handle, digest, signature) if handle is not None else None
