"""Certificates: Russian qualified fields, validity, key usage, fingerprints, devpki issuance."""

from __future__ import annotations

import datetime as dt

import pytest

from lab.dev import pki as devpki
from producer.errors import PermanentError
from services.crypto import gost
from services.crypto.certificates import load_certificate
from tests import openssl_gost as ossl

UTC = dt.UTC
SUBJECT = devpki.SubjectInfo(
    "Иванова",
    "Мария Петровна",
    snils="12345678901",
    inn="770123456789",
    ogrn="1027700132195",
    org="ГБУЗ «Городская поликлиника № 2»",
    title="Главный врач",
    inn_le="7701234567",
)


def test_openssl_certificate_fields(tmp_path):
    """A certificate openssl made with СНИЛС/ИНН/ОГРН OIDs in the subject reads back every field."""
    key = ossl.genkey(tmp_path / "k.pem", "TCA")
    cert_pem = ossl.self_signed(
        key,
        tmp_path / "c.pem",
        "/CN=Иванова Мария/SN=Иванова/GN=Мария Петровна"
        "/O=ГБУЗ/title=Врач/1.2.643.100.3=12345678901/1.2.643.3.131.1.1=770123456789"
        "/1.2.643.100.1=1027700132195/1.2.643.100.5=304500116000157",
    )
    cert = load_certificate(cert_pem)
    # (openssl 3.0's -subj silently drops ИНН ЮЛ 1.2.643.100.4; the devpki test covers it)
    assert (cert.snils, cert.inn, cert.ogrn, cert.ogrnip) == (
        "12345678901",
        "770123456789",
        "1027700132195",
        "304500116000157",
    )
    assert (cert.surname, cert.given_name, cert.common_name, cert.organization, cert.title) == (
        "Иванова",
        "Мария Петровна",
        "Иванова Мария",
        "ГБУЗ",
        "Врач",
    )
    assert cert.public_key == load_certificate(cert_pem.read_bytes()).public_key
    assert cert.public_key.curve is gost.CURVES["tc26-256-A"]


def test_pem_and_der_load_the_same(tmp_path):
    """PEM, DER and a path give the same certificate; a fingerprint equals openssl's Streebog of the DER."""
    key, cert_pem = ossl.keypair(tmp_path, "A")
    der_path = tmp_path / "c.der"
    ossl.run("x509", "-in", cert_pem, "-outform", "DER", "-out", der_path)
    cert = load_certificate(cert_pem.read_bytes())
    assert cert == load_certificate(der_path) == load_certificate(str(cert_pem))
    assert cert.der == der_path.read_bytes()
    assert cert.fingerprint_streebog256 == ossl.dgst(der_path)


def test_unreadable_certificate():
    """Bytes that are not a certificate raise CERT_INVALID."""
    with pytest.raises(PermanentError) as exc:
        load_certificate(b"\x30\x03\x02\x01\x00")
    assert exc.value.reason == "CERT_INVALID"


def test_validity_window():
    """is_valid_at is true inside [notBefore, notAfter] and false outside; naive times are UTC."""
    ca = devpki.DevCA.create(paramset="TCB")
    nb, na = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)
    _, cert = ca.issue(subject=SUBJECT, not_before=nb, not_after=na)
    assert (cert.not_before, cert.not_after) == (nb, na)
    assert cert.is_valid_at(nb) and cert.is_valid_at(na) and cert.is_valid_at(dt.datetime(2026, 3, 1))
    assert not cert.is_valid_at(nb - dt.timedelta(seconds=1))
    assert not cert.is_valid_at(na + dt.timedelta(seconds=1))


