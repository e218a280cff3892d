"""GOST private keys from PKCS#8 (PEM/DER) and from PFX/PKCS#12 containers.

* PKCS#8 as the OpenSSL GOST engine writes it (``openssl genpkey -engine gost -algorithm gost2012_256
  -pkeyopt paramset:A``): ``PrivateKeyInfo`` with algorithm 1.2.643.7.1.1.1.1/2, parameters
  ``SEQUENCE {paramSet OID, digest OID?}``, and the scalar in one of the encodings
  ``services.crypto.byteorder.private_key_from_bytes`` accepts. asn1crypto's own ``PrivateKeyInfo`` raises on
  GOST OIDs, hence the small classes below.
* PFX (``openssl pkcs12 -export``): MAC checked first (SHA-1/SHA-2 with the PKCS#12 KDF, or Streebog with
  the TC 26 PBKDF2 key), then bags decrypted: PBES2 (PBKDF2 with HMAC-SHA* or HMAC-Streebog; AES-CBC,
  3DES-CBC or GOST 28147-89 through the process libcrypto) or the legacy PKCS#12 3DES PBE.

A wrong password raises ``PermanentError(reason="KEY_PASSWORD_INVALID")``; an unreadable container
``KEY_INVALID``; an unsupported algorithm ``KEY_UNSUPPORTED``. Passwords come from a file or an
environment variable (:func:`read_password`) and are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from asn1crypto import algos, core, pem
from asn1crypto import pkcs12 as a_pkcs12
from asn1crypto import x509 as a_x509

from producer.errors import PermanentError
from services.crypto import byteorder, gost, libcrypto

__all__ = [
    "GostKeyParameters",
    "GostAlgorithmIdentifier",
    "GostPrivateKeyInfo",
    "GostPublicKeyInfo",
    "load_private_key",
    "load_pkcs8",
    "load_pfx",
    "is_pfx",
    "dump_pkcs8",
    "dump_pkcs8_pem",
    "read_password",
    "public_key_info",
    "public_key_from_info",
]


class GostKeyParameters(core.Sequence):
    """GostR3410-2012-PublicKeyParameters (RFC 9215 / R 1323565.1.023)."""

    _fields = [
        ("public_key_param_set", core.ObjectIdentifier),
        ("digest_param_set", core.ObjectIdentifier, {"optional": True}),
        ("encryption_param_set", core.ObjectIdentifier, {"optional": True}),
    ]


class GostAlgorithmIdentifier(core.Sequence):
    _fields = [
        ("algorithm", core.ObjectIdentifier),
        ("parameters", GostKeyParameters, {"optional": True}),
    ]


class GostPrivateKeyInfo(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("private_key_algorithm", GostAlgorithmIdentifier),
        ("private_key", core.OctetString),
        ("attributes", core.Any, {"implicit": 0, "optional": True}),
    ]


class GostPublicKeyInfo(core.Sequence):
    _fields = [
        ("algorithm", GostAlgorithmIdentifier),
        ("public_key", core.OctetBitString),
    ]


_KEY_ALGORITHMS = {gost.OID_GOST2012_256: 32, gost.OID_GOST2012_512: 64}


def _algorithm(curve: gost.Curve) -> GostAlgorithmIdentifier:
    params = {"public_key_param_set": gost.PREFERRED_OID.get(curve.name, curve.oid)}
    if curve.size == 32 and curve.name != "tc26-256-A":
        # the digest OID is written for the CryptoPro-era curves only (RFC 9215 §4.2.2)
        params["digest_param_set"] = gost.OID_STREEBOG256
    return GostAlgorithmIdentifier(
        {"algorithm": curve.key_algorithm_oid, "parameters": GostKeyParameters(params)}
    )


def public_key_info(key: gost.PublicKey) -> GostPublicKeyInfo:
    """SubjectPublicKeyInfo for a certificate: BIT STRING ⊃ OCTET STRING ⊃ X‖Y little-endian."""
    return GostPublicKeyInfo(
        {"algorithm": _algorithm(key.curve), "public_key": core.OctetString(key.to_bytes()).dump()}
    )


def public_key_from_info(spki_der: bytes) -> gost.PublicKey:
    """The GOST public key of a DER SubjectPublicKeyInfo; ValueError when it is not a GOST key."""
    info = GostPublicKeyInfo.load(spki_der)
    alg = info["algorithm"]
    if alg["algorithm"].dotted not in _KEY_ALGORITHMS:
        raise ValueError(f"not a GOST R 34.10-2012 key: {alg['algorithm'].dotted}")
    curve = gost.curve_by_oid(alg["parameters"]["public_key_param_set"].dotted)
    if curve.size != _KEY_ALGORITHMS[alg["algorithm"].dotted]:
        raise ValueError("key algorithm and parameter set sizes differ")
    return gost.PublicKey.from_bytes(curve, bytes(info["public_key"]))


def dump_pkcs8(key: gost.PrivateKey) -> bytes:
    """DER PKCS#8 exactly as the OpenSSL 3 GOST engine writes it (raw little-endian scalar)."""
    return GostPrivateKeyInfo(
        {
            "version": 0,
            "private_key_algorithm": _algorithm(key.curve),
            "private_key": byteorder.private_key_to_bytes(key.d, key.curve.size),
        }
    ).dump()


