"""CAdES-BES detached signatures: ours against OpenSSL's, and every reason code of the verifier."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from asn1crypto import cms, core, tsp

from lab.dev import pki as devpki
from lab.dev.samples import REPOSITORY_SAMPLES  # noqa: E402
from producer.errors import ConfigurationError, PermanentError
from services.crypto import cades, gost, keys
from services.crypto.certificates import load_certificate
from services.crypto.signer import LocalKeySigner, Signer
from tests import openssl_gost as ossl

SAMPLE = REPOSITORY_SAMPLES / "AmbCase.xml"
UTC = dt.UTC


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A real Ministry СЭМД sample (ambulatory case), copied so tests may write next to it."""
    path = tmp_path_factory.mktemp("doc") / "AmbCase.xml"
    path.write_bytes(SAMPLE.read_bytes())
    return path


@pytest.fixture(scope="module")
def ca():
    return devpki.DevCA.create("Тестовый УЦ", paramset="A")


@pytest.fixture(scope="module")
def doctor(ca):
    return ca.issue(
        subject=devpki.SubjectInfo(
            "Петрова", "Анна Сергеевна", snils="11223344595", org="ГБУЗ Поликлиника 1", title="врач-терапевт"
        )
    )


def _with_signer(cms_der: bytes, signer_der: bytes) -> bytes:
    """The CMS with its SignerInfo replaced, spliced as DER (re-encoding would touch the GOST certificate)."""
    sd = cms.ContentInfo.load(cms_der)["content"]
    body = b"".join(
        sd[f].dump() for f in ("version", "digest_algorithms", "encap_content_info", "certificates")
    )
    body += _der("universal", 17, signer_der)  # SET OF SignerInfo
    signed_data = _der("context", 0, _der("universal", 16, body))
    return _der("universal", 16, core.ObjectIdentifier("1.2.840.113549.1.7.2").dump() + signed_data)


def _der(class_: str, tag: int, contents: bytes) -> bytes:
    """A constructed DER value around ``contents`` exactly as given (asn1crypto, never re-encoding them)."""
    return core.Asn1Value(class_=class_, tag=tag, method="constructed", contents=contents).dump()


def _resign(cms_der: bytes, key: gost.PrivateKey, mutate) -> bytes:
    """Change the signed attributes with ``mutate(list_of_attrs)`` and sign them again (valid signature)."""
    si = cms.ContentInfo.load(cms_der)["content"]["signer_infos"][0]
    attrs = mutate([cms.CMSAttribute.load(a.dump()) for a in si["signed_attrs"]])
    new_attrs = cms.CMSAttributes(attrs)
    tbs = b"\x31" + new_attrs.dump(force=True)[1:]
    new_si = cms.SignerInfo.load(si.dump())
    new_si["signed_attrs"] = new_attrs
    new_si["signature"] = key.sign_digest(gost.streebog256(tbs))
    return _with_signer(cms_der, new_si.dump(force=True))


