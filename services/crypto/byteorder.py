"""Every GOST byte-order conversion, in one place.

GOST structures mix byte orders, and each mix-up produces signatures that look fine and verify nowhere.
The rules (all confirmed against OpenSSL's GOST engine, ``docs/gost.md#byte-order``):

* **digest → e**: the Streebog digest bytes (as in messageDigest, XML DigestValue, ``openssl dgst``) are
  read **little-endian** to get the integer ``e`` of GOST R 34.10-2012;
* **signature**: the CMS / XMLDSig value is ``s ‖ r``, each **big-endian**, each ``size`` bytes;
* **public key**: SubjectPublicKeyInfo's BIT STRING holds an OCTET STRING of ``X ‖ Y``, each
  **little-endian**;
* **private key**: PKCS#8 ``privateKey`` holds the scalar ``d`` as raw **little-endian** bytes (the
  OpenSSL 3 engine), an OCTET STRING of them (older engine) or an INTEGER (some exporters).

``size`` is 32 for 256-bit curves and 64 for 512-bit ones.
"""

from __future__ import annotations

__all__ = [
    "digest_to_e",
    "signature_to_bytes",
    "signature_from_bytes",
    "public_key_to_bytes",
    "public_key_from_bytes",
    "private_key_to_bytes",
    "private_key_from_bytes",
    "der_octet_string",
]


def digest_to_e(digest: bytes) -> int:
    """The integer ``e`` of 34.10 from a Streebog digest (before reduction mod q)."""
    return int.from_bytes(digest, "little")


def signature_to_bytes(r: int, s: int, size: int) -> bytes:
    """``s ‖ r``, each big-endian: the CMS and XMLDSig SignatureValue."""
    return s.to_bytes(size, "big") + r.to_bytes(size, "big")


def signature_from_bytes(signature: bytes) -> tuple[int, int]:
    """``(r, s)`` from an ``s ‖ r`` value; raises ValueError on an odd or empty length."""
    if not signature or len(signature) % 2:
        raise ValueError(f"GOST signature must be 2×size bytes, got {len(signature)}")
    half = len(signature) // 2
    return int.from_bytes(signature[half:], "big"), int.from_bytes(signature[:half], "big")


def public_key_to_bytes(x: int, y: int, size: int) -> bytes:
    """``X ‖ Y``, each little-endian: the content of the OCTET STRING inside the SPKI BIT STRING."""
    return x.to_bytes(size, "little") + y.to_bytes(size, "little")


def public_key_from_bytes(data: bytes) -> tuple[int, int]:
    """``(x, y)`` from the 64/128 bytes of ``X ‖ Y`` (little-endian each).

    Accepts the raw bytes or the DER OCTET STRING wrapping them (what the BIT STRING holds).
    """
    if data[:1] == b"\x04" and len(data) in (66, 67, 131, 132):
        data = der_octet_string(data)
    if len(data) not in (64, 128):
        raise ValueError(f"GOST public key must be 64 or 128 bytes, got {len(data)}")
    half = len(data) // 2
    return int.from_bytes(data[:half], "little"), int.from_bytes(data[half:], "little")


def private_key_to_bytes(d: int, size: int) -> bytes:
    """The raw little-endian scalar, as the OpenSSL 3 GOST engine writes it into PKCS#8."""
    return d.to_bytes(size, "little")


def private_key_from_bytes(data: bytes) -> int:
    """The scalar ``d`` from the content of PKCS#8 ``privateKey``.

    Three encodings exist in the wild: raw 32/64 little-endian bytes (OpenSSL 3 engine), a DER OCTET
    STRING of those bytes (older engine builds), and a DER INTEGER (big-endian, as every INTEGER).
    CryptoPro's masked container format is not one of them and is rejected.
    """
    if len(data) in (32, 64):
        return int.from_bytes(data, "little")
    if data[:1] == b"\x04":
        return int.from_bytes(der_octet_string(data), "little")
    if data[:1] == b"\x02":
        length, start = _der_length(data, 1)
        if start + length != len(data):
            raise ValueError("trailing bytes after the private key INTEGER")
        return int.from_bytes(data[start:], "big", signed=False)
    raise ValueError(f"unsupported GOST private key encoding ({len(data)} bytes)")


def der_octet_string(data: bytes) -> bytes:
    """The content of one DER OCTET STRING that must span all of ``data``."""
    if data[:1] != b"\x04":
        raise ValueError("not an OCTET STRING")
    length, start = _der_length(data, 1)
    if start + length != len(data):
        raise ValueError("OCTET STRING length does not match")
    return data[start:]


def _der_length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if not 1 <= n <= 4 or pos + 1 + n > len(data):
        raise ValueError("bad DER length")
    return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n
