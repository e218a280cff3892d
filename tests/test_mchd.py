"""МЧД (EMCHD_1): parsing, the checks against organisation / employee / time / powers, and the principal's signature."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from lxml import etree

from lab.dev.mchd import Person, build_mchd, sign_mchd
from lab.dev.pki import DevCA, SubjectInfo
from producer.errors import PermanentError
from services.crypto import mchd

ORG = {
    "organization_name": "ГБУЗ «Городская поликлиника № 1»",
    "organization_inn": "7701234567",
    "organization_ogrn": "1027700000001",
    "organization_kpp": "770101001",
}
HEAD = Person(
    family="Главврачев",
    given="Пётр",
    patronymic="Петрович",
    snils="112-233-445 95",
    inn="770100000001",
    position="Главный врач",
)
EMPLOYEE = Person(
    family="Иванова",
    given="Мария",
    patronymic="Ивановна",
    snils="123-456-789 64",
    inn="770100000002",
    position="Заместитель главного врача",
)
NUMBER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def make_xml(**overrides) -> bytes:
    args = {
        **ORG,
        "head": HEAD,
        "representative": EMPLOYEE,
        "issued": date(2026, 1, 1),
        "valid_until": date(2026, 12, 31),
        "number": NUMBER,
        **overrides,
    }
    return build_mchd(**args)


def employee_cert(**overrides):
    """The employee's certificate fields as services.crypto.certificates.Certificate exposes them."""
    fields = {
        "snils": "12345678964",
        "surname": "Иванова",
        "given_name": "Мария Ивановна",
        "inn": "770100000002",
    }
    return SimpleNamespace(**{**fields, **overrides})


def terms(poa, **overrides):
    args = {
        "employee_certificate": employee_cert(),
        "organization_inn": ORG["organization_inn"],
        "organization_ogrn": ORG["organization_ogrn"],
        "at": AT,
        "revoked": set(),
        "required_powers": mchd.DEFAULT_REMD_POWERS,
        **overrides,
    }
    return mchd.check_mchd_terms(poa, **args)


def reason_of(call) -> str:
    with pytest.raises(PermanentError) as exc:
        call()
    return exc.value.reason


class TestParse:
    def test_generated_mchd_parses_back_to_what_was_given(self):
        """A dev МЧД parses into the number, dates, principal, head, representative and powers it was built with."""
        xml = make_xml()
        poa = mchd.parse_mchd(xml)
        assert poa.number == NUMBER
        assert (poa.issued, poa.valid_until) == (date(2026, 1, 1), date(2026, 12, 31))
        assert (poa.principal_inn, poa.principal_ogrn, poa.principal_kpp) == (
            "7701234567",
            "1027700000001",
            "770101001",
        )
        assert poa.principal_name == ORG["organization_name"]
        assert (poa.representative_snils, poa.representative_inn) == ("12345678964", "770100000002")
        assert (poa.representative_family, poa.representative_given, poa.representative_patronymic) == (
            "Иванова",
            "Мария",
            "Ивановна",
        )
        assert (poa.head_snils, poa.head_family) == ("11223344595", "Главврачев")
        assert poa.power_codes == mchd.DEFAULT_REMD_POWERS
        assert poa.file_id == f"ON_EMCHD_20260101_{NUMBER}"
        assert poa.xml == xml

    def test_repr_keeps_personal_data_out(self):
        """The МЧД's repr (tracebacks, debug logs) shows no СНИЛС or names."""
        text = repr(mchd.parse_mchd(make_xml()))
        assert NUMBER in text
        assert "12345678964" not in text and "Иванова" not in text and "11223344595" not in text

    def test_root_is_in_the_emchd_namespace_with_its_version(self):
        """The generated XML has the confirmed EMCHD_1 root, version and file id."""
        root = etree.fromstring(make_xml())
        assert root.tag == "{urn://x-artefacts/EMCHD_1}Доверенность"
        assert root.get("ВерсФорм") == "EMCHD_1"
        assert root.find("{*}Документ/{*}Довер/{*}СвДов").get("НомДовер") == NUMBER

    @pytest.mark.parametrize(
        "data",
        [
            b"not xml",
            b"<Dover xmlns='urn://x-artefacts/EMCHD_1' />",
            b"<!DOCTYPE x><x/>",
        ],
        ids=["garbage", "wrong-root", "doctype"],
    )
    def test_unparseable_is_mchd_invalid(self, data):
        """Bytes that are not an EMCHD_1 document are MCHD_INVALID."""
        assert reason_of(lambda: mchd.parse_mchd(data)) == "MCHD_INVALID"

    def test_wrong_version_and_missing_fields_are_mchd_invalid(self):
        """Another ВерсФорм, a non-GUID number or a missing representative СНИЛС are MCHD_INVALID, naming the field."""
        xml = make_xml()
        assert reason_of(lambda: mchd.parse_mchd(xml.replace(b'"EMCHD_1"', b'"EMCHD_2"'))) == "MCHD_INVALID"
        with pytest.raises(PermanentError) as exc:
            mchd.parse_mchd(xml.replace(NUMBER.encode(), b"not-a-guid"))
        assert exc.value.details["field"] == "НомДовер"
        no_snils = xml.replace('СНИЛС="123-456-789 64"'.encode(), b"")
        with pytest.raises(PermanentError) as exc:
            mchd.parse_mchd(no_snils)
        assert exc.value.reason == "MCHD_INVALID" and exc.value.details["field"] == "СвУпПред"

    def test_reference_block_carries_the_exact_bytes(self):
        """mchd_reference gives the event's mchd block: number, principal ИНН/ОГРН, xml and signature in base64."""
        xml = make_xml()
        poa = mchd.parse_mchd(xml)
        ref = mchd.mchd_reference(poa, xml, b"\x30\x82sig")
        assert ref == {
            "number": NUMBER,
            "principalInn": "7701234567",
            "principalOgrn": "1027700000001",
            "xml": base64.b64encode(xml).decode(),
            "signature": base64.b64encode(b"\x30\x82sig").decode(),
        }