class TestInteroperability:
    @pytest.mark.parametrize("paramset", ossl.PARAMSETS)
    def test_openssl_verifies_ours(self, tmp_path, sample, paramset):
        """Our detached CMS of a real СЭМД verifies with `openssl cms -verify`, and fails for a changed document."""
        key_pem, cert_pem = ossl.keypair(tmp_path, paramset)
        sig = tmp_path / "doc.sig"
        sig.write_bytes(
            cades.sign_detached(
                sample.read_bytes(),
                key=keys.load_pkcs8(key_pem.read_bytes()),
                certificate=load_certificate(cert_pem),
            )
        )
        assert ossl.cms_verify(sig, sample)
        changed = tmp_path / "changed.xml"
        changed.write_bytes(sample.read_bytes().replace(b"<", b" <", 1))
        assert not ossl.cms_verify(sig, changed)

    @pytest.mark.parametrize("paramset", ossl.PARAMSETS)
    def test_we_verify_openssl(self, tmp_path, sample, paramset):
        """`openssl cms -sign -cades` output verifies with ours and names the right certificate."""
        key_pem, cert_pem = ossl.keypair(tmp_path, paramset)
        der = ossl.cms_sign(sample, cert_pem, key_pem, tmp_path / "o.der")
        result = cades.verify_detached(sample.read_bytes(), der)
        assert result.certificate == load_certificate(cert_pem)
        assert result.digest_algorithm == gost.OID_STREEBOG256
        assert result.message_digest == gost.streebog256(sample.read_bytes())
        assert abs(result.signing_time - dt.datetime.now(UTC)) < dt.timedelta(hours=1)

    def test_openssl_verifies_devpki_chain(self, tmp_path, sample, ca, doctor):
        """A devpki signer's CMS verifies with openssl against the devpki CA (no -noverify)."""
        key, cert = doctor
        sig = tmp_path / "doc.sig"
        sig.write_bytes(cades.sign_detached(sample.read_bytes(), key=key, certificate=cert))
        ca_pem = tmp_path / "ca.pem"
        ca_pem.write_bytes(ca.certificate.to_pem())
        assert ossl.cms_verify(sig, sample, cafile=ca_pem)


class TestStructure:
    def test_signed_attributes(self, doctor):
        """One signer, embedded certificate, and the four CAdES-BES attributes with an explicit Streebog ESS hash."""
        key, cert = doctor
        when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
        info = cms.ContentInfo.load(cades.sign_detached(b"doc", key=key, certificate=cert, signing_time=when))
        sd = info["content"]
        assert sd["encap_content_info"]["content"].native is None  # detached
        assert [c.chosen.dump() for c in sd["certificates"]] == [cert.der]
        (si,) = sd["signer_infos"]
        attrs = {a["type"].dotted: a["values"][0] for a in si["signed_attrs"]}
        assert attrs["1.2.840.113549.1.9.3"].native == "data"
        assert attrs["1.2.840.113549.1.9.5"].native == when
        assert attrs["1.2.840.113549.1.9.4"].native == gost.streebog256(b"doc")
        ess = tsp.SigningCertificateV2.load(attrs["1.2.840.113549.1.9.16.2.47"].dump())
        cert_id = ess["certs"][0]
        assert cert_id["hash_algorithm"].contents  # present: an absent one would mean SHA-256
        assert cert_id["hash_algorithm"]["algorithm"].dotted == gost.OID_STREEBOG256
        assert cert_id["cert_hash"].native == gost.streebog256(cert.der)
        assert cert_id["issuer_serial"]["serial_number"].native == cert.serial_number
        encoded = [a.dump() for a in si["signed_attrs"]]
        assert encoded == sorted(encoded)  # DER SET OF order

    def test_wire_helpers(self, doctor):
        """from_wire accepts DER, base64 (wrapped or not) and PEM, and rejects other text."""
        key, cert = doctor
        der = cades.sign_detached(b"doc", key=key, certificate=cert)
        b64 = cades.to_base64(der)
        wrapped = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        pem = f"-----BEGIN CMS-----\n{wrapped}\n-----END CMS-----\n"
        for form in (der, b64, b64.encode(), wrapped, pem):
            assert cades.from_wire(form) == der
        with pytest.raises(cades.SignatureError) as exc:
            cades.from_wire("not a signature!")
        assert exc.value.reason == "SIGNATURE_DECODING_ERROR"


def _with_ess(change):
    """A ``_resign`` mutation: the signingCertificateV2 attribute replaced by ``change(its SigningCertificateV2)``."""

    def mutate(attrs):
        for a in attrs:
            if a["type"].dotted == "1.2.840.113549.1.9.16.2.47":
                a["values"] = [change(tsp.SigningCertificateV2.load(a["values"][0].dump()))]
        return attrs

    return mutate