@pytest.mark.parametrize("paramset", ossl.PARAMSETS)
def test_devpki_certificates_verify_with_openssl(tmp_path, paramset):
    """devpki CA and end-entity certificates pass `openssl verify` and carry the qualified fields."""
    ca = devpki.DevCA.create("Тестовый УЦ", paramset=paramset)
    key, cert = ca.issue(subject=SUBJECT)
    devpki.write_pem(key, cert, cert_path=tmp_path / "ee.pem", key_path=tmp_path / "ee.key")
    devpki.write_pem(None, ca.certificate, cert_path=tmp_path / "ca.pem")
    out = ossl.run("verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "ee.pem")
    assert out.stdout.strip().endswith(b"OK")
    assert (tmp_path / "ee.key").stat().st_mode & 0o077 == 0
    text = ossl.run(
        "x509", "-in", tmp_path / "ee.pem", "-noout", "-subject", "-nameopt", "utf8"
    ).stdout.decode()
    assert "SNILS=12345678901" in text and "INN=770123456789" in text and "OGRN=1027700132195" in text
    assert cert.key_usage == {"digital_signature", "non_repudiation"}
    assert (cert.snils, cert.inn, cert.ogrn, cert.inn_le, cert.surname, cert.given_name, cert.title) == (
        "12345678901",
        "770123456789",
        "1027700132195",
        "7701234567",
        "Иванова",
        "Мария Петровна",
        "Главный врач",
    )
    assert ca.certificate.is_ca and not cert.is_ca
    assert cert.public_key == key.public_key()


def test_devpki_key_signs_what_openssl_verifies(tmp_path):
    """A devpki key written as PKCS#8 signs with openssl, and openssl's signature verifies with the devpki cert."""
    ca = devpki.DevCA.create(paramset="TCA")
    key, cert = ca.issue(subject=SUBJECT)
    devpki.write_pem(key, cert, cert_path=tmp_path / "ee.pem", key_path=tmp_path / "ee.key")
    data = tmp_path / "d.bin"
    data.write_bytes(b"payload")
    sig = ossl.run("dgst", "-md_gost12_256", "-sign", tmp_path / "ee.key", data).stdout
    assert cert.public_key.verify_digest(gost.streebog256(b"payload"), sig)


def test_paramset_and_key_usage_are_chosen():
    """issue() honours the parameter set and key usage asked for."""
    ca = devpki.DevCA.create(paramset="A")
    key, cert = ca.issue(subject=SUBJECT, paramset="TCA", key_usage=("key_encipherment",))
    assert cert.public_key.curve is gost.CURVES["tc26-256-A"] and key.curve is gost.CURVES["tc26-256-A"]
    assert cert.key_usage == {"key_encipherment"}


def test_one_der_is_parsed_once_and_shared():
    """The same DER bytes, PEM-armoured or not, load as one shared Certificate; bytes that are no certificate are
    refused every time (nothing wrong is kept)."""
    from services.crypto.certificates import certificate_from_der

    _, cert = devpki.DevCA.create("Кэш УЦ").issue(
        subject=devpki.SubjectInfo("Иванов", "Иван", snils="11223344595")
    )
    first = certificate_from_der(bytes(cert.der))
    assert certificate_from_der(bytes(cert.der)) is first
    assert load_certificate(cert.to_pem()) is first and load_certificate(cert.der) is first
    for _ in range(2):
        with pytest.raises(PermanentError):
            certificate_from_der(b"\x30\x03\x02\x01\x01")


def test_a_shared_certificate_is_parsed_whole_before_anyone_reads_it():
    """The shared certificate's extensions and every part of its tree are parsed when it is made, so threads reading
    it later (the emulator's jobs) only read: asn1crypto parses lazily, and two first reads at once can collide."""
    from services.crypto.certificates import certificate_from_der

    _, cert = devpki.DevCA.create("Разбор УЦ").issue(
        subject=devpki.SubjectInfo("Петров", "Пётр", snils="11223344595")
    )
    shared = certificate_from_der(bytes(cert.der) + b"")
    assert shared._cert._processed_extensions
    tbs = shared._cert["tbs_certificate"]
    assert tbs.children is not None and tbs["extensions"].children is not None


def test_issued_by_checks_the_issuer_name_and_its_signature():
    """A certificate is issued by its CA; not by another CA, even one that took the same name."""
    from lab.dev.pki import DevCA, SubjectInfo

    ca, impostor, other = DevCA.create("Тестовый УЦ"), DevCA.create("Тестовый УЦ"), DevCA.create("Другой УЦ")
    _, cert = ca.issue(subject=SubjectInfo("Иванов", "Иван Иванович", snils="11223344595"))
    assert cert.issued_by(ca.certificate) and ca.certificate.issued_by(ca.certificate)
    assert not cert.issued_by(impostor.certificate) and not cert.issued_by(other.certificate)