def dump_pkcs8_pem(key: gost.PrivateKey) -> bytes:
    return pem.armor("PRIVATE KEY", dump_pkcs8(key))


def load_pkcs8(data: bytes) -> gost.PrivateKey:
    """A GOST private key from PKCS#8 PEM or DER (unencrypted ``PRIVATE KEY``)."""
    if pem.detect(data):
        label, _, data = pem.unarmor(data)
        if label == "ENCRYPTED PRIVATE KEY":
            raise PermanentError(
                "the PKCS#8 key is encrypted; use a PFX or decrypt it first", reason="KEY_UNSUPPORTED"
            )
        if label != "PRIVATE KEY":
            raise PermanentError(f"expected a PRIVATE KEY PEM block, got {label}", reason="KEY_INVALID")
    try:
        info = GostPrivateKeyInfo.load(data)
        alg = info["private_key_algorithm"]
        oid = alg["algorithm"].dotted
        if oid not in _KEY_ALGORITHMS:
            raise PermanentError(f"not a GOST R 34.10-2012 private key ({oid})", reason="KEY_UNSUPPORTED")
        curve = gost.curve_by_oid(alg["parameters"]["public_key_param_set"].dotted)
        d = byteorder.private_key_from_bytes(info["private_key"].native)
        return gost.PrivateKey(curve, d)
    except PermanentError:
        raise
    except KeyError as exc:
        raise PermanentError(str(exc), reason="KEY_UNSUPPORTED") from None
    except (ValueError, TypeError) as exc:
        raise PermanentError(f"unreadable PKCS#8 private key: {exc}", reason="KEY_INVALID") from None


def load_private_key(source: bytes | str | os.PathLike, *, password: str | None = None) -> gost.PrivateKey:
    """A key from PKCS#8 (PEM/DER) or PFX bytes or a file path; PFX needs ``password``."""
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else source
    if not pem.detect(data) and is_pfx(data):
        return load_pfx(data, password=password)[0]
    return load_pkcs8(data)


def read_password(*, file: str | os.PathLike | None = None, env: str | None = None) -> str | None:
    """The password from a file (one trailing newline dropped) or an environment variable, or None."""
    if file is not None:
        text = Path(file).read_text(encoding="utf-8")
        return text[:-1] if text.endswith("\n") else text
    if env is not None:
        if env not in os.environ:
            raise PermanentError(f"environment variable {env} is not set", reason="KEY_PASSWORD_MISSING")
        return os.environ[env]
    return None


# ---------------------------------------------------------------------------------------------------
# PFX / PKCS#12

_OID_STREEBOG_HMAC_256 = "1.2.643.7.1.1.4.1"
_OID_STREEBOG_HMAC_512 = "1.2.643.7.1.1.4.2"
_DIGESTS = {  # OID → hashlib name
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.4": "sha224",
    gost.OID_STREEBOG256: "md_gost12_256",
    gost.OID_STREEBOG512: "md_gost12_512",
}
_PRFS = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
    _OID_STREEBOG_HMAC_256: "md_gost12_256",
    _OID_STREEBOG_HMAC_512: "md_gost12_512",
}
_CIPHERS = {  # OID → (OpenSSL name, key length, padded)
    "2.16.840.1.101.3.4.1.2": ("AES-128-CBC", 16, True),
    "2.16.840.1.101.3.4.1.22": ("AES-192-CBC", 24, True),
    "2.16.840.1.101.3.4.1.42": ("AES-256-CBC", 32, True),
    "1.2.840.113549.3.7": ("DES-EDE3-CBC", 24, True),
    "1.2.643.2.2.21": ("1.2.643.2.2.21", 32, False),  # GOST 28147-89, by OID for the engine,
}
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"


