"""МЧД — the machine-readable power of attorney (ФНС format 003, ``EMCHD_1``): parse, verify, check.

With an МЧД, an employee's own qualified certificate signs "on behalf of the organisation": the
organisation (the *principal*, Доверитель) gives the employee (the *representative*, Представитель)
coded powers for a period, and its head signs the МЧД XML with a separate detached CMS signature.
Before the signer worker uses an employee certificate as the organisation signature, it checks here
that the МЧД really says so.

Element names. The official XSD (``ON_EMCHD_1_928_00_01_01_01.xsd``, ГНИВЦ ФНС) is not available to
this project, so:

* confirmed (several public МЧД parsers, validators and generators agree;
  docs/protocol.md#power-of-attorney):
  root ``Доверенность`` in ``urn://x-artefacts/EMCHD_1`` with ``ВерсФорм="EMCHD_1"``, ``ПрЭлФорм``,
  ``ИдФайл``; ``Документ/Довер/СвДов`` with ``НомДовер`` (GUID), ``ДатаВыдДовер``, ``СрокДейст``,
  ``ВнНомДовер``, ``ВидДовер``, ``ПрПередов``, ``СведСист``; powers as ``СвПолн/МашПолн`` with
  ``КодПолн``/``НаимПолн``;
* our reading (public test fixtures said to pass the official XSD, not the XSD itself): the principal
  ``Довер/СвДоверит/Доверит/РосОргДовер/СвРосОрг`` (``НаимОрг``, ``ИННЮЛ``, ``КПП``, ``ОГРН``) and its
  head ``РосОргДовер/ЛицоБезДов/СвФЛ`` (``СНИЛС``, ``ИННФЛ``, ``Должность``, ``СведФЛ/ФИО`` with
  ``Фамилия``/``Имя``/``Отчество``); the representative ``Довер/СвУпПред/Пред/СведФизЛ`` (same
  attributes). The parser therefore looks these up loosely (the first element under ``СвДоверит``
  carrying ``ИННЮЛ``, the first under ``СвУпПред`` carrying ``СНИЛС``), so a slightly different nesting
  in the official schema still parses.

Power codes: the ФНС classifier of powers is not available here either. :data:`DEFAULT_REMD_POWERS`
holds our placeholder code for "sign electronic medical documents for РЭМД"; :func:`check_mchd` takes
the accepted codes as ``required_powers``, which the pipeline reads from the organisations file
(``mchd_required_powers``, default this set).

Reasons (``PermanentError.reason``) raised by :func:`parse_mchd` / :func:`check_mchd`::

    MCHD_INVALID              not XML, not EMCHD_1, or a required field missing / malformed
    MCHD_SIGNATURE_INVALID    the principal's detached signature over the exact МЧД bytes does not
                              verify, or its signer is not the principal's head (ОГРН/ИНН/СНИЛС)
    MCHD_REVOKED              the МЧД number is in the revoked set
    MCHD_NOT_YET_VALID        checked before ДатаВыдДовер
    MCHD_EXPIRED              checked after СрокДейст (the whole last day counts, Moscow time)
    MCHD_WRONG_ORGANIZATION   principal ИНН/ОГРН is not the organisation the document is signed for
    MCHD_WRONG_EMPLOYEE       representative СНИЛС / ФИО (/ ИНН when both known) ≠ the employee certificate
    MCHD_POWERS_MISSING       none of the accepted power codes is granted
"""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from lxml import etree

from producer.errors import PermanentError
from producer.text import digits
from producer.xmlsafe import parse_xml
from services.logs import get_logger

__all__ = [
    "DEFAULT_REMD_POWERS",
    "EMCHD_NS",
    "MOSCOW",
    "Power",
    "PowerOfAttorney",
    "check_mchd",
    "check_mchd_terms",
    "mchd_reference",
    "parse_mchd",
    "verify_mchd_signature",
]

EMCHD_NS = "urn://x-artefacts/EMCHD_1"
EMCHD_VERSION = "EMCHD_1"
#: our placeholder code for "подписание ЭМД для регистрации в РЭМД" (the ФНС classifier is not available here)
DEFAULT_REMD_POWERS: frozenset[str] = frozenset({"EMD_REMD_SIGN"})
#: МЧД dates are calendar dates in Russia; Moscow has had no DST since 2014
MOSCOW = timezone(timedelta(hours=3), "MSK")

#: the largest МЧД we parse (real ones are a few KB)
MAX_MCHD_BYTES = 1_000_000

_NS = {"m": EMCHD_NS}


log = get_logger(__name__)  # lazy (services.logs): it follows the configure() made at start-up


@dataclass(frozen=True)
class Power:
    code: str
    name: str | None = None


