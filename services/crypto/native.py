"""GOST R 34.10-2012 signing and verification in C: OpenSSL's ``gost`` engine, through the process's libcrypto.

``services.crypto.gost`` signs and verifies here when the engine loads (Debian ``libengine-gost-openssl``, the
package that also gives Streebog), and in pure Python otherwise. Both give the same results: the signature is
``s ‖ r``, and the digest is read as an integer the same way (the engine's CMS code, which the tests verify our
signatures with, hands it the same bytes); the tests hold the two paths and gostcrypto to each other on every
curve. Measured alone on this project's machine (tc26-256): a signature 0.06 ms instead of 0.32, a verification
0.14–0.28 ms instead of 0.76–0.88 with the key's comb table already built.

A key reaches OpenSSL as DER once (PKCS#8 for a private key, SubjectPublicKeyInfo for a public one,
``services.crypto.keys``; ~3 ms, OpenSSL's decoders are slow) and its handle lives as long as the key object it was
made for (certificates, and so their keys, are parsed once per process), so a process with a hundred doctors' keys pays that once per key, not
whenever a bounded cache turns over. Whatever OpenSSL refuses or fails at (no engine, a curve it lacks, an internal
error) returns None here, and the caller takes the Python path: the verdict never depends on whether C was
available.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable

from services.crypto import gost, keys, libcrypto

__all__ = ["available", "sign_digest", "verify_digest"]

#: key object → its EVP_PKEY (None: OpenSSL would not take it), dropped with the key
_handles: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether OpenSSL's gost engine signs and verifies in this process."""
    return libcrypto.gost_engine_keys() is not None


def _handle(
    key: gost.PrivateKey | gost.PublicKey, der: Callable[[], bytes], *, private: bool
) -> libcrypto.Pkey | None:
    try:
        return _handles[key]
    except KeyError:
        pass
    handle = libcrypto.gost_pkey(der(), private=private)
    with _lock:
        return _handles.setdefault(key, handle)


def sign_digest(key: gost.PrivateKey, digest: bytes) -> bytes | None:
    """``s ‖ r`` of ``digest`` (of the curve's size, checked by the caller) made by OpenSSL, or None."""
    if not available():
        return None
    handle = _handle(key, lambda: keys.dump_pkcs8(key), private=True)
    return libcrypto.pkey_sign(handle, digest, 2 * key.curve.size) if handle is not None else None


def verify_digest(key: gost.PublicKey, digest: bytes, signature: bytes) -> bool | None:
    """OpenSSL's verdict on ``signature`` over ``digest`` (sizes checked by the caller), or None."""
    if not available():
        return None
    handle = _handle(key, lambda: keys.public_key_info(key).dump(), private=False)
    return libcrypto.pkey_verify(handle, digest, signature) if handle is not None else None
