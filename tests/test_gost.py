"""GOST R 34.10-2012 / Streebog: byte orders, curves, fast path against gostcrypto and OpenSSL."""

from __future__ import annotations

import secrets

import pytest

from services.crypto import byteorder, gost, keys, native
from tests import openssl_gost as ossl

# GOST R 34.11-2012, Appendix A, example 1 (M1) and its digests
M1 = b"012345678901234567890123456789012345678901234567890123456789012"
M1_256 = "9d151eefd8590b89daa6ba6cb74af9275dd051026bb149a452fd84e5e57b5500"
M1_512 = (
    "1b54d01a4af5b9d5cc3d86d68d285462b19abc2475222f35c085122be4ba1ffa"
    "00ad30f8767b3a82384c6574f024c311e2a481332b08ef7f41797891c1646f48"
)


class TestByteOrder:
    def test_digest_is_read_little_endian(self):
        """The 34.10 integer e is the Streebog digest read little-endian."""
        assert byteorder.digest_to_e(b"\x01" + b"\x00" * 31) == 1

    def test_signature_is_s_then_r_big_endian(self):
        """The wire signature is s‖r, each big-endian, and parses back to (r, s)."""
        wire = byteorder.signature_to_bytes(r=1, s=2, size=32)
        assert wire == (2).to_bytes(32, "big") + (1).to_bytes(32, "big")
        assert byteorder.signature_from_bytes(wire) == (1, 2)

    def test_public_key_is_x_then_y_little_endian(self):
        """SPKI key bytes are X‖Y little-endian, raw or wrapped in an OCTET STRING."""
        raw = byteorder.public_key_to_bytes(1, 2, 32)
        assert raw[0] == 1 and raw[32] == 2
        assert byteorder.public_key_from_bytes(raw) == (1, 2)
        assert byteorder.public_key_from_bytes(b"\x04\x40" + raw) == (1, 2)

    @pytest.mark.parametrize(
        "encoded",
        [
            (0x0102).to_bytes(32, "little"),  # OpenSSL 3 engine: raw little-endian
            b"\x04\x20" + (0x0102).to_bytes(32, "little"),  # older engine: OCTET STRING
            b"\x02\x02\x01\x02",  # INTEGER (big-endian)
        ],
    )
    def test_private_key_encodings(self, encoded):
        """All three PKCS#8 private key encodings yield the same scalar."""
        assert byteorder.private_key_from_bytes(encoded) == 0x0102

    def test_unknown_private_key_encoding_is_rejected(self):
        """A 33-byte blob of no known form is refused rather than misread."""
        with pytest.raises(ValueError):
            byteorder.private_key_from_bytes(b"\x30" * 33)


class TestCurves:
    @pytest.mark.parametrize(
        "oid,name",
        [
            ("1.2.643.2.2.35.1", "tc26-256-B"),
            ("1.2.643.2.2.35.2", "tc26-256-C"),
            ("1.2.643.2.2.35.3", "tc26-256-D"),
            ("1.2.643.2.2.36.0", "tc26-256-B"),
            ("1.2.643.2.2.36.1", "tc26-256-D"),
            ("1.2.643.7.1.2.1.1.1", "tc26-256-A"),
            ("1.2.643.7.1.2.1.1.2", "tc26-256-B"),
            ("1.2.643.7.1.2.1.1.3", "tc26-256-C"),
            ("1.2.643.7.1.2.1.1.4", "tc26-256-D"),
            ("1.2.643.7.1.2.1.2.1", "tc26-512-A"),
            ("1.2.643.7.1.2.1.2.2", "tc26-512-B"),
            ("1.2.643.7.1.2.1.2.3", "tc26-512-C"),
        ],
    )
    def test_oid_map(self, oid, name):
        """Every CryptoPro and TC 26 parameter-set OID names the right curve."""
        assert gost.curve_by_oid(oid) is gost.CURVES[name]

    def test_unknown_oid(self):
        """An unknown parameter set raises KeyError naming it."""
        with pytest.raises(KeyError, match="1.2.3"):
            gost.curve_by_oid("1.2.3")

    @pytest.mark.parametrize("name", sorted(gost.CURVES))
    def test_base_point_has_order_q(self, name):
        """The base point lies on the curve and (q−1)·P is −P, so q·P is the point at infinity: the key table
        is right up to the curve's order."""
        c = gost.CURVES[name]
        assert c.contains(c.x, c.y)
        assert gost.PrivateKey(c, c.q - 1).public_key() == gost.PublicKey(c, c.x, c.p - c.y)
        assert gost.PrivateKey(c, 1).public_key() == gost.PublicKey(c, c.x, c.y)