class TestTerms:
    def test_good_mchd_passes(self):
        """The right employee, organisation, date and power pass every term check."""
        terms(mchd.parse_mchd(make_xml()))

    def test_names_compare_without_case_or_yo(self):
        """ФИО comparison ignores case, extra spaces and ё/е, as certificates and МЧД spell them differently."""
        poa = mchd.parse_mchd(make_xml(representative=replace(EMPLOYEE, family="Пётрова")))
        terms(poa, employee_certificate=employee_cert(surname="ПЕТРОВА"))

    def test_revoked(self):
        """An МЧД whose number is in the revoked set fails MCHD_REVOKED, whatever the case of the GUID."""
        poa = mchd.parse_mchd(make_xml())
        assert reason_of(lambda: terms(poa, revoked={NUMBER.upper()})) == "MCHD_REVOKED"

    def test_expired_and_not_yet_valid(self):
        """Outside ДатаВыдДовер..СрокДейст (inclusive, Moscow dates) the МЧД fails with EXPIRED / NOT_YET_VALID."""
        poa = mchd.parse_mchd(make_xml())
        assert reason_of(lambda: terms(poa, at=datetime(2027, 1, 1, 12, tzinfo=UTC))) == "MCHD_EXPIRED"
        assert (
            reason_of(lambda: terms(poa, at=datetime(2025, 12, 31, 12, tzinfo=UTC))) == "MCHD_NOT_YET_VALID"
        )
        # 31 Dec 22:30 UTC is already 1 Jan in Moscow
        assert reason_of(lambda: terms(poa, at=datetime(2026, 12, 31, 22, 30, tzinfo=UTC))) == "MCHD_EXPIRED"
        terms(poa, at=datetime(2026, 12, 31, 20, 59, tzinfo=UTC))  # the last day still counts
        terms(poa, at=datetime(2025, 12, 31, 21, 0, tzinfo=UTC))  # 1 Jan 00:00 Moscow

    def test_other_organisation(self):
        """An МЧД from another organisation (ИНН or ОГРН) fails MCHD_WRONG_ORGANIZATION."""
        poa = mchd.parse_mchd(make_xml())
        assert reason_of(lambda: terms(poa, organization_inn="7709999999")) == "MCHD_WRONG_ORGANIZATION"
        assert reason_of(lambda: terms(poa, organization_ogrn="1027700000099")) == "MCHD_WRONG_ORGANIZATION"

    def test_other_employee(self):
        """A certificate of someone else (СНИЛС, surname, given name/patronymic or ИНН) fails MCHD_WRONG_EMPLOYEE."""
        poa = mchd.parse_mchd(make_xml())
        for cert in (
            employee_cert(snils="99999999999"),
            employee_cert(surname="Петрова"),
            employee_cert(given_name="Мария Петровна"),
            employee_cert(inn="770100000099"),
        ):
            with pytest.raises(PermanentError) as exc:
                terms(poa, employee_certificate=cert)
            assert exc.value.reason == "MCHD_WRONG_EMPLOYEE"
            assert "99999999999" not in exc.value.message and "Петрова" not in exc.value.message

    def test_powers_missing(self):
        """An МЧД granting only other powers fails MCHD_POWERS_MISSING; a configured code makes it pass."""
        poa = mchd.parse_mchd(make_xml(powers=(("02.114", "Подписание транспортной накладной"),)))
        assert reason_of(lambda: terms(poa)) == "MCHD_POWERS_MISSING"
        terms(poa, required_powers={"02.114", "EMD_REMD_SIGN"})

    def test_naive_time_is_refused(self):
        """A naive datetime is a programming error, not a silent local-time guess."""
        with pytest.raises(ValueError):
            terms(mchd.parse_mchd(make_xml()), at=datetime(2026, 6, 1))