def _reason(data: bytes, der: bytes, **kw) -> str:
    with pytest.raises(cades.SignatureError) as exc:
        cades.verify_detached(data, der, **kw)
    return exc.value.reason


class TestVerificationFailures:
    def test_changed_document(self, sample, doctor):
        """A changed document fails with DIGEST_MISMATCH."""
        key, cert = doctor
        der = cades.sign_detached(sample.read_bytes(), key=key, certificate=cert)
        assert _reason(sample.read_bytes() + b" ", der) == "DIGEST_MISMATCH"

    def test_changed_signature(self, doctor):
        """A flipped bit in the signature value fails with SIGNATURE_INVALID."""
        key, cert = doctor
        der = bytearray(cades.sign_detached(b"doc", key=key, certificate=cert))
        der[-1] ^= 1  # the signature OCTET STRING is the last element
        assert _reason(b"doc", bytes(der)) == "SIGNATURE_INVALID"

    def test_wrong_ess_hash_fails_ours_though_openssl_accepts(self, tmp_path, doctor):
        """A validly signed but wrong ESS certHash fails ours with ESS_CERT_MISMATCH; openssl does not notice."""
        key, cert = doctor

        def wrong_hash(ess):
            ess["certs"][0]["cert_hash"] = gost.streebog256(b"another certificate")
            return tsp.SigningCertificateV2.load(ess.dump(force=True))

        der = _resign(cades.sign_detached(b"doc", key=key, certificate=cert), key, _with_ess(wrong_hash))
        assert _reason(b"doc", der) == "ESS_CERT_MISMATCH"
        (tmp_path / "d").write_bytes(b"doc")
        (tmp_path / "s").write_bytes(der)
        assert ossl.cms_verify(tmp_path / "s", tmp_path / "d")  # why we check it ourselves

    def test_ess_naming_another_serial_fails(self, doctor):
        """An ESS issuerSerial with another serial number (the certHash right) fails with ESS_CERT_MISMATCH."""
        key, cert = doctor

        def other_serial(ess):
            ess["certs"][0]["issuer_serial"]["serial_number"] = cert.serial_number + 1
            return tsp.SigningCertificateV2.load(ess.dump(force=True))

        der = _resign(cades.sign_detached(b"doc", key=key, certificate=cert), key, _with_ess(other_serial))
        assert _reason(b"doc", der) == "ESS_CERT_MISMATCH"

    def test_ess_without_issuer_serial_is_accepted(self, doctor):
        """issuerSerial is OPTIONAL in ESSCertIDv2: without it the certHash alone names the certificate."""
        key, cert = doctor

        def no_serial(ess):
            cert_id = ess["certs"][0]
            return tsp.SigningCertificateV2(
                {
                    "certs": [
                        tsp.ESSCertIDv2(
                            {
                                "hash_algorithm": cert_id["hash_algorithm"].native,
                                "cert_hash": cert_id["cert_hash"].native,
                            }
                        )
                    ]
                }
            )

        der = _resign(cades.sign_detached(b"doc", key=key, certificate=cert), key, _with_ess(no_serial))
        assert cades.verify_detached(b"doc", der).certificate.serial_number == cert.serial_number

    def test_missing_signing_time(self, doctor):
        """A signature without signingTime fails with NO_SIGNING_TIME."""
        key, cert = doctor
        der = _resign(
            cades.sign_detached(b"doc", key=key, certificate=cert),
            key,
            lambda attrs: [a for a in attrs if a["type"].dotted != "1.2.840.113549.1.9.5"],
        )
        assert _reason(b"doc", der) == "NO_SIGNING_TIME"

    def test_missing_ess_attribute(self, doctor):
        """A signature without signingCertificate(V2) is not CAdES-BES: ESS_CERT_MISSING."""
        key, cert = doctor
        der = _resign(
            cades.sign_detached(b"doc", key=key, certificate=cert),
            key,
            lambda attrs: [a for a in attrs if a["type"].dotted != "1.2.840.113549.1.9.16.2.47"],
        )
        assert _reason(b"doc", der) == "ESS_CERT_MISSING"

    def test_two_signers(self, tmp_path, sample, doctor):
        """A CMS with two SignerInfos fails with MULTIPLE_SIGNERS."""
        key_pem, cert_pem = ossl.keypair(tmp_path, "A")
        key2, cert2 = ossl.keypair(tmp_path, "TCB")
        one = ossl.cms_sign(sample, cert_pem, key_pem, tmp_path / "one.der")
        ossl.run(
            "cms",
            "-resign",
            "-binary",
            "-inform",
            "DER",
            "-in",
            tmp_path / "one.der",
            "-signer",
            cert2,
            "-inkey",
            key2,
            "-md",
            "md_gost12_256",
            "-outform",
            "DER",
            "-out",
            tmp_path / "two.der",
        )
        two = (tmp_path / "two.der").read_bytes()
        assert len(cms.ContentInfo.load(two)["content"]["signer_infos"]) == 2
        assert cades.verify_detached(sample.read_bytes(), one)
        assert _reason(sample.read_bytes(), two) == "MULTIPLE_SIGNERS"

    def test_certificate_not_embedded(self, tmp_path, sample):
        """`openssl cms -sign -nocerts` output fails with NO_END_ENTITY_CERTIFICATE."""
        key_pem, cert_pem = ossl.keypair(tmp_path, "TCA")
        ossl.run(
            "cms",
            "-sign",
            "-binary",
            "-cades",
            "-nosmimecap",
            "-nocerts",
            "-md",
            "md_gost12_256",
            "-outform",
            "DER",
            "-in",
            sample,
            "-signer",
            cert_pem,
            "-inkey",
            key_pem,
            "-out",
            tmp_path / "s.der",
        )
        assert _reason(sample.read_bytes(), (tmp_path / "s.der").read_bytes()) == "NO_END_ENTITY_CERTIFICATE"

    def test_garbage(self):
        """Bytes that are not a CMS fail with SIGNATURE_DECODING_ERROR."""
        assert _reason(b"doc", b"\x30\x03\x02\x01\x01") == "SIGNATURE_DECODING_ERROR"
        assert _reason(b"doc", b"hello") == "SIGNATURE_DECODING_ERROR"

    def test_unknown_digest_algorithm(self, doctor):
        """A SignerInfo claiming SHA-256 with a GOST key fails with UNKNOWN_ALGORITHM."""
        key, cert = doctor
        der = cades.sign_detached(b"doc", key=key, certificate=cert)
        si = cms.SignerInfo.load(cms.ContentInfo.load(der)["content"]["signer_infos"][0].dump())
        si["digest_algorithm"] = {"algorithm": "sha256"}
        assert _reason(b"doc", _with_signer(der, si.dump(force=True))) == "UNKNOWN_ALGORITHM"

    def test_validity_window(self, ca):
        """Signing time outside the certificate window fails with CERT_EXPIRED / CERT_NOT_YET_VALID."""
        nb, na = dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2025, 12, 31, tzinfo=UTC)
        key, cert = ca.issue(subject=devpki.SubjectInfo("Сидоров", "Пётр"), not_before=nb, not_after=na)
        inside = cades.sign_detached(
            b"d", key=key, certificate=cert, signing_time=dt.datetime(2025, 6, 1, tzinfo=UTC)
        )
        assert cades.verify_detached(b"d", inside).signing_time == dt.datetime(2025, 6, 1, tzinfo=UTC)
        late = cades.sign_detached(
            b"d", key=key, certificate=cert, signing_time=dt.datetime(2026, 1, 2, tzinfo=UTC)
        )
        early = cades.sign_detached(
            b"d", key=key, certificate=cert, signing_time=dt.datetime(2024, 12, 1, tzinfo=UTC)
        )
        assert _reason(b"d", late) == "CERT_EXPIRED"
        assert _reason(b"d", early) == "CERT_NOT_YET_VALID"
        assert _reason(b"d", inside, document_time=dt.datetime(2026, 2, 1, tzinfo=UTC)) == "CERT_EXPIRED"
        assert _reason(b"d", inside, at=dt.datetime(2024, 1, 1, tzinfo=UTC)) == "CERT_NOT_YET_VALID"

    def test_key_usage(self, ca):
        """A certificate whose keyUsage has neither digitalSignature nor nonRepudiation fails INVALID_CERT_KEY_USAGE."""
        key, cert = ca.issue(subject=devpki.SubjectInfo("Кузнецов"), key_usage=("key_encipherment",))
        der = cades.sign_detached(b"d", key=key, certificate=cert)
        assert _reason(b"d", der) == "INVALID_CERT_KEY_USAGE"
        key, cert = ca.issue(subject=devpki.SubjectInfo("Кузнецов"), key_usage=("non_repudiation",))
        assert cades.verify_detached(b"d", cades.sign_detached(b"d", key=key, certificate=cert))

    def test_signature_error_is_permanent(self):
        """SignatureError is a PermanentError, so the runtime dead-letters rather than retries."""
        assert issubclass(cades.SignatureError, PermanentError)