class TestSignatures:
    @pytest.mark.parametrize("name", sorted(gost.CURVES))
    def test_fast_and_reference_agree(self, name):
        """Our signatures verify with gostcrypto, gostcrypto's verify with ours (OpenSSL's engine and the Python fast
        path), and public keys match."""
        c = gost.CURVES[name]
        key = gost.PrivateKey.generate(c)
        pub = key.public_key()
        digest = gost.streebog(b"document", c.bits)
        assert gost.reference_verify(pub, digest, key.sign_digest(digest))
        theirs = gost.reference_sign(key, digest)
        assert pub.verify_digest(digest, theirs) and pub.verify_digest_in_python(digest, theirs)
        assert gost.reference_public_key(key) == pub

    @pytest.mark.parametrize("name", sorted(gost.CURVES))
    def test_openssl_signs_and_verifies_as_the_python_path_does(self, name):
        """Here OpenSSL's gost engine loads (the Makefile installs it) and is what sign_digest and verify_digest use:
        its signatures verify in Python, Python's verify in it, and it refuses what Python refuses."""
        c = gost.CURVES[name]
        key = gost.PrivateKey.generate(c)
        pub = key.public_key()
        digest = gost.streebog(b"document", c.bits)
        assert native.available()
        theirs, ours = native.sign_digest(key, digest), key.sign_digest_in_python(digest)
        assert pub.verify_digest_in_python(digest, theirs) and native.verify_digest(pub, digest, ours) is True
        tampered = ours[:-1] + bytes([ours[-1] ^ 1])
        other = gost.streebog(b"documenT", c.bits)
        assert native.verify_digest(pub, digest, tampered) is False and not pub.verify_digest_in_python(
            digest, tampered
        )
        assert native.verify_digest(pub, other, ours) is False and not pub.verify_digest_in_python(
            other, ours
        )
        stranger = gost.PrivateKey.generate(c).public_key()
        assert native.verify_digest(stranger, digest, ours) is False

    def test_an_openssl_key_handle_lives_as_long_as_its_key(self):
        """A key is handed to OpenSSL once, however many other keys are used in between, and its handle goes with it."""
        import gc

        c = gost.CURVES["tc26-256-A"]
        digest = gost.streebog256(b"document")
        first = gost.PrivateKey.generate(c)
        native.sign_digest(first, digest)
        handle = native._handles[first]
        for _ in range(80):  # more keys than the bounded cache this replaced held (64)
            native.sign_digest(gost.PrivateKey.generate(c), digest)
        assert native._handles[first] is handle
        before = len(native._handles)
        del first
        gc.collect()
        assert len(native._handles) < before

    def test_without_openssl_the_python_path_signs_and_verifies(self, monkeypatch):
        """Where OpenSSL's engine is missing, sign_digest and verify_digest give the Python fast path's results."""
        monkeypatch.setattr(native, "available", lambda: False)
        key = gost.PrivateKey.generate(gost.CURVES["tc26-256-A"])
        pub, digest = key.public_key(), gost.streebog256(b"document")
        assert (
            native.sign_digest(key, digest) is None and native.verify_digest(pub, digest, bytes(64)) is None
        )
        sig = key.sign_digest(digest)
        assert gost.reference_verify(pub, digest, sig) and pub.verify_digest(digest, sig)
        assert not pub.verify_digest(gost.streebog256(b"documenT"), sig)

    def test_tampering_is_detected(self):
        """A changed digest, a changed signature and out-of-range r/s all fail verification."""
        key = gost.PrivateKey.generate(gost.CURVES["tc26-256-B"])
        digest = gost.streebog256(b"document")
        sig = key.sign_digest(digest)
        pub = key.public_key()
        assert pub.verify_digest(digest, sig)
        assert not pub.verify_digest(gost.streebog256(b"documenT"), sig)
        assert not pub.verify_digest(digest, sig[:-1] + bytes([sig[-1] ^ 1]))
        assert not pub.verify_digest(digest, bytes(64))
        assert not pub.verify_digest(digest, b"\xff" * 64)

    @pytest.mark.parametrize("name", sorted(gost.CURVES))
    def test_a_key_verified_again_uses_its_table_and_still_refuses_forgeries(self, name):
        """In the Python fast path, from its second verification a key's comb table is used; it accepts gostcrypto's signatures and refuses a
        changed digest or signature exactly like the first, table-less verification."""
        c = gost.CURVES[name]
        key = gost.PrivateKey.generate(c)
        pub = key.public_key()
        digest = gost.streebog(b"document", c.bits)
        theirs = gost.reference_sign(key, digest)
        tampered = theirs[:-1] + bytes([theirs[-1] ^ 1])
        other = gost.PrivateKey.generate(c).public_key()
        verify = gost.PublicKey.verify_digest_in_python  # the Python fast path's tables
        first = [verify(pub, digest, theirs), verify(other, digest, theirs)]  # each key's first: wNAF
        built = gost._key_table.cache_info().misses
        again = [
            verify(pub, digest, theirs),
            verify(pub, digest, tampered),
            verify(pub, gost.streebog(b"documenT", c.bits), theirs),
            verify(other, digest, theirs),
        ]
        assert gost._key_table.cache_info().misses == built + 2  # one table per key, made once
        assert first == [True, False] and again == [True, False, False, False]
        z = secrets.randbelow(c.q)
        assert gost._x_affine(gost._mul_key(c, z, pub.x, pub.y), c.p) == gost._x_affine(
            gost._mul_point(c, z, pub.x, pub.y), c.p
        )

    def test_signatures_are_randomised(self):
        """Two signatures of one digest differ (fresh k from secrets) and both verify."""
        key = gost.PrivateKey.generate(gost.CURVES["tc26-256-A"])
        digest = gost.streebog256(b"x")
        a, b = key.sign_digest(digest), key.sign_digest(digest)
        assert (
            a != b and key.public_key().verify_digest(digest, a) and key.public_key().verify_digest(digest, b)
        )

    def test_point_off_curve_is_rejected(self):
        """A public key that is not a curve point cannot be constructed."""
        c = gost.CURVES["tc26-256-B"]
        with pytest.raises(ValueError):
            gost.PublicKey(c, c.x, c.y + 1)

    @pytest.mark.parametrize("paramset", ossl.PARAMSETS)
    def test_openssl_signs_we_verify_and_back(self, tmp_path, paramset):
        """Raw 34.10 signatures cross between OpenSSL's engine and us in both directions."""
        key_pem, cert_pem = ossl.keypair(tmp_path, paramset)
        key = keys.load_pkcs8(key_pem.read_bytes())
        data = tmp_path / "data.bin"
        data.write_bytes(b"signed by openssl" * 100)
        theirs = ossl.run("dgst", "-md_gost12_256", "-sign", key_pem, data).stdout
        digest = gost.streebog256(data.read_bytes())
        assert key.public_key().verify_digest(digest, theirs)
        pub_pem = tmp_path / "pub.pem"
        ossl.run("pkey", "-in", key_pem, "-pubout", "-out", pub_pem)
        sig = tmp_path / "ours.sig"
        sig.write_bytes(key.sign_digest(digest))
        ok = ossl.run("dgst", "-md_gost12_256", "-verify", pub_pem, "-signature", sig, data, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        sig.write_bytes(key.sign_digest(gost.streebog256(b"other")))
        bad = ossl.run("dgst", "-md_gost12_256", "-verify", pub_pem, "-signature", sig, data, check=False)
        assert bad.returncode != 0


class TestStreebog:
    def test_standard_vectors(self):
        """Streebog-256/512 give the GOST R 34.11-2012 example-1 digests (as gost12sum prints them)."""
        assert gost.streebog256(M1).hex() == M1_256
        assert gost.streebog512(M1).hex() == M1_512

    def test_fast_path_is_loaded_and_agrees_with_fallback(self):
        """OpenSSL's gostprov Streebog is active and equals gostcrypto's, incremental updates included."""
        assert gost.FAST_STREEBOG
        data = bytes(range(256)) * 5
        for bits in (256, 512):
            slow = gost.Streebog(bits, fallback=True)
            slow.update(data[:100])
            slow.update(data[100:])
            assert slow.digest() == gost.streebog(data, bits) == gost.Streebog(bits, data).digest()

    def test_matches_openssl_dgst(self, tmp_path):
        """Our digest bytes are the bytes `openssl dgst -md_gost12_256` prints (messageDigest order)."""
        path = tmp_path / "doc.bin"
        path.write_bytes(b"\x00\xff" * 1000)
        assert gost.streebog256(path.read_bytes()) == ossl.dgst(path)
        assert gost.streebog512(path.read_bytes()) == ossl.dgst(path, "md_gost12_512")