@dataclass(frozen=True)
class PowerOfAttorney:
    """What an EMCHD_1 МЧД says, plus its exact bytes (the principal's signature is over those)."""

    number: str  # НомДовер, a GUID, lower case
    issued: date
    valid_until: date
    principal_inn: str
    principal_ogrn: str
    principal_name: str
    representative_snils: str = field(repr=False)  # 11 digits
    representative_family: str = field(repr=False)
    representative_given: str = field(repr=False)
    representative_patronymic: str | None = field(repr=False)
    representative_inn: str | None = field(repr=False)
    powers: tuple[Power, ...]
    principal_kpp: str | None = None
    head_snils: str | None = field(default=None, repr=False)
    head_inn: str | None = field(default=None, repr=False)
    head_family: str | None = field(default=None, repr=False)
    head_given: str | None = field(default=None, repr=False)
    head_patronymic: str | None = field(default=None, repr=False)
    internal_number: str | None = None
    file_id: str | None = None
    xml: bytes = field(default=b"", repr=False, compare=False)

    @property
    def power_codes(self) -> frozenset[str]:
        return frozenset(p.code for p in self.powers)


# -- parsing ----------------------------------------------------------------------------------------


def _invalid(message: str, **details: Any) -> PermanentError:
    return PermanentError(f"МЧД: {message}", reason="MCHD_INVALID", **details)


def _date(value: str | None, name: str) -> date:
    if not value:
        raise _invalid(f"{name} is missing", field=name)
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise _invalid(f"{name} is not a date: {value!r}", field=name) from None


def _find_with(parent: etree._Element | None, attribute: str) -> etree._Element | None:
    if parent is None:
        return None
    for el in parent.iter(f"{{{EMCHD_NS}}}*"):
        if el.get(attribute):
            return el
    return None


def _fio(person: etree._Element | None) -> tuple[str | None, str | None, str | None]:
    fio = None if person is None else person.find(".//m:ФИО", _NS)
    if fio is None:
        return None, None, None
    return fio.get("Фамилия"), fio.get("Имя"), fio.get("Отчество") or None


def _required(value: str | None, name: str, lengths: tuple[int, ...] | None = None) -> str:
    if not value or not value.strip():
        raise _invalid(f"{name} is missing", field=name)
    value = value.strip()
    if lengths is not None:
        value = digits(value) if name.endswith("СНИЛС") else value
        if not value.isdigit() or len(value) not in lengths:
            raise _invalid(f"{name} must be {' or '.join(map(str, lengths))} digits", field=name)
    return value


def parse_mchd(xml_bytes: bytes) -> PowerOfAttorney:
    """Parse EMCHD_1 bytes (through ``producer.xmlsafe``) or raise ``PermanentError(MCHD_INVALID)``."""
    try:
        root = parse_xml(xml_bytes, max_bytes=MAX_MCHD_BYTES)
    except PermanentError as exc:
        raise _invalid(f"not acceptable XML: {exc.message}", cause=exc.reason) from None
    if root.tag != f"{{{EMCHD_NS}}}Доверенность":
        raise _invalid(f"root element is {root.tag!r}, expected Доверенность in {EMCHD_NS}")
    if root.get("ВерсФорм") != EMCHD_VERSION:
        raise _invalid(f"ВерсФорм is {root.get('ВерсФорм')!r}, expected {EMCHD_VERSION}")
    dover = root.find("m:Документ/m:Довер", _NS)
    sv = None if dover is None else dover.find("m:СвДов", _NS)
    if dover is None or sv is None:
        raise _invalid("Документ/Довер/СвДов is missing", field="СвДов")
    number = _required(sv.get("НомДовер"), "НомДовер").lower()
    try:
        uuid.UUID(number)
    except ValueError:
        raise _invalid(f"НомДовер is not a GUID: {number!r}", field="НомДовер") from None
    issued = _date(sv.get("ДатаВыдДовер"), "ДатаВыдДовер")
    valid_until = _date(sv.get("СрокДейст"), "СрокДейст")
    if valid_until < issued:
        raise _invalid("СрокДейст is before ДатаВыдДовер", field="СрокДейст")

    principal_part = dover.find("m:СвДоверит", _NS)
    org = _find_with(principal_part, "ИННЮЛ")
    if principal_part is None or org is None:
        raise _invalid(
            "the principal organisation (element with ИННЮЛ under СвДоверит) is missing", field="СвРосОрг"
        )
    head = _find_with(principal_part.find(".//m:ЛицоБезДов", _NS), "СНИЛС")
    head_family, head_given, head_patronymic = _fio(head)

    rep = _find_with(dover.find("m:СвУпПред", _NS), "СНИЛС")
    if rep is None:
        raise _invalid("the representative (element with СНИЛС under СвУпПред) is missing", field="СвУпПред")
    family, given, patronymic = _fio(rep)

    powers = tuple(
        Power(code=(p.get("КодПолн") or "").strip(), name=p.get("НаимПолн"))
        for p in dover.findall("m:СвПолн/m:МашПолн", _NS)
        if (p.get("КодПолн") or "").strip()
    )
    rep_inn = rep.get("ИННФЛ")
    return PowerOfAttorney(
        number=number,
        issued=issued,
        valid_until=valid_until,
        principal_inn=_required(org.get("ИННЮЛ"), "ИННЮЛ", (10,)),
        principal_ogrn=_required(org.get("ОГРН"), "ОГРН", (13,)),
        principal_name=_required(org.get("НаимОрг"), "НаимОрг"),
        principal_kpp=org.get("КПП"),
        representative_snils=_required(rep.get("СНИЛС"), "Представитель СНИЛС", (11,)),
        representative_family=_required(family, "Представитель Фамилия"),
        representative_given=_required(given, "Представитель Имя"),
        representative_patronymic=patronymic,
        representative_inn=_required(rep_inn, "Представитель ИННФЛ", (12,)) if rep_inn else None,
        powers=powers,
        head_snils=digits(head.get("СНИЛС")) if head is not None else None,
        head_inn=head.get("ИННФЛ") if head is not None else None,
        head_family=head_family,
        head_given=head_given,
        head_patronymic=head_patronymic,
        internal_number=sv.get("ВнНомДовер"),
        file_id=root.get("ИдФайл"),
        xml=bytes(xml_bytes),
    )