class TestDigestHandedOn:
    def test_a_digest_given_is_the_one_signed(self, doctor):
        """Signing with the document's digest given gives a signature that verifies over the document; a digest of
        other bytes is what gets attested, so that signature fails as DIGEST_MISMATCH; a wrong size is refused."""
        key, cert = doctor
        data = b"<doc>one</doc>"
        assert cades.verify_detached(
            data, cades.sign_detached(data, key=key, certificate=cert, digest=gost.streebog256(data))
        )
        other = cades.sign_detached(
            data, key=key, certificate=cert, digest=gost.streebog256(b"<doc>two</doc>")
        )
        assert _reason(data, other) == "DIGEST_MISMATCH"
        with pytest.raises(ValueError):
            cades.sign_detached(data, key=key, certificate=cert, digest=b"short")

    def test_verifications_of_one_document_share_its_digest(self, doctor):
        """The digests mapping is filled in by the first verification and read by the next; a changed document with
        a fresh mapping still fails."""
        key, cert = doctor
        data = b"<doc>shared</doc>"
        der = cades.sign_detached(data, key=key, certificate=cert)
        digests: dict[int, bytes] = {}
        cades.verify_detached(data, der, digests=digests)
        assert digests == {256: gost.streebog256(data)}
        assert cades.verify_detached(data, der, digests=digests)
        assert _reason(data + b" ", der, digests={}) == "DIGEST_MISMATCH"


class TestSigner:
    def test_local_key_signer(self, doctor):
        """LocalKeySigner is a Signer whose output verifies and names its certificate."""
        key, cert = doctor
        signer = LocalKeySigner(key, cert)
        assert isinstance(signer, Signer)
        assert cades.verify_detached(b"x", signer.sign(b"x")).certificate == cert

    def test_local_key_signer_rejects_foreign_key(self, doctor):
        """A key that does not belong to the certificate is a configuration error."""
        _, cert = doctor
        with pytest.raises(ConfigurationError):
            LocalKeySigner(gost.PrivateKey.generate(cert.public_key.curve), cert)


def test_base64_round_trip_is_what_openssl_reads(tmp_path, doctor):
    """The base64 wire form decodes to the DER openssl verifies."""
    key, cert = doctor
    (tmp_path / "d").write_bytes(b"wire")
    (tmp_path / "s").write_bytes(
        base64.b64decode(cades.to_base64(cades.sign_detached(b"wire", key=key, certificate=cert)))
    )
    assert ossl.cms_verify(tmp_path / "s", tmp_path / "d")
