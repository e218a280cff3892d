"""The process's own OpenSSL ``libcrypto`` through ctypes: the GOST provider, symmetric ciphers and GOST keys.

Python's ``hashlib`` is linked against a libcrypto; loading the ``gostprov`` provider (Debian
``libengine-gost-openssl``) into *that* library makes ``hashlib.new("md_gost12_256")`` a C-speed Streebog.
The same handle decrypts PFX bags (AES-CBC, 3DES, GOST 28147-89) without another dependency, and signs and
verifies GOST R 34.10-2012 through the ``gost`` engine of the same package (:func:`gost_pkey`; the provider has
no signatures in this version), for ``services.crypto.native``.
Everything here is optional: :func:`load` returns None when no usable libcrypto 3 is found, and callers
fall back to pure Python (gostcrypto).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib

from producer.errors import ConfigurationError

__all__ = [
    "load",
    "load_gost_provider",
    "cipher_decrypt",
    "has_digest",
    "Pkey",
    "gost_engine_keys",
    "gost_pkey",
    "pkey_sign",
    "pkey_verify",
]


@functools.cache
def load() -> ctypes.CDLL | None:
    """The libcrypto already mapped into this process by ``_hashlib`` (else the system one), or None."""
    import _hashlib  # noqa: F401  (maps libcrypto into the process)

    path = None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                if "libcrypto.so" in line:
                    path = line.split(None, 5)[-1].strip()
                    break
    except OSError:
        pass
    path = path or ctypes.util.find_library("crypto")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.OSSL_PROVIDER_load.restype = ctypes.c_void_p
    except (OSError, AttributeError):
        return None  # not OpenSSL 3
    lib.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.EVP_CIPHER_fetch.restype = ctypes.c_void_p
    lib.EVP_CIPHER_fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.EVP_CIPHER_free.argtypes = [ctypes.c_void_p]
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    lib.EVP_CipherInit_ex.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.EVP_CipherUpdate.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.EVP_CipherFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.EVP_CIPHER_get_key_length.argtypes = [ctypes.c_void_p]
    lib.EVP_CIPHER_get_iv_length.argtypes = [ctypes.c_void_p]
    lib.d2i_ASN1_TYPE.restype = ctypes.c_void_p
    lib.d2i_ASN1_TYPE.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]
    lib.ASN1_TYPE_free.argtypes = [ctypes.c_void_p]
    lib.EVP_CIPHER_asn1_to_param.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.ENGINE_by_id.restype = ctypes.c_void_p
    lib.ENGINE_by_id.argtypes = [ctypes.c_char_p]
    lib.ENGINE_init.argtypes = [ctypes.c_void_p]
    lib.ENGINE_get_cipher.restype = ctypes.c_void_p
    lib.ENGINE_get_cipher.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.OBJ_txt2nid.argtypes = [ctypes.c_char_p]
    _bind_pkey(lib)
    return lib


def _bind_pkey(lib: ctypes.CDLL) -> None:
    v, der_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)
    for name, res, args in (
        ("ENGINE_register_pkey_asn1_meths", ctypes.c_int, [v]),
        ("ENGINE_register_pkey_meths", ctypes.c_int, [v]),
        ("d2i_AutoPrivateKey", v, [v, der_p, ctypes.c_long]),
        ("d2i_PUBKEY", v, [v, der_p, ctypes.c_long]),
        ("EVP_PKEY_free", None, [v]),
        ("EVP_PKEY_CTX_new", v, [v, v]),
        ("EVP_PKEY_CTX_free", None, [v]),
        ("EVP_PKEY_sign_init", ctypes.c_int, [v]),
        ("EVP_PKEY_verify_init", ctypes.c_int, [v]),
        (
            "EVP_PKEY_sign",
            ctypes.c_int,
            [v, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p, ctypes.c_size_t],
        ),
        (
            "EVP_PKEY_verify",
            ctypes.c_int,
            [v, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t],
        ),
        ("ERR_clear_error", None, []),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


@functools.cache
def load_gost_provider() -> bool:
    """Load ``default`` and ``gostprov`` into the process libcrypto; True if Streebog is then in hashlib."""
    lib = load()
    if lib is not None:
        # loading any provider explicitly disables the implicit default one: keep it
        lib.OSSL_PROVIDER_load(None, b"default")
        lib.OSSL_PROVIDER_load(None, b"gostprov")
    return has_digest("md_gost12_256")


@functools.cache
def _gost_engine() -> int | None:
    """The OpenSSL ``gost`` engine (loaded from ENGINESDIR on first use), or None."""
    lib = load()
    if lib is None:
        return None
    engine = lib.ENGINE_by_id(b"gost")
    if not engine or lib.ENGINE_init(engine) != 1:
        lib.ERR_clear_error()
        return None
    return engine


def has_digest(name: str) -> bool:
    try:
        hashlib.new(name, b"")
    except (ValueError, TypeError):
        return False
    return True


class CipherUnavailable(ConfigurationError):
    """The requested cipher is not available in this libcrypto (a key container this deployment cannot open)."""

    reason = "CIPHER_UNAVAILABLE"


def _init_with_params(
    lib: ctypes.CDLL, ctx: int, cipher: int, engine: int | None, key: bytes, asn1_params: bytes, name: str
) -> None:
    """Set up ``ctx`` for decryption as OpenSSL's own PBES2 does: the cipher, then its ASN.1 parameters (which
    carry the IV), then the key."""
    if lib.EVP_CipherInit_ex(ctx, cipher, engine, None, None, 0) != 1:
        raise ValueError(f"{name}: init failed")
    buf = ctypes.create_string_buffer(asn1_params, len(asn1_params))
    pp = ctypes.c_char_p(ctypes.addressof(buf))
    atype = lib.d2i_ASN1_TYPE(None, ctypes.byref(pp), len(asn1_params))
    if not atype:
        raise ValueError(f"{name}: bad parameters")
    try:
        if lib.EVP_CIPHER_asn1_to_param(ctx, atype) <= 0:
            raise CipherUnavailable(f"{name}: OpenSSL rejected the cipher parameters")
    finally:
        lib.ASN1_TYPE_free(atype)
    if lib.EVP_CipherInit_ex(ctx, None, None, key, None, 0) != 1:
        raise ValueError(f"{name}: init failed")


def cipher_decrypt(
    name: str, key: bytes, iv: bytes, data: bytes, *, padding: bool = True, asn1_params: bytes | None = None
) -> bytes:
    """Decrypt ``data`` with the OpenSSL cipher ``name`` (``AES-256-CBC``, ``DES-EDE3-CBC``, ``gost89``…).

    ``asn1_params``: the DER AlgorithmIdentifier parameters, for ciphers whose parameters carry more
    than the IV (GOST 28147-89: the S-box set); OpenSSL then takes the IV from them.

    Raises :class:`CipherUnavailable` when the cipher cannot be fetched and ValueError when the
    decryption fails (with CBC padding, a wrong key usually fails here).
    """
    lib = load()
    if lib is None:
        raise CipherUnavailable("no OpenSSL 3 libcrypto in this process")
    engine = None
    if asn1_params is not None and (name.lower().startswith("gost") or name.startswith("1.2.643.")):
        # the provider's GOST ciphers cannot take ASN.1 parameters (S-box OID); the engine's can
        engine = _gost_engine()
        nid = lib.OBJ_txt2nid(name.encode())
        cipher = lib.ENGINE_get_cipher(engine, nid) if engine and nid else None
    else:
        cipher = lib.EVP_CIPHER_fetch(None, name.encode(), None)
    if not cipher:
        lib.ERR_clear_error()
        raise CipherUnavailable(f"cipher {name} is not available")
    ctx = lib.EVP_CIPHER_CTX_new()
    try:
        if len(key) != lib.EVP_CIPHER_get_key_length(cipher):
            raise ValueError(f"{name}: key must be {lib.EVP_CIPHER_get_key_length(cipher)} bytes")
        if asn1_params is None and len(iv) != lib.EVP_CIPHER_get_iv_length(cipher):
            raise ValueError(f"{name}: IV must be {lib.EVP_CIPHER_get_iv_length(cipher)} bytes")
        if asn1_params is not None:
            _init_with_params(lib, ctx, cipher, engine, key, asn1_params, name)
        elif lib.EVP_CipherInit_ex(ctx, cipher, None, key, iv, 0) != 1:
            raise ValueError(f"{name}: init failed")
        lib.EVP_CIPHER_CTX_set_padding(ctx, 1 if padding else 0)
        out = ctypes.create_string_buffer(len(data) + 64)
        n = ctypes.c_int(0)
        if lib.EVP_CipherUpdate(ctx, out, ctypes.byref(n), data, len(data)) != 1:
            raise ValueError(f"{name}: decryption failed")
        total = n.value
        tail = ctypes.create_string_buffer(64)
        if lib.EVP_CipherFinal_ex(ctx, tail, ctypes.byref(n)) != 1:
            raise ValueError(f"{name}: bad padding (wrong key?)")
        return out.raw[:total] + tail.raw[: n.value]
    finally:
        lib.ERR_clear_error()  # a failed decrypt must not leave errors for hashlib to trip over
        lib.EVP_CIPHER_CTX_free(ctx)
        lib.EVP_CIPHER_free(cipher)


class Pkey:
    """An ``EVP_PKEY`` of this process's libcrypto, freed with the object."""

    __slots__ = ("handle", "_lib")

    def __init__(self, lib: ctypes.CDLL, handle: int) -> None:
        self._lib, self.handle = lib, handle

    def __del__(self) -> None:
        if self.handle:
            self._lib.EVP_PKEY_free(self.handle)
            self.handle = 0