# -- checking ---------------------------------------------------------------------------------------


def _norm_name(value: str | None) -> str:
    return " ".join((value or "").replace("ё", "е").replace("Ё", "Е").casefold().split())


def _signature_error(message: str, **details: Any) -> PermanentError:
    return PermanentError(f"МЧД signature: {message}", reason="MCHD_SIGNATURE_INVALID", **details)


def verify_mchd_signature(
    poa: PowerOfAttorney,
    signature_der: bytes,
    *,
    at: datetime | None = None,
    principal_certificates: Iterable[Any] | None = None,
) -> Any:
    """Verify the principal's detached CMS over ``poa.xml`` and that its signer is the principal's head.

    ``principal_certificates``: when given, the signer's certificate must be one of them. Without it,
    the certificate embedded in the CMS is taken at its word (ОГРН/ИНН/СНИЛС must match, but its chain
    to an accredited CA is not built here, as in ``services.crypto.cades``): deployments should pin the
    heads' certificates. Returns the ``services.crypto.cades.VerifiedSignature``; raises ``MCHD_SIGNATURE_INVALID``.
    """
    from services.crypto.cades import (
        check_certificate,  # the CMS layer is only needed when a signature is checked
    )

    try:
        verified = _principal_signature(poa.xml, signature_der)
        check_certificate(verified, at=at)
    except PermanentError as exc:
        raise _signature_error(f"does not verify: {exc.message}", cause=exc.reason) from None
    cert = verified.certificate
    if principal_certificates is not None and cert not in list(principal_certificates):
        raise _signature_error("the signer's certificate is not one of the pinned principal certificates")
    ogrn = getattr(cert, "ogrn", None)
    inn_le = getattr(cert, "inn_le", None)
    if ogrn != poa.principal_ogrn:
        raise _signature_error("the signer's certificate is not the principal organisation's (ОГРН differs)")
    if inn_le and inn_le != poa.principal_inn:
        raise _signature_error(
            "the signer's certificate is not the principal organisation's (ИНН ЮЛ differs)"
        )
    if poa.head_snils and digits(getattr(cert, "snils", None)) != poa.head_snils:
        raise _signature_error("the signer is not the head named in the МЧД (СНИЛС differs)")
    return verified


@functools.lru_cache(maxsize=64)
def _principal_signature(xml: bytes, signature_der: bytes) -> Any:
    """The time-independent part of the principal's signature, verified once per (МЧД, signature) bytes.

    The signer checks the same configured МЧД for every document; the GOST verification and the CMS
    parsing need not be repeated (a failure is not cached, and the certificate's validity at the moment
    of use is checked on every call by :func:`verify_mchd_signature`).
    """
    from services.crypto.cades import verify_signature

    return verify_signature(xml, signature_der)


