"""GOST R 34.10-2012 signatures and GOST R 34.11-2012 (Streebog) digests.

Three implementations of 34.10, same results:

* **OpenSSL's gost engine** (used whenever it loads, ``services.crypto.native``): ``sign_digest`` and
  ``verify_digest`` go there first, 3–5× faster than the fast path below;
* the **fast path** (when OpenSSL cannot: ``sign_digest_in_python``, ``verify_digest_in_python``): pure-Python elliptic-curve arithmetic in Jacobian coordinates.
  Signing is one fixed-base multiplication ``k·P`` read from a per-curve precomputed table (8-bit comb:
  32 mixed additions, no doublings, one inversion), so a CAdES signature costs well under a millisecond.
  Verification uses the same table for ``z1·P``, and for ``z2·Q`` a width-5 NAF the first time a public key is
  seen; from its second verification on, a 4-bit comb table of that key (built once, ~10 ms, ~0.1 MB, kept for
  the 512 keys used last), which makes a verification about three times cheaper. A process verifies the same
  few keys again and again (the ИПС key in the callback service, the ИС and doctors' keys in the emulator).
* the **reference path**: ``gostcrypto`` (independent, ~30 signatures/s), exposed through
  :func:`reference_sign` / :func:`reference_verify` and used by the tests to cross-check the fast path.

Neither is constant-time (CPython integers are not): acceptable for a server that signs with its own
key in its own process, not for a device an attacker can time. A certified provider (CryptoPro through
DSS or PKCS#11, see ``services.crypto.signer``) is the answer where that matters.

Streebog: ``hashlib.new("md_gost12_256")`` once the OpenSSL ``gostprov`` provider is loaded into the
process (``services.crypto.libcrypto``), else gostcrypto's pure-Python Streebog (about 500× slower).

Parameter sets (R 1323565.1.024-2019 names; CryptoPro-A, -XchA = tc26 256 B; CryptoPro-B = C;
CryptoPro-C, -XchB = D) are looked up by OID with :func:`curve_by_oid`.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from gostcrypto.gostsignature.gost_34_10_2012 import CURVES_R_1323565_1_024_2019 as _GC_CURVES

from services.crypto import byteorder, libcrypto

__all__ = [
    "Curve",
    "CURVES",
    "curve_by_oid",
    "curve_by_name",
    "PrivateKey",
    "PublicKey",
    "streebog256",
    "streebog512",
    "streebog",
    "Streebog",
    "FAST_STREEBOG",
    "reference_public_key",
    "reference_sign",
    "reference_verify",
    "OID_GOST2012_256",
    "OID_GOST2012_512",
    "OID_STREEBOG256",
    "OID_STREEBOG512",
    "OID_SIGN_WITH_STREEBOG256",
    "OID_SIGN_WITH_STREEBOG512",
]

# algorithm OIDs (TC 26)
OID_GOST2012_256 = "1.2.643.7.1.1.1.1"  # public key algorithm, 256-bit
OID_GOST2012_512 = "1.2.643.7.1.1.1.2"
OID_STREEBOG256 = "1.2.643.7.1.1.2.2"
OID_STREEBOG512 = "1.2.643.7.1.1.2.3"
OID_SIGN_WITH_STREEBOG256 = "1.2.643.7.1.1.3.2"  # signature-with-digest, 256-bit
OID_SIGN_WITH_STREEBOG512 = "1.2.643.7.1.1.3.3"


@dataclass(frozen=True, eq=False)
class Curve:
    """A short Weierstrass curve y² = x³ + ax + b over GF(p) with base point (x, y) of prime order q."""

    name: str
    oid: str
    p: int
    a: int
    b: int
    q: int
    x: int
    y: int
    aliases: tuple[str, ...] = ()
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", 64 if self.p.bit_length() > 256 else 32)

    @property
    def bits(self) -> int:
        return self.size * 8

    @property
    def key_algorithm_oid(self) -> str:
        return OID_GOST2012_512 if self.size == 64 else OID_GOST2012_256

    @property
    def digest_oid(self) -> str:
        return OID_STREEBOG512 if self.size == 64 else OID_STREEBOG256

    @property
    def signature_oid(self) -> str:
        return OID_SIGN_WITH_STREEBOG512 if self.size == 64 else OID_SIGN_WITH_STREEBOG256

    def contains(self, x: int, y: int) -> bool:
        p = self.p
        return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x + self.a * x + self.b)) % p == 0

    def __repr__(self) -> str:
        return f"Curve({self.name})"


def _curve(name: str, gc_name: str, oid: str, *aliases: str) -> Curve:
    c = _GC_CURVES[gc_name]
    return Curve(name, oid, c["p"], c["a"] % c["p"], c["b"] % c["p"], c["q"], c["x"], c["y"], aliases)


#: every supported curve by its tc26 name
CURVES: dict[str, Curve] = {
    c.name: c
    for c in (
        _curve("tc26-256-A", "id-tc26-gost-3410-2012-256-paramSetA", "1.2.643.7.1.2.1.1.1", "TCA"),
        _curve(
            "tc26-256-B",
            "id-tc26-gost-3410-2012-256-paramSetB",
            "1.2.643.7.1.2.1.1.2",
            "TCB",
            "A",
            "CryptoPro-A",
            "CryptoPro-XchA",
        ),
        _curve(
            "tc26-256-C",
            "id-tc26-gost-3410-2012-256-paramSetC",
            "1.2.643.7.1.2.1.1.3",
            "TCC",
            "B",
            "CryptoPro-B",
        ),
        _curve(
            "tc26-256-D",
            "id-tc26-gost-3410-2012-256-paramSetD",
            "1.2.643.7.1.2.1.1.4",
            "TCD",
            "C",
            "CryptoPro-C",
            "CryptoPro-XchB",
        ),
        _curve("tc26-512-A", "id-tc26-gost-3410-12-512-paramSetA", "1.2.643.7.1.2.1.2.1"),
        _curve("tc26-512-B", "id-tc26-gost-3410-12-512-paramSetB", "1.2.643.7.1.2.1.2.2"),
        _curve("tc26-512-C", "id-tc26-gost-3410-2012-512-paramSetC", "1.2.643.7.1.2.1.2.3"),
    )
}

_BY_OID: dict[str, Curve] = {c.oid: c for c in CURVES.values()}
_BY_OID.update(
    {
        "1.2.643.2.2.35.1": CURVES["tc26-256-B"],  # CryptoPro-A
        "1.2.643.2.2.35.2": CURVES["tc26-256-C"],  # CryptoPro-B
        "1.2.643.2.2.35.3": CURVES["tc26-256-D"],  # CryptoPro-C
        "1.2.643.2.2.36.0": CURVES["tc26-256-B"],  # CryptoPro-XchA
        "1.2.643.2.2.36.1": CURVES["tc26-256-D"],  # CryptoPro-XchB
    }
)
#: the OID a certificate / key names for each curve when *we* write it: the CryptoPro OIDs are what
#: deployed Russian software expects for the 256-bit CryptoPro curves
PREFERRED_OID: dict[str, str] = {
    "tc26-256-B": "1.2.643.2.2.35.1",
    "tc26-256-C": "1.2.643.2.2.35.2",
    "tc26-256-D": "1.2.643.2.2.35.3",
}


def curve_by_oid(oid: str) -> Curve:
    """The curve named by a parameter-set OID; KeyError for an unknown one."""
    try:
        return _BY_OID[oid]
    except KeyError:
        raise KeyError(f"unknown GOST R 34.10-2012 parameter set {oid}") from None


def curve_by_name(name: str) -> Curve:
    """The curve for a tc26 name, an openssl ``paramset:`` value (A, B, C, TCA…) or a CryptoPro name."""
    if name in CURVES:
        return CURVES[name]
    for c in CURVES.values():
        if name in c.aliases:
            return c
    if name in _BY_OID:
        return _BY_OID[name]
    raise KeyError(f"unknown GOST R 34.10-2012 parameter set {name!r}")


# ---------------------------------------------------------------------------------------------------
# Jacobian arithmetic: a point is (X, Y, Z) with x = X/Z², y = Y/Z³; Z == 0 is the point at infinity.

_INF = (1, 1, 0)


def _double(P, a, p):
    X1, Y1, Z1 = P
    if Z1 == 0 or Y1 == 0:
        return _INF
    XX = X1 * X1 % p
    YY = Y1 * Y1 % p
    YYYY = YY * YY % p
    ZZ = Z1 * Z1 % p
    S = 4 * X1 * YY % p
    M = (3 * XX + a * ZZ * ZZ) % p
    X3 = (M * M - 2 * S) % p
    return X3, (M * (S - X3) - 8 * YYYY) % p, 2 * Y1 * Z1 % p


def _add_affine(P, x2, y2, a, p):
    """P (Jacobian) + (x2, y2) (affine)."""
    X1, Y1, Z1 = P
    if Z1 == 0:
        return x2, y2, 1
    Z1Z1 = Z1 * Z1 % p
    H = (x2 * Z1Z1 - X1) % p
    R = (y2 * Z1 * Z1Z1 - Y1) % p
    if H == 0:
        return _double(P, a, p) if R == 0 else _INF
    HH = H * H % p
    HHH = H * HH % p
    V = X1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - Y1 * HHH) % p, Z1 * H % p


def _add(P, Q, a, p):
    """P + Q, both Jacobian."""
    X1, Y1, Z1 = P
    X2, Y2, Z2 = Q
    if Z1 == 0:
        return Q
    if Z2 == 0:
        return P
    Z1Z1 = Z1 * Z1 % p
    Z2Z2 = Z2 * Z2 % p
    U1 = X1 * Z2Z2 % p
    U2 = X2 * Z1Z1 % p
    S1 = Y1 * Z2 * Z2Z2 % p
    S2 = Y2 * Z1 * Z1Z1 % p
    H = (U2 - U1) % p
    R = (S2 - S1) % p
    if H == 0:
        return _double(P, a, p) if R == 0 else _INF
    HH = H * H % p
    HHH = H * HH % p
    V = U1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - S1 * HHH) % p, Z1 * Z2 * H % p


def _to_affine_many(points, p):
    """Jacobian → affine for many points with one inversion (Montgomery's trick); no infinities."""
    acc = 1
    prefix = []
    for _, _, Z in points:
        prefix.append(acc)
        acc = acc * Z % p
    inv = pow(acc, -1, p)
    out = [None] * len(points)
    for i in range(len(points) - 1, -1, -1):
        X, Y, Z = points[i]
        zinv = inv * prefix[i] % p
        inv = inv * Z % p
        z2 = zinv * zinv % p
        out[i] = (X * z2 % p, Y * z2 * zinv % p)
    return out


def _x_affine(P, p) -> int | None:
    X, _, Z = P
    if Z == 0:
        return None
    zinv = pow(Z, -1, p)
    return X * zinv * zinv % p


_COMB_BITS = 8


@functools.cache
def _comb_table(curve: Curve) -> list[list[tuple[int, int]]]:
    """table[i][j-1] = j · 2^(8i) · P, affine, for every 8-bit window i of a scalar < q.

    Built once per curve and process (~0.1 s for 256 bits, ~0.4 s for 512 bits).
    """
    a, p = curve.a, curve.p
    windows = -(-curve.q.bit_length() // _COMB_BITS)
    table = []
    base = (curve.x, curve.y, 1)
    for _ in range(windows):
        row = [base]
        for _ in range((1 << _COMB_BITS) - 2):
            row.append(_add(row[-1], base, a, p))
        table.append(_to_affine_many(row, p))
        nxt = _add(row[-1], base, a, p)  # 2^8 · base
        base = (*_to_affine_many([nxt], p)[0], 1)
    return table


def _mul_base(curve: Curve, k: int):
    """k · P (Jacobian) from the comb table: one mixed addition per non-zero byte of k."""
    a, p = curve.a, curve.p
    table = _comb_table(curve)
    acc = _INF
    i = 0
    while k:
        digit = k & 0xFF
        if digit:
            x2, y2 = table[i][digit - 1]
            acc = _add_affine(acc, x2, y2, a, p)
        k >>= 8
        i += 1
    return acc


def _wnaf(k: int, w: int = 5) -> list[int]:
    digits = []
    half, full = 1 << (w - 1), 1 << w
    while k:
        if k & 1:
            d = k & (full - 1)
            if d >= half:
                d -= full
            k -= d
        else:
            d = 0
        digits.append(d)
        k >>= 1
    return digits


@functools.lru_cache(maxsize=256)
def _odd_multiples(curve: Curve, x: int, y: int) -> list[tuple[int, int]]:
    """Q, 3Q, 5Q … 15Q (affine): the wNAF table of a public key, cached for repeat verifications."""
    a, p = curve.a, curve.p
    Q = (x, y, 1)
    Q2 = _double(Q, a, p)
    pts = [Q]
    for _ in range(7):
        pts.append(_add(pts[-1], Q2, a, p))
    return _to_affine_many(pts, p)


_KEY_COMB_BITS = 4
#: public keys seen once (their second verification builds a table); bounded, forgotten wholesale when full
_seen_keys: set[tuple[str, int, int]] = set()


@functools.lru_cache(maxsize=512)
def _key_table(curve: Curve, x: int, y: int) -> list[list[tuple[int, int]]]:
    """table[i][j-1] = j · 2^(4i) · Q, affine: a public key's comb, for repeat verifications."""
    a, p = curve.a, curve.p
    table = []
    base = (x, y, 1)
    for _ in range(-(-curve.q.bit_length() // _KEY_COMB_BITS)):
        row = [base]
        for _ in range((1 << _KEY_COMB_BITS) - 2):
            row.append(_add(row[-1], base, a, p))
        table.append(_to_affine_many(row, p))
        base = (*_to_affine_many([_add(row[-1], base, a, p)], p)[0], 1)  # 2^4 · base
    return table


def _mul_key(curve: Curve, k: int, x: int, y: int):
    """k · Q for a public key Q: from its comb table once the key has been seen before, else by wNAF."""
    seen = (curve.name, x, y)
    if seen not in _seen_keys:
        if len(_seen_keys) >= 4096:
            _seen_keys.clear()
        _seen_keys.add(seen)
        return _mul_point(curve, k, x, y)
    a, p, table = curve.a, curve.p, _key_table(curve, x, y)
    acc, i, mask = _INF, 0, (1 << _KEY_COMB_BITS) - 1
    while k:
        digit = k & mask
        if digit:
            x2, y2 = table[i][digit - 1]
            acc = _add_affine(acc, x2, y2, a, p)
        k >>= _KEY_COMB_BITS
        i += 1
    return acc


def _mul_point(curve: Curve, k: int, x: int, y: int):
    a, p = curve.a, curve.p
    odd = _odd_multiples(curve, x, y)
    acc = _INF
    for d in reversed(_wnaf(k)):
        acc = _double(acc, a, p)
        if d > 0:
            px, py = odd[d >> 1]
            acc = _add_affine(acc, px, py, a, p)
        elif d < 0:
            px, py = odd[(-d) >> 1]
            acc = _add_affine(acc, px, p - py, a, p)
    return acc


# ---------------------------------------------------------------------------------------------------


class Accelerator(Protocol):
    """A faster implementation of the two operations on keys: ``None`` from either means "not here, take the
    Python path", so the verdict never depends on whether it was available."""

    def sign_digest(self, key: PrivateKey, digest: bytes) -> bytes | None: ...

    def verify_digest(self, key: PublicKey, digest: bytes, signature: bytes) -> bool | None: ...


class _NoAccelerator:
    def sign_digest(self, key: PrivateKey, digest: bytes) -> bytes | None:
        return None

    def verify_digest(self, key: PublicKey, digest: bytes, signature: bytes) -> bool | None:
        return None


#: the implementation ``sign_digest``/``verify_digest`` try first; ``services.crypto`` installs OpenSSL's
#: (``services.crypto.native``) when the package is imported, and this module never imports it
_accelerator: Accelerator = _NoAccelerator()


def use_accelerator(accelerator: Accelerator | None) -> None:
    """Install ``accelerator`` (None: pure Python only)."""
    global _accelerator
    _accelerator = accelerator or _NoAccelerator()


class PublicKey:
    """A GOST R 34.10-2012 public key: a point (x, y) on ``curve``."""

    __slots__ = ("curve", "x", "y", "__weakref__")  # weak: native keeps its OpenSSL handle per key

    def __init__(self, curve: Curve, x: int, y: int) -> None:
        if not curve.contains(x, y):
            raise ValueError(f"the public key is not a point of {curve.name}")
        self.curve, self.x, self.y = curve, x, y

    def to_bytes(self) -> bytes:
        """``X ‖ Y`` little-endian: the content of the SPKI OCTET STRING."""
        return byteorder.public_key_to_bytes(self.x, self.y, self.curve.size)

    @classmethod
    def from_bytes(cls, curve: Curve, data: bytes) -> PublicKey:
        x, y = byteorder.public_key_from_bytes(data)
        return cls(curve, x, y)

    def verify_digest(self, digest: bytes, signature: bytes) -> bool:
        """True if ``signature`` (``s ‖ r``) is a valid signature of ``digest`` under this key (in OpenSSL's gost
        engine when it is there, ``services.crypto.native``; else :meth:`verify_digest_in_python`)."""
        if len(signature) != 2 * self.curve.size or len(digest) != self.curve.size:
            return False
        verdict = _accelerator.verify_digest(self, digest, signature)
        return self.verify_digest_in_python(digest, signature) if verdict is None else verdict

    def verify_digest_in_python(self, digest: bytes, signature: bytes) -> bool:
        """:meth:`verify_digest` by the fast path of this module (comb tables, wNAF)."""
        c = self.curve
        if len(signature) != 2 * c.size or len(digest) != c.size:
            return False
        r, s = byteorder.signature_from_bytes(signature)
        q = c.q
        if not (0 < r < q and 0 < s < q):
            return False
        e = byteorder.digest_to_e(digest) % q or 1
        v = pow(e, -1, q)
        z1 = s * v % q
        z2 = (q - r) * v % q
        C = _add(_mul_base(c, z1), _mul_key(c, z2, self.x, self.y), c.a, c.p)
        x = _x_affine(C, c.p)
        return x is not None and x % q == r

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PublicKey)
            and self.curve is other.curve
            and self.x == other.x
            and self.y == other.y
        )

    def __hash__(self) -> int:
        return hash((self.curve.name, self.x, self.y))

    def __repr__(self) -> str:
        return f"PublicKey({self.curve.name}, x={self.x:#x})"


class PrivateKey:
    """A GOST R 34.10-2012 private key: the scalar ``d`` (1 ≤ d < q) on ``curve``."""

    __slots__ = ("curve", "_d", "_public", "__weakref__")

    def __init__(self, curve: Curve, d: int) -> None:
        if not 0 < d < curve.q:
            raise ValueError("the private key is out of range for its curve")
        self.curve = curve
        self._d = d
        self._public: PublicKey | None = None

    @classmethod
    def generate(cls, curve: Curve) -> PrivateKey:
        return cls(curve, secrets.randbelow(curve.q - 1) + 1)

    @property
    def d(self) -> int:
        return self._d

    def public_key(self) -> PublicKey:
        if self._public is None:
            ((px, py),) = _to_affine_many([_mul_base(self.curve, self._d)], self.curve.p)
            self._public = PublicKey(self.curve, px, py)
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a Streebog digest of the curve's size; returns ``s ‖ r`` (the CMS/XMLDSig order). In OpenSSL's
        gost engine when it is there (``services.crypto.native``), else :meth:`sign_digest_in_python`."""
        if len(digest) != self.curve.size:
            raise ValueError(f"{self.curve.name} signs {self.curve.size}-byte digests, got {len(digest)}")
        return _accelerator.sign_digest(self, digest) or self.sign_digest_in_python(digest)

    def sign_digest_in_python(self, digest: bytes) -> bytes:
        """:meth:`sign_digest` by the fast path of this module (the base point's comb table)."""
        c = self.curve
        if len(digest) != c.size:
            raise ValueError(f"{c.name} signs {c.size}-byte digests, got {len(digest)}")
        q = c.q
        e = byteorder.digest_to_e(digest) % q or 1
        while True:
            k = secrets.randbelow(q - 1) + 1
            x = _x_affine(_mul_base(c, k), c.p)
            r = x % q if x is not None else 0
            if r == 0:
                continue
            s = (r * self._d + k * e) % q
            if s:
                return byteorder.signature_to_bytes(r, s, c.size)

    def __repr__(self) -> str:  # never the scalar
        return f"PrivateKey({self.curve.name})"


# ---------------------------------------------------------------------------------------------------
# Reference implementation (gostcrypto): independent of the code above, for cross-checks and benchmarks


def _gc(curve: Curve):
    from gostcrypto import gostsignature

    params = {
        "p": curve.p,
        "a": curve.a,
        "b": curve.b,
        "m": curve.q,
        "q": curve.q,
        "x": curve.x,
        "y": curve.y,
    }
    return gostsignature.new(gostsignature.MODE_512 if curve.size == 64 else gostsignature.MODE_256, params)


def reference_sign(key: PrivateKey, digest: bytes) -> bytes:
    """Sign with gostcrypto (slow); same wire format as :meth:`PrivateKey.sign_digest`."""
    c = key.curve
    rs = bytes(_gc(c).sign(bytearray(key.d.to_bytes(c.size, "big")), bytearray(digest[::-1])))
    r, s = int.from_bytes(rs[: c.size], "big"), int.from_bytes(rs[c.size :], "big")
    return byteorder.signature_to_bytes(r, s, c.size)


def reference_public_key(key: PrivateKey) -> PublicKey:
    """The public key of ``key`` as gostcrypto computes it (slow)."""
    c = key.curve
    raw = bytes(_gc(c).public_key_generate(bytearray(key.d.to_bytes(c.size, "big"))))
    return PublicKey(c, int.from_bytes(raw[: c.size], "big"), int.from_bytes(raw[c.size :], "big"))


def reference_verify(key: PublicKey, digest: bytes, signature: bytes) -> bool:
    """Verify with gostcrypto (slow)."""
    c = key.curve
    r, s = byteorder.signature_from_bytes(signature)
    pub = key.x.to_bytes(c.size, "big") + key.y.to_bytes(c.size, "big")
    rs = r.to_bytes(c.size, "big") + s.to_bytes(c.size, "big")
    return bool(_gc(c).verify(bytearray(pub), bytearray(digest[::-1]), bytearray(rs)))


# ---------------------------------------------------------------------------------------------------
# Streebog

#: True when Streebog runs in OpenSSL (gostprov) rather than in pure Python
FAST_STREEBOG: bool = libcrypto.load_gost_provider()


class Streebog:
    """A hashlib-like Streebog object (``update``/``digest``/``copy``) over OpenSSL or gostcrypto.

    ``fallback=True`` forces gostcrypto (tests and benchmarks of the slow path).
    """

    def __init__(self, bits: int = 256, data: bytes = b"", *, fallback: bool = False) -> None:
        if bits not in (256, 512):
            raise ValueError("Streebog is 256 or 512 bits")
        self.digest_size = bits // 8
        self.block_size = 64
        self.name = f"md_gost12_{bits}"
        self._bits = bits
        # gostcrypto's update() gives wrong digests for chunks that are not 64-byte aligned (measured),
        # so the fallback buffers everything and hashes once
        self._h = hashlib.new(self.name) if FAST_STREEBOG and not fallback else bytearray()
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        if isinstance(self._h, bytearray):
            self._h += data
        else:
            self._h.update(data)

    def digest(self) -> bytes:
        if isinstance(self._h, bytearray):
            from gostcrypto import gosthash

            return bytes(gosthash.new(f"streebog{self._bits}", data=bytes(self._h)).digest())
        return self._h.digest()

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> Streebog:
        other = Streebog.__new__(Streebog)
        other.digest_size, other.block_size, other.name = self.digest_size, self.block_size, self.name
        other._bits = self._bits
        other._h = self._h.copy()
        return other


def streebog256(data: bytes) -> bytes:
    """GOST R 34.11-2012 256-bit digest, bytes as ``openssl dgst -md_gost12_256`` prints them."""
    if FAST_STREEBOG:
        return hashlib.new("md_gost12_256", data).digest()
    return Streebog(256, data).digest()


def streebog512(data: bytes) -> bytes:
    """GOST R 34.11-2012 512-bit digest."""
    if FAST_STREEBOG:
        return hashlib.new("md_gost12_512", data).digest()
    return Streebog(512, data).digest()


def streebog(data: bytes, bits: int) -> bytes:
    return streebog512(data) if bits == 512 else streebog256(data)