# -- with real GOST signatures and certificates from lab.dev.pki ---------------------------------

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def pki():
    """A dev CA, the organisation head's and the employee's keys and certificates, and a good signed МЧД."""
    ca = DevCA.create("МЧД test CA")
    head_key, head_cert = ca.issue(
        subject=SubjectInfo(
            "Главврачев",
            "Пётр Петрович",
            snils="11223344595",
            inn="770100000001",
            ogrn=ORG["organization_ogrn"],
            inn_le=ORG["organization_inn"],
            org=ORG["organization_name"],
            title="Главный врач",
        )
    )
    emp_key, emp_cert = ca.issue(
        subject=SubjectInfo("Иванова", "Мария Ивановна", snils="12345678964", inn="770100000002")
    )
    xml = make_xml(issued=NOW.date().replace(day=1), valid_until=date(NOW.year + 1, 12, 31))
    signature = sign_mchd(xml, key=head_key, certificate=head_cert)
    return SimpleNamespace(
        ca=ca,
        head_key=head_key,
        head_cert=head_cert,
        emp_key=emp_key,
        emp_cert=emp_cert,
        xml=xml,
        signature=signature,
    )


def full_check(pki, xml=None, signature=None, **overrides):
    xml = pki.xml if xml is None else xml
    args = {
        "signature_der": pki.signature if signature is None else signature,
        "employee_certificate": pki.emp_cert,
        "organization_inn": ORG["organization_inn"],
        "organization_ogrn": ORG["organization_ogrn"],
        "at": NOW,
        "revoked": set(),
        "required_powers": mchd.DEFAULT_REMD_POWERS,
        **overrides,
    }
    return mchd.check_mchd(mchd.parse_mchd(xml), **args)


