"""Private keys: PKCS#8 as the OpenSSL GOST engine writes it, PFX with standard and GOST encryption."""

from __future__ import annotations

import pytest

from producer.errors import PermanentError
from services.crypto import gost, keys
from tests import openssl_gost as ossl


def _openssl_public(tmp_path, key_pem) -> gost.PublicKey:
    der = ossl.run("pkey", "-in", key_pem, "-pubout", "-outform", "DER").stdout
    return keys.public_key_from_info(der)


@pytest.mark.parametrize(
    "paramset,curve", [("A", "tc26-256-B"), ("TCA", "tc26-256-A"), ("TCB", "tc26-256-B")]
)
def test_pkcs8_from_openssl(tmp_path, paramset, curve):
    """An engine-written PKCS#8 PEM (and its DER) loads on the right curve with openssl's public key."""
    key_pem = ossl.genkey(tmp_path / "k.pem", paramset)
    key = keys.load_pkcs8(key_pem.read_bytes())
    assert key.curve is gost.CURVES[curve]
    assert key.public_key() == _openssl_public(tmp_path, key_pem)
    der = ossl.run("pkey", "-in", key_pem, "-outform", "DER").stdout
    assert keys.load_private_key(der).d == key.d


@pytest.mark.parametrize("paramset", ossl.PARAMSETS)
def test_our_pkcs8_is_read_by_openssl(tmp_path, paramset):
    """The PKCS#8 PEM we write is read by openssl, which derives the same public key."""
    key = gost.PrivateKey.generate(gost.curve_by_name(paramset))
    path = tmp_path / "ours.pem"
    path.write_bytes(keys.dump_pkcs8_pem(key))
    assert _openssl_public(tmp_path, path) == key.public_key()


def test_integer_form_private_key():
    """A PKCS#8 whose privateKey holds a DER INTEGER (some exporters) loads too."""
    key = gost.PrivateKey.generate(gost.CURVES["tc26-256-B"])
    info = keys.GostPrivateKeyInfo.load(keys.dump_pkcs8(key))
    d = key.d.to_bytes(33, "big").lstrip(b"\0")
    if d[0] & 0x80:
        d = b"\0" + d
    info["private_key"] = b"\x02" + bytes([len(d)]) + d
    assert keys.load_pkcs8(info.dump(force=True)).d == key.d


def test_not_a_gost_key(tmp_path):
    """An RSA key is refused with KEY_UNSUPPORTED, garbage with KEY_INVALID."""
    rsa = ossl.run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024").stdout
    with pytest.raises(PermanentError) as exc:
        keys.load_pkcs8(rsa)
    assert exc.value.reason == "KEY_UNSUPPORTED"
    with pytest.raises(PermanentError) as exc:
        keys.load_pkcs8(b"\x30\x03\x02\x01\x00")
    assert exc.value.reason == "KEY_INVALID"


PFX_VARIANTS = {
    "default": [],  # OpenSSL 3: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC, SHA-256 MAC
    "gost": ["-keypbe", "gost89", "-certpbe", "gost89", "-macalg", "md_gost12_256"],
    "legacy-3des": ["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"],
}


@pytest.fixture(scope="module")
def openssl_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pfx")
    return ossl.keypair(tmp, "A")


@pytest.mark.parametrize("variant", sorted(PFX_VARIANTS))
def test_pfx_loads(tmp_path, openssl_pair, variant):
    """`openssl pkcs12 -export` output loads with its password: key, and the certificate it holds."""
    key_pem, cert_pem = openssl_pair
    pfx = tmp_path / "k.pfx"
    ossl.run(
        "pkcs12",
        "-export",
        "-inkey",
        key_pem,
        "-in",
        cert_pem,
        "-passout",
        "pass:пароль 1",
        *PFX_VARIANTS[variant],
        "-out",
        pfx,
    )
    key, certs = keys.load_pfx(pfx.read_bytes(), password="пароль 1")
    assert key.d == keys.load_pkcs8(key_pem.read_bytes()).d
    assert len(certs) == 1
    assert keys.load_private_key(pfx, password="пароль 1").d == key.d


@pytest.mark.parametrize("variant", sorted(PFX_VARIANTS))
def test_pfx_wrong_password(tmp_path, openssl_pair, variant):
    """A wrong PFX password raises KEY_PASSWORD_INVALID, and no password KEY_PASSWORD_MISSING."""
    key_pem, cert_pem = openssl_pair
    pfx = tmp_path / "k.pfx"
    ossl.run(
        "pkcs12",
        "-export",
        "-inkey",
        key_pem,
        "-in",
        cert_pem,
        "-passout",
        "pass:right",
        *PFX_VARIANTS[variant],
        "-out",
        pfx,
    )
    with pytest.raises(PermanentError) as exc:
        keys.load_pfx(pfx.read_bytes(), password="Tr0ub4dor")
    assert exc.value.reason == "KEY_PASSWORD_INVALID"
    assert "Tr0ub4dor" not in str(exc.value) and "Tr0ub4dor" not in repr(exc.value.details)
    with pytest.raises(PermanentError) as exc:
        keys.load_pfx(pfx.read_bytes(), password=None)
    assert exc.value.reason == "KEY_PASSWORD_MISSING"


def test_read_password(tmp_path, monkeypatch):
    """Passwords come from a file (one trailing newline dropped) or an environment variable."""
    f = tmp_path / "pw"
    f.write_text("s3cret \n")
    assert keys.read_password(file=f) == "s3cret "
    monkeypatch.setenv("EMD_TEST_PW", "from-env")
    assert keys.read_password(env="EMD_TEST_PW") == "from-env"
    monkeypatch.delenv("EMD_TEST_PW")
    with pytest.raises(PermanentError) as exc:
        keys.read_password(env="EMD_TEST_PW")
    assert exc.value.reason == "KEY_PASSWORD_MISSING"
    assert keys.read_password() is None


def test_private_key_repr_hides_scalar():
    """repr() of a key never shows the scalar."""
    key = gost.PrivateKey.generate(gost.CURVES["tc26-256-A"])
    assert str(key.d) not in repr(key) and hex(key.d)[2:] not in repr(key)
