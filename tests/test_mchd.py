"""МЧД (EMCHD_1): parsing, the checks against organisation / employee / time / powers, and the principal's signature."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from lxml import etree

from services import mchd
from services.devmchd import Person, build_mchd
from services.errors import PermanentError

ORG = {"organization_name": "ГБУЗ «Городская поликлиника № 1»", "organization_inn": "7701234567",
       "organization_ogrn": "1027700000001", "organization_kpp": "770101001"}
HEAD = Person(family="Главврачев", given="Пётр", patronymic="Петрович", snils="112-233-445 95",
              inn="770100000001", position="Главный врач")
EMPLOYEE = Person(family="Иванова", given="Мария", patronymic="Ивановна", snils="123-456-789 64",
                  inn="770100000002", position="Заместитель главного врача")
NUMBER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def make_xml(**overrides) -> bytes:
    args = {**ORG, "head": HEAD, "representative": EMPLOYEE, "issued": date(2026, 1, 1),
            "valid_until": date(2026, 12, 31), "number": NUMBER, **overrides}
    return build_mchd(**args)


def employee_cert(**overrides):
    """The employee's certificate fields as services.certificates.Certificate exposes them."""
    fields = {"snils": "12345678964", "surname": "Иванова", "given_name": "Мария Ивановна", "inn": "770100000002"}
    return SimpleNamespace(**{**fields, **overrides})


def terms(poa, **overrides):
    args = {"employee_certificate": employee_cert(), "organization_inn": ORG["organization_inn"],
            "organization_ogrn": ORG["organization_ogrn"], "at": AT, "revoked": set(),
            "required_powers": mchd.DEFAULT_REMD_POWERS, **overrides}
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
        assert (poa.principal_inn, poa.principal_ogrn, poa.principal_kpp) == ("7701234567", "1027700000001", "770101001")
        assert poa.principal_name == ORG["organization_name"]
        assert (poa.representative_snils, poa.representative_inn) == ("12345678964", "770100000002")
        assert (poa.representative_family, poa.representative_given, poa.representative_patronymic) == \
            ("Иванова", "Мария", "Ивановна")
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

    @pytest.mark.parametrize("data", [
        b"not xml",
        b"<Dover xmlns='urn://x-artefacts/EMCHD_1' />",
        b'<!DOCTYPE x><x/>',
    ], ids=["garbage", "wrong-root", "doctype"])
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
        assert ref == {"number": NUMBER, "principalInn": "7701234567", "principalOgrn": "1027700000001",
                       "xml": base64.b64encode(xml).decode(), "signature": base64.b64encode(b"\x30\x82sig").decode()}

    def test_power_codes_are_configurable(self, monkeypatch):
        """Accepted power codes come from the argument, else EMD_MCHD_POWERS, else the default set."""
        assert mchd.power_codes(" A1, B2 ,,") == frozenset({"A1", "B2"})
        monkeypatch.setenv("EMD_MCHD_POWERS", "X9")
        assert mchd.power_codes() == frozenset({"X9"})
        monkeypatch.delenv("EMD_MCHD_POWERS")
        assert mchd.power_codes() == mchd.DEFAULT_REMD_POWERS


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
        assert reason_of(lambda: terms(poa, at=datetime(2025, 12, 31, 12, tzinfo=UTC))) == "MCHD_NOT_YET_VALID"
        # 31 Dec 22:30 UTC is already 1 Jan in Moscow
        assert reason_of(lambda: terms(poa, at=datetime(2026, 12, 31, 22, 30, tzinfo=UTC))) == "MCHD_EXPIRED"
        terms(poa, at=datetime(2026, 12, 31, 20, 59, tzinfo=UTC))  # the last day still counts
        terms(poa, at=datetime(2025, 12, 31, 21, 0, tzinfo=UTC))   # 1 Jan 00:00 Moscow

    def test_other_organisation(self):
        """An МЧД from another organisation (ИНН or ОГРН) fails MCHD_WRONG_ORGANIZATION."""
        poa = mchd.parse_mchd(make_xml())
        assert reason_of(lambda: terms(poa, organization_inn="7709999999")) == "MCHD_WRONG_ORGANIZATION"
        assert reason_of(lambda: terms(poa, organization_ogrn="1027700000099")) == "MCHD_WRONG_ORGANIZATION"

    def test_other_employee(self):
        """A certificate of someone else (СНИЛС, surname, given name/patronymic or ИНН) fails MCHD_WRONG_EMPLOYEE."""
        poa = mchd.parse_mchd(make_xml())
        for cert in (employee_cert(snils="99999999999"), employee_cert(surname="Петрова"),
                     employee_cert(given_name="Мария Петровна"), employee_cert(inn="770100000099")):
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