class TestSigned:
    def test_good_mchd_passes_with_real_certificates(self, pki):
        """A МЧД signed by the head, for the employee's certificate, passes and returns the head's signature."""
        verified = full_check(pki)
        assert verified.certificate == pki.head_cert
        full_check(pki, principal_certificates=[pki.head_cert])

    def test_tampered_mchd_fails_the_signature(self, pki):
        """Changing one byte of the signed МЧД (a later СрокДейст) breaks the principal's signature."""
        tampered = pki.xml.replace(
            f'СрокДейст="{NOW.year + 1}-12-31"'.encode(), f'СрокДейст="{NOW.year + 9}-12-31"'.encode()
        )
        assert tampered != pki.xml
        with pytest.raises(PermanentError) as exc:
            full_check(pki, xml=tampered)
        assert exc.value.reason == "MCHD_SIGNATURE_INVALID"
        assert exc.value.details["cause"] == "DIGEST_MISMATCH"

    def test_garbage_signature_fails_the_signature(self, pki):
        """A signature that is not a CMS is MCHD_SIGNATURE_INVALID, not a crash."""
        assert (
            reason_of(lambda: full_check(pki, signature=b"\x30\x03\x02\x01\x01")) == "MCHD_SIGNATURE_INVALID"
        )

    def test_mchd_signed_by_the_employee_themself_is_refused(self, pki):
        """An employee cannot give themself powers: a signature by a non-head certificate is refused."""
        own = sign_mchd(pki.xml, key=pki.emp_key, certificate=pki.emp_cert)
        assert reason_of(lambda: full_check(pki, signature=own)) == "MCHD_SIGNATURE_INVALID"

    def test_head_of_another_organisation_or_another_person_is_refused(self, pki):
        """A signer with another ОГРН, or with the right ОГРН but not the head's СНИЛС, is refused."""
        for subject in (
            SubjectInfo(
                "Чужой", "Глеб Глебович", snils="11223344595", ogrn="1027700000099", inn_le="7709999999"
            ),
            SubjectInfo(
                "Бухгалтеров",
                "Ян Янович",
                snils="55566677788",
                ogrn=ORG["organization_ogrn"],
                inn_le=ORG["organization_inn"],
            ),
        ):
            key, cert = pki.ca.issue(subject=subject)
            signature = sign_mchd(pki.xml, key=key, certificate=cert)
            assert reason_of(lambda s=signature: full_check(pki, signature=s)) == "MCHD_SIGNATURE_INVALID"

    def test_look_alike_head_certificate_is_refused_when_pinned(self, pki):
        """A certificate with the head's fields from another CA is refused once the head's certificate is pinned."""
        other_ca = DevCA.create("somebody's CA")
        key, cert = other_ca.issue(
            subject=SubjectInfo(
                "Главврачев",
                "Пётр Петрович",
                snils="11223344595",
                ogrn=ORG["organization_ogrn"],
                inn_le=ORG["organization_inn"],
            )
        )
        signature = sign_mchd(pki.xml, key=key, certificate=cert)
        full_check(pki, signature=signature)  # unpinned: the fields match (see verify_mchd_signature)
        assert (
            reason_of(lambda: full_check(pki, signature=signature, principal_certificates=[pki.head_cert]))
            == "MCHD_SIGNATURE_INVALID"
        )

    @pytest.mark.parametrize(
        ("xml_overrides", "overrides", "reason"),
        [
            ({}, {"revoked": {NUMBER}}, "MCHD_REVOKED"),
            (
                {
                    "issued": date.today() - timedelta(days=30),
                    "valid_until": date.today() - timedelta(days=2),
                },
                {},
                "MCHD_EXPIRED",
            ),
            (
                {
                    "issued": date.today() + timedelta(days=2),
                    "valid_until": date.today() + timedelta(days=30),
                },
                {},
                "MCHD_NOT_YET_VALID",
            ),
            ({}, {"organization_inn": "7709999999"}, "MCHD_WRONG_ORGANIZATION"),
            ({"powers": (("02.114", "Подписание транспортной накладной"),)}, {}, "MCHD_POWERS_MISSING"),
        ],
        ids=["revoked", "expired", "not-yet-valid", "other-organisation", "powers-missing"],
    )
    def test_each_term_failure_has_its_own_reason(self, pki, xml_overrides, overrides, reason):
        """A МЧД properly signed by the head but broken in one term fails with that term's reason."""
        xml = make_xml(
            **{
                "issued": NOW.date().replace(day=1),
                "valid_until": date(NOW.year + 1, 12, 31),
                **xml_overrides,
            }
        )
        signature = sign_mchd(xml, key=pki.head_key, certificate=pki.head_cert)
        assert reason_of(lambda: full_check(pki, xml=xml, signature=signature, **overrides)) == reason

    def test_other_employee_certificate(self, pki):
        """A real certificate of another employee of the same organisation is MCHD_WRONG_EMPLOYEE."""
        _, other = pki.ca.issue(subject=SubjectInfo("Сидорова", "Анна Павловна", snils="98765432100"))
        assert reason_of(lambda: full_check(pki, employee_certificate=other)) == "MCHD_WRONG_EMPLOYEE"

    def test_a_passed_mchd_still_fails_once_the_heads_certificate_has_expired(self, pki):
        """The principal's signature verified once is still refused at a moment after the head's certificate expired."""
        full_check(pki)
        later = pki.head_cert.not_after + timedelta(days=1)
        with pytest.raises(PermanentError) as exc:
            full_check(pki, at=later)
        assert exc.value.reason == "MCHD_SIGNATURE_INVALID"
        assert exc.value.details["cause"] == "CERT_EXPIRED"