@functools.cache
def gost_engine_keys() -> ctypes.CDLL | None:
    """libcrypto with the gost engine's key formats and signatures registered (once), or None."""
    lib, engine = load(), _gost_engine()
    if lib is None or not engine:
        return None
    if lib.ENGINE_register_pkey_asn1_meths(engine) != 1 or lib.ENGINE_register_pkey_meths(engine) != 1:
        lib.ERR_clear_error()
        return None
    return lib


def gost_pkey(der: bytes, *, private: bool) -> Pkey | None:
    """A GOST key from DER (PKCS#8 when ``private``, else SubjectPublicKeyInfo), or None when OpenSSL cannot
    take it (no gost engine, a parameter set it lacks)."""
    lib = gost_engine_keys()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(der, len(der))
    pp = ctypes.c_char_p(ctypes.addressof(buf))
    handle = (lib.d2i_AutoPrivateKey if private else lib.d2i_PUBKEY)(None, ctypes.byref(pp), len(der))
    if not handle:
        lib.ERR_clear_error()
        return None
    return Pkey(lib, handle)


def pkey_sign(key: Pkey, digest: bytes, size: int) -> bytes | None:
    """The key's signature (``size`` bytes) of a precomputed ``digest``, or None when OpenSSL fails."""
    lib = key._lib
    ctx = lib.EVP_PKEY_CTX_new(key.handle, None)
    try:
        out, n = ctypes.create_string_buffer(size), ctypes.c_size_t(size)
        if (
            not ctx
            or lib.EVP_PKEY_sign_init(ctx) != 1
            or lib.EVP_PKEY_sign(ctx, out, ctypes.byref(n), digest, len(digest)) != 1
            or n.value != size
        ):
            lib.ERR_clear_error()
            return None
        return out.raw
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def pkey_verify(key: Pkey, digest: bytes, signature: bytes) -> bool | None:
    """Whether ``signature`` is the key's over the precomputed ``digest``; None when OpenSSL could not say."""
    lib = key._lib
    ctx = lib.EVP_PKEY_CTX_new(key.handle, None)
    try:
        if not ctx or lib.EVP_PKEY_verify_init(ctx) != 1:
            lib.ERR_clear_error()
            return None
        verdict = lib.EVP_PKEY_verify(ctx, signature, len(signature), digest, len(digest))
        if verdict != 1:
            lib.ERR_clear_error()  # a refused signature leaves errors that hashlib would trip over
        return True if verdict == 1 else False if verdict == 0 else None
    finally:
        lib.EVP_PKEY_CTX_free(ctx)