def check_mchd(
    poa: PowerOfAttorney,
    *,
    signature_der: bytes,
    employee_certificate: Any,
    organization_inn: str,
    organization_ogrn: str,
    at: datetime | None = None,
    revoked: Iterable[str] = (),
    required_powers: Iterable[str] = DEFAULT_REMD_POWERS,
    principal_certificates: Iterable[Any] | None = None,
) -> Any:
    """Check that ``poa`` lets ``employee_certificate`` sign for the organisation at time ``at``.

    :param signature_der: the principal's detached CMS signature over the exact МЧД bytes.
    :param employee_certificate: a ``services.crypto.certificates.Certificate`` (``snils``, ``surname``,
        ``given_name`` = "Имя Отчество", optional ``inn``).
    :param organization_inn / organization_ogrn: the organisation the document is signed for.
    :param at: the moment of signing (default now, UTC); dates are compared in Moscow time.
    :param revoked: МЧД numbers known to be revoked (case-insensitive GUIDs); default none.
    :param required_powers: accepted power codes: the МЧД must grant at least one of them
        (default :data:`DEFAULT_REMD_POWERS`).
    :param principal_certificates: pin the principal heads' certificates (default None: any
        certificate with the principal's ОГРН/ИНН and the head's СНИЛС; see :func:`verify_mchd_signature`).

    The signature is checked first (:func:`verify_mchd_signature`), then :func:`check_mchd_terms`;
    the first failure raises ``PermanentError`` with its reason (see the module docstring).
    Returns the verified principal signature.
    """
    at = _aware(at)
    verified = verify_mchd_signature(poa, signature_der, at=at, principal_certificates=principal_certificates)
    check_mchd_terms(
        poa,
        employee_certificate=employee_certificate,
        organization_inn=organization_inn,
        organization_ogrn=organization_ogrn,
        at=at,
        revoked=revoked,
        required_powers=required_powers,
    )
    return verified


def _aware(at: datetime | None) -> datetime:
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("МЧД checks need an aware datetime for 'at'")
    return at


def check_mchd_terms(
    poa: PowerOfAttorney,
    *,
    employee_certificate: Any,
    organization_inn: str,
    organization_ogrn: str,
    at: datetime | None = None,
    revoked: Iterable[str] = (),
    required_powers: Iterable[str] = DEFAULT_REMD_POWERS,
) -> None:
    """What :func:`check_mchd` checks after the signature, in order: revocation, validity window,
    organisation, employee, powers (parameters as there)."""
    at = _aware(at)
    if poa.number in {r.strip().lower() for r in revoked}:
        raise PermanentError(f"МЧД {poa.number} is revoked", reason="MCHD_REVOKED", number=poa.number)

    today = at.astimezone(MOSCOW).date()
    if today < poa.issued:
        raise PermanentError(
            f"МЧД {poa.number} is valid from {poa.issued.isoformat()}",
            reason="MCHD_NOT_YET_VALID",
            number=poa.number,
        )
    if today > poa.valid_until:
        raise PermanentError(
            f"МЧД {poa.number} expired on {poa.valid_until.isoformat()}",
            reason="MCHD_EXPIRED",
            number=poa.number,
        )

    if poa.principal_inn != organization_inn.strip() or poa.principal_ogrn != organization_ogrn.strip():
        raise PermanentError(
            f"МЧД {poa.number} is issued by another organisation (ИНН/ОГРН differ)",
            reason="MCHD_WRONG_ORGANIZATION",
            number=poa.number,
        )

    cert = employee_certificate
    problems = []
    if digits(getattr(cert, "snils", None)) != poa.representative_snils:
        problems.append("СНИЛС")
    if _norm_name(getattr(cert, "surname", None)) != _norm_name(poa.representative_family):
        problems.append("фамилия")
    given = " ".join(p for p in (poa.representative_given, poa.representative_patronymic) if p)
    if _norm_name(getattr(cert, "given_name", None)) != _norm_name(given):
        problems.append("имя/отчество")
    cert_inn = getattr(cert, "inn", None)
    if cert_inn and poa.representative_inn and cert_inn != poa.representative_inn:
        problems.append("ИНН")
    if problems:
        # which fields differ, never their values: they are personal data
        raise PermanentError(
            f"МЧД {poa.number} is for another person: {', '.join(problems)} differ",
            reason="MCHD_WRONG_EMPLOYEE",
            number=poa.number,
            fields=",".join(problems),
        )

    accepted = frozenset(required_powers)
    if not accepted & poa.power_codes:
        raise PermanentError(
            f"МЧД {poa.number} grants none of the accepted powers {sorted(accepted)} "
            f"(it grants {sorted(poa.power_codes)})",
            reason="MCHD_POWERS_MISSING",
            number=poa.number,
        )
    log.info("mchd_accepted", number=poa.number, valid_until=poa.valid_until.isoformat())


def mchd_reference(poa: PowerOfAttorney, xml: bytes | None = None, signature: bytes = b"") -> dict[str, str]:
    """The ``mchd`` block of ``signatures.organization`` in ``emd.document.signed`` (docs/architecture.md)."""
    xml = poa.xml if xml is None else xml
    return {
        "number": poa.number,
        "principalInn": poa.principal_inn,
        "principalOgrn": poa.principal_ogrn,
        "xml": base64.b64encode(xml).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
