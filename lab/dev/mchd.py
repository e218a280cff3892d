"""Test / development МЧД: build an EMCHD_1-shaped power of attorney for an organisation and an employee.

The XML follows the element names :mod:`services.crypto.mchd` parses (its docstring says which are confirmed
and which are our reading of the unavailable official XSD). It is *not* a real ФНС МЧД: it is not in
the ФНС registry and its power codes are ours. Sign it with the head's key via
:func:`sign_mchd` (``services.crypto.cades``) to get the detached signature that travels with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from lxml import etree

from services.crypto.mchd import DEFAULT_REMD_POWERS, EMCHD_NS, EMCHD_VERSION

__all__ = ["Person", "build_mchd", "sign_mchd"]


@dataclass(frozen=True)
class Person:
    """A natural person as an МЧД names them (head of the principal, or the representative)."""

    family: str
    given: str
    snils: str  # "123-456-789 01" or 11 digits
    patronymic: str | None = None
    inn: str | None = None  # 12 digits
    position: str | None = None


def _person(parent: etree._Element, tag: str, person: Person) -> etree._Element:
    m = f"{{{EMCHD_NS}}}"
    attrs = {"СНИЛС": person.snils}
    if person.inn:
        attrs["ИННФЛ"] = person.inn
    if person.position:
        attrs["Должность"] = person.position
    el = etree.SubElement(parent, m + tag, attrs)
    fio = {"Фамилия": person.family, "Имя": person.given}
    if person.patronymic:
        fio["Отчество"] = person.patronymic
    etree.SubElement(etree.SubElement(el, m + "СведФЛ"), m + "ФИО", fio)
    return el


def build_mchd(
    *,
    organization_name: str,
    organization_inn: str,
    organization_ogrn: str,
    head: Person,
    representative: Person,
    issued: date | None = None,
    valid_until: date | None = None,
    powers: tuple[tuple[str, str], ...] | None = None,
    organization_kpp: str | None = None,
    number: str | None = None,
    internal_number: str | None = None,
) -> bytes:
    """EMCHD_1 XML bytes (UTF-8) giving ``representative`` ``powers`` for the organisation.

    Defaults: ``issued`` today, ``valid_until`` a year later, ``powers`` the default РЭМД code
    (:data:`services.crypto.mchd.DEFAULT_REMD_POWERS`), ``number`` a fresh GUID.
    """
    issued = issued or date.today()
    valid_until = valid_until or issued + timedelta(days=365)
    number = (number or str(uuid.uuid4())).lower()
    if powers is None:
        powers = tuple(
            (code, "Подписание электронных медицинских документов для регистрации в РЭМД")
            for code in sorted(DEFAULT_REMD_POWERS)
        )
    m = f"{{{EMCHD_NS}}}"
    root = etree.Element(
        m + "Доверенность",
        nsmap={None: EMCHD_NS},
        attrib={
            "ВерсФорм": EMCHD_VERSION,
            "ПрЭлФорм": "00000000",
            "ИдФайл": f"ON_EMCHD_{issued.strftime('%Y%m%d')}_{number}",
        },
    )
    dover = etree.SubElement(etree.SubElement(root, m + "Документ"), m + "Довер")
    sv = etree.SubElement(
        dover,
        m + "СвДов",
        {
            "ВидДовер": "1",
            "ПрПередов": "1",
            "ВнНомДовер": internal_number or f"DEV-{number[:8]}",
            "НомДовер": number,
            "ДатаВыдДовер": issued.isoformat(),
            "СрокДейст": valid_until.isoformat(),
        },
    )
    etree.SubElement(sv, m + "СведСист").text = f"https://m4d.nalog.gov.ru/emchd/check-status?guid={number}"

    principal = etree.SubElement(
        etree.SubElement(etree.SubElement(dover, m + "СвДоверит", ТипДоверит="1"), m + "Доверит"),
        m + "РосОргДовер",
        ЕИОУК="0",
        ЕИОФЛ="1",
        ЕИОИП="0",
    )
    org = {"НаимОрг": organization_name, "ИННЮЛ": organization_inn, "ОГРН": organization_ogrn}
    if organization_kpp:
        org["КПП"] = organization_kpp
    etree.SubElement(principal, m + "СвРосОрг", org)
    _person(etree.SubElement(principal, m + "ЛицоБезДов", ПолнЮЛ="1"), "СвФЛ", head)

    _person(
        etree.SubElement(etree.SubElement(dover, m + "СвУпПред", ТипПред="1"), m + "Пред"),
        "СведФизЛ",
        representative,
    )
    granted = etree.SubElement(dover, m + "СвПолн", ТипПолн="0", ПрСовмПолн="1")
    for code, name in powers:
        etree.SubElement(granted, m + "МашПолн", КодПолн=code, НаимПолн=name)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def sign_mchd(xml: bytes, *, key: Any, certificate: Any, **options: Any) -> bytes:
    """The head's detached CMS signature (DER) over the exact МЧД bytes, made by ``services.crypto.cades``."""
    from services.crypto.cades import sign_detached

    return sign_detached(xml, key=key, certificate=certificate, **options)