class _Gost89Params(core.Sequence):
    _fields = [("iv", core.OctetString), ("param_set", core.ObjectIdentifier)]


def is_pfx(data: bytes) -> bool:
    """True if ``data`` is a DER PFX (PKCS#12 v3) rather than a PKCS#8 key."""
    try:
        pfx = a_pkcs12.Pfx.load(data)
        return pfx["version"].native in (3, "v3") and pfx["auth_safe"]["content_type"].native == "data"
    except (ValueError, TypeError, KeyError):
        return False


def _hash(name: str):
    if name.startswith("md_gost12"):
        bits = int(name[-3:])
        return lambda data=b"": gost.Streebog(bits, data)
    return lambda data=b"": hashlib.new(name, data)


def _pbkdf2(digest: str, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    try:
        return hashlib.pbkdf2_hmac(digest, password, salt, iterations, length)
    except ValueError:  # Streebog without OpenSSL's provider: the slow, pure-Python way
        hf = _hash(digest)
        out, block = b"", 1
        while len(out) < length:
            u = hmac.new(password, salt + block.to_bytes(4, "big"), hf).digest()
            t = int.from_bytes(u, "big")
            for _ in range(iterations - 1):
                u = hmac.new(password, u, hf).digest()
                t ^= int.from_bytes(u, "big")
            out += t.to_bytes(len(u), "big")
            block += 1
        return out[:length]


def _pkcs12_kdf(digest: str, password: str, salt: bytes, iterations: int, key_id: int, n: int) -> bytes:
    """RFC 7292 appendix B.2 (MAC key, legacy PBE key and IV)."""
    h = hashlib.new(digest)
    v = h.block_size
    pw = (password.encode("utf-16-be") + b"\0\0") if password is not None else b""
    D = bytes([key_id]) * v

    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        size = v * -(-len(data) // v)
        return (data * (size // len(data) + 1))[:size]

    I = bytearray(fill(salt) + fill(pw))  # noqa: E741 (the RFC's name)
    out = b""
    while len(out) < n:
        A = D + bytes(I)
        for _ in range(iterations):
            A = hashlib.new(digest, A).digest()
        out += A
        B = int.from_bytes(fill(A)[:v], "big")
        for j in range(0, len(I), v):
            block = (int.from_bytes(I[j : j + v], "big") + B + 1) % (1 << (8 * v))
            I[j : j + v] = block.to_bytes(v, "big")
    return out[:n]


def _check_mac(pfx: a_pkcs12.Pfx, password: str, auth_safe: bytes) -> None:
    mac_data = pfx["mac_data"]
    if not mac_data.native:
        return
    alg = mac_data["mac"]["digest_algorithm"]["algorithm"].dotted
    digest = _DIGESTS.get(alg)
    if digest is None:
        raise PermanentError(f"unsupported PFX MAC algorithm {alg}", reason="KEY_UNSUPPORTED")
    salt = mac_data["mac_salt"].native
    iterations = mac_data["iterations"].native or 1
    if digest.startswith("md_gost12"):
        # TC 26 (R 50.1.112-2016), as OpenSSL does it: PBKDF2 with HMAC over the MAC digest itself,
        # 96 bytes, the last 32 are the MAC key; the password is not BMPString-encoded
        key = _pbkdf2(digest, password.encode("utf-8"), salt, iterations, 96)[64:]
    else:
        key = _pkcs12_kdf(digest, password, salt, iterations, 3, hashlib.new(digest).digest_size)
    expected = hmac.new(key, auth_safe, _hash(digest)).digest()
    if not hmac.compare_digest(expected, mac_data["mac"]["digest"].native):
        raise PermanentError("wrong PFX password (MAC mismatch)", reason="KEY_PASSWORD_INVALID")


def _decrypt(algorithm: core.Sequence, data: bytes, password: str) -> bytes:
    """Decrypt a PKCS#12 bag / EncryptedData with its (PBES2 or legacy PBE) algorithm identifier."""
    oid = algorithm["algorithm"].dotted
    params_der = algorithm["parameters"].dump()
    if oid == _OID_PBE_SHA1_3DES:
        p = algos.Pbes1Params.load(params_der)
        salt, it = p["salt"].native, p["iterations"].native
        key = _pkcs12_kdf("sha1", password, salt, it, 1, 24)
        iv = _pkcs12_kdf("sha1", password, salt, it, 2, 8)
        return _cipher("DES-EDE3-CBC", key, iv, data, padded=True)
    if oid != _OID_PBES2:
        raise PermanentError(f"unsupported PFX encryption {oid}", reason="KEY_UNSUPPORTED")
    p = algos.Pbes2Params.load(params_der)
    kdf = p["key_derivation_func"]
    if kdf["algorithm"].dotted != "1.2.840.113549.1.5.12":
        raise PermanentError("PBES2 without PBKDF2 is not supported", reason="KEY_UNSUPPORTED")
    kp = kdf["parameters"]
    prf_oid = kp["prf"]["algorithm"].dotted if kp["prf"].native else "1.2.840.113549.2.7"
    if prf_oid not in _PRFS:
        raise PermanentError(f"unsupported PBKDF2 PRF {prf_oid}", reason="KEY_UNSUPPORTED")
    scheme = p["encryption_scheme"]
    cipher_oid = scheme["algorithm"].dotted
    if cipher_oid not in _CIPHERS:
        raise PermanentError(f"unsupported PFX cipher {cipher_oid}", reason="KEY_UNSUPPORTED")
    name, key_len, padded = _CIPHERS[cipher_oid]
    key = _pbkdf2(
        _PRFS[prf_oid],
        password.encode("utf-8"),
        kp["salt"].native,
        kp["iteration_count"].native,
        kp["key_length"].native or key_len,
    )
    scheme_params = scheme["parameters"].dump()
    if cipher_oid == "1.2.643.2.2.21":
        gp = _Gost89Params.load(scheme_params)
        return _cipher(name, key, gp["iv"].native, data, padded=False, asn1_params=scheme_params)
    return _cipher(name, key, core.OctetString.load(scheme_params).native, data, padded=padded)


def _cipher(
    name: str, key: bytes, iv: bytes, data: bytes, *, padded: bool, asn1_params: bytes | None = None
) -> bytes:
    try:
        return libcrypto.cipher_decrypt(name, key, iv, data, padding=padded, asn1_params=asn1_params)
    except libcrypto.CipherUnavailable as exc:
        raise PermanentError(f"cannot decrypt the PFX: {exc}", reason="KEY_UNSUPPORTED") from None
    except ValueError:
        # padding failure: with no MAC to tell us first, a wrong password ends up here
        raise PermanentError(
            "wrong PFX password (decryption failed)", reason="KEY_PASSWORD_INVALID"
        ) from None


def load_pfx(data: bytes, *, password: str | None) -> tuple[gost.PrivateKey, list[a_x509.Certificate]]:
    """The (first) GOST private key of a PFX and its certificates (asn1crypto objects, in file order)."""
    if password is None:
        raise PermanentError(
            "the PFX needs a password (--password-file or --password-env)", reason="KEY_PASSWORD_MISSING"
        )
    try:
        pfx = a_pkcs12.Pfx.load(data)
        auth_safe = pfx["auth_safe"]["content"].native
    except (ValueError, TypeError) as exc:
        raise PermanentError(f"unreadable PFX: {exc}", reason="KEY_INVALID") from None
    _check_mac(pfx, password, auth_safe)
    key: gost.PrivateKey | None = None
    certs: list[a_x509.Certificate] = []
    try:
        for content_info in a_pkcs12.AuthenticatedSafe.load(auth_safe):
            kind = content_info["content_type"].native
            if kind == "data":
                safe = content_info["content"].native
            elif kind == "encrypted_data":
                eci = content_info["content"]["encrypted_content_info"]
                safe = _decrypt(
                    eci["content_encryption_algorithm"], eci["encrypted_content"].native, password
                )
            else:
                continue
            for bag in a_pkcs12.SafeContents.load(safe):
                bag_id = bag["bag_id"].native
                value = bag["bag_value"]
                if bag_id == "pkcs8_shrouded_key_bag" and key is None:
                    alg = value["encryption_algorithm"]
                    key = load_pkcs8(_decrypt(alg, value["encrypted_data"].native, password))
                elif bag_id == "key_bag" and key is None:
                    key = load_pkcs8(value.dump())
                elif bag_id == "cert_bag" and value["cert_id"].native == "x509":
                    # .native would decode the GOST public key, which asn1crypto cannot: take the bytes
                    certs.append(a_x509.Certificate.load(value["cert_value"].contents))
    except PermanentError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise PermanentError(f"unreadable PFX content: {exc}", reason="KEY_INVALID") from None
    if key is None:
        raise PermanentError("the PFX holds no private key", reason="KEY_INVALID")
    return key, certs
