"""The checks РЭМД runs on a registration, in two stages (steps 2 and 6 of
``docs/protocol.md#registration-flow``).

``check_request`` — the coarse structural check answered synchronously (an error here ends the
exchange: no file pull, no callback). ``check_document`` — the full check after the file was pulled
from the МИС: every CMS signature over exactly those bytes, certificate dates, signing-time order,
and the cross-checks between the request and the СЭМД header (``producer.cda.extract``).

Each failure is a ``services.remd.soap.RemdError`` with a real НСИ 1.2.643.5.1.13.13.99.2.305 code. Where
the classifier has no dedicated code for a cross-check (request vs. СЭМД header for localUid, kind,
organisation, creation time and patient; signing-time order) the emulator answers VALIDATION_ERROR /
SIGNATURE_VERIFICATION_ERROR with a message naming the field, which is how РЭМД reports them in
practice [P]. Those choices live in the constants below. What is *not* checked (no registry data
here): ФРМР/ФРМО/ГИП look-ups, НСИ display names, XSD/Schematron, certificate chains and revocation.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms

from producer.cda import CdaMetadata, NotCda, extract
from producer.errors import PermanentError
from producer.nsi import kind_by_code
from producer.text import digits
from producer.xmlsafe import parse_xml
from services.crypto import cades, gost
from services.crypto.certificates import Certificate, certificate_from_der
from services.remd.messages import Signer
from services.remd.soap import Registration, RemdError

__all__ = ["CLOCK_SKEW", "check_document", "check_request", "cross_check", "parse_time"]

#: tolerated difference between the МИС's clock and ours, seconds (signing times vs. arrival, creation time)
CLOCK_SKEW = 120.0

HEADER_MISMATCH = "VALIDATION_ERROR"  # request ≠ СЭМД header (no dedicated code in .305)
SIGNING_ORDER = "SIGNATURE_VERIFICATION_ERROR"  # doctor ≤ organisation ≤ arrival violated

# services.crypto.cades reasons → РЭМД codes
_CADES_TO_REMD = {
    "SIGNATURE_DECODING_ERROR": "SIGNATURE_DECODING_ERROR",
    "MULTIPLE_SIGNERS": "MULTIPLE_SIGNERS",
    "NO_END_ENTITY_CERTIFICATE": "NO_END_ENTITY_CERTIFICATE",
    "UNKNOWN_ALGORITHM": "UNKNOWN_ALGORITHM",
    "NO_SIGNED_ATTRIBUTES": "WRONG_SIGNATURE_FORMAT",
    "DIGEST_MISMATCH": "DIGEST_MISMATCH",
    "SIGNATURE_INVALID": "SIGNATURE_VERIFICATION_ERROR",
    "ESS_CERT_MISSING": "WRONG_SIGNATURE_FORMAT",
    "ESS_CERT_MISMATCH": "SIGNATURE_VERIFICATION_ERROR",
    "NO_SIGNING_TIME": "WRONG_SIGNATURE_FORMAT",
    "CERT_NOT_YET_VALID": "SIGNATURE_VERIFICATION_ERROR",
    "CERT_EXPIRED": "SIGNATURE_VERIFICATION_ERROR",
    "INVALID_CERT_KEY_USAGE": "INVALID_CERT_KEY_USAGE",
}


def parse_time(value: str | None) -> dt.datetime | None:
    """An ISO 8601 date-time with offset (``2026-11-22T09:30:00+03:00``), else None."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold().replace("ё", "е") == (b or "").strip().casefold().replace("ё", "е")


# --- stage 1: synchronous ----------------------------------------------------------------------


def check_request(reg: Registration, *, now: dt.datetime | None = None) -> list[RemdError]:
    """The coarse checks answered synchronously (step 2 of docs/protocol.md#registration-flow)."""
    now = now or dt.datetime.now(dt.UTC)
    errors: list[RemdError] = []
    created = parse_time(reg.creation_date_time)
    if created is None:
        errors.append(
            RemdError(
                "VALIDATION_ERROR",
                f"Дата создания документа [{reg.creation_date_time}] "
                f"не соответствует формату dateTime со смещением",
            )
        )
    elif created > now + dt.timedelta(seconds=CLOCK_SKEW):
        errors.append(
            RemdError(
                "WRONG_CREATION_DATE",
                f"Дата создания документа [{reg.creation_date_time}] позже даты регистрации",
            )
        )
    kind = kind_by_code(reg.kind)
    if kind is not None and created is not None and not kind.registrable_on(created.date()):
        errors.append(
            RemdError(
                "NO_DOCUMENT_KIND_ON_DATE",
                f"Вид документа [{reg.kind}] не действует на дату создания [{created.date()}]",
            )
        )
    if not reg.personal_signatures:
        errors.append(RemdError("NO_SIGNATURE", "Документ не содержит подписей"))
    snils = reg.patient.snils
    if snils is not None and (not snils.isdigit() or len(snils) != 11):
        errors.append(RemdError("VALIDATION_ERROR", "СНИЛС пациента должен состоять из 11 цифр"))
    if kind is not None and kind.requires_patient_snils and not snils:
        errors.append(RemdError("NO_SNILS", f"Для вида документа [{reg.kind}] обязателен СНИЛС пациента"))
    for sign in reg.personal_signatures:
        if not sign.signer.snils:
            errors.append(RemdError("INVALID_DOCTOR_SNILS", "В запросе не указан СНИЛС сотрудника"))
    if (
        kind is not None
        and kind.organization_signature is not None
        and kind.organization_signature != (reg.org_signature is not None)
    ):
        errors.append(
            RemdError(
                "ORG_SIGNATURE_OCCURRENCE_MISMATCH",
                f"Наличие подписи МО не соответствует требованиям вида документа [{reg.kind}]",
            )
        )
    return errors


# --- stage 2: after the file pull --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Inspected:
    """What a CMS says before anything is verified (to compare digests and order times)."""

    label: str
    cms_der: bytes
    personal: bool
    snils: str | None
    digest_oid: str | None = None
    message_digest: bytes | None = None
    signing_time: dt.datetime | None = None
    certificate: Certificate | None = None
    parsed: cms.ContentInfo | None = None  #: this check's own parse, handed on to the verification


def _inspect(label: str, cms_der: bytes, *, personal: bool, snils: str | None) -> _Inspected | RemdError:
    try:
        info = cms.ContentInfo.load(cms_der, strict=True)
        sd = info["content"]
        signer_infos = list(sd["signer_infos"])
    except (ValueError, TypeError, KeyError) as exc:
        return RemdError("SIGNATURE_DECODING_ERROR", f"Подпись {label} не удалось декодировать: {exc}")
    if len(signer_infos) != 1:
        return RemdError("MULTIPLE_SIGNERS", f"В контейнере подписи {label} подписантов: {len(signer_infos)}")
    si = signer_infos[0]
    digest = when = None
    try:
        for attr in si["signed_attrs"]:
            if attr["type"].dotted == "1.2.840.113549.1.9.4":
                digest = attr["values"][0].native
            elif attr["type"].dotted == "1.2.840.113549.1.9.5":
                when = attr["values"][0].native
        cert = None
        sid = si["sid"]
        for choice in sd["certificates"] or ():
            if choice.name == "certificate":
                candidate = certificate_from_der(choice.chosen.dump())
                if (
                    sid.name == "issuer_and_serial_number"
                    and candidate.serial_number == sid.chosen["serial_number"].native
                ):
                    cert = candidate
        digest_oid = si["digest_algorithm"]["algorithm"].dotted
    except (ValueError, TypeError, KeyError, PermanentError) as exc:
        return RemdError("SIGNATURE_DECODING_ERROR", f"Подпись {label} не удалось декодировать: {exc}")
    return _Inspected(label, cms_der, personal, snils, digest_oid, digest, when, cert, info)


def check_document(
    reg: Registration,
    data: bytes,
    *,
    arrival: dt.datetime,
    now: dt.datetime | None = None,
    accredited: Sequence[Certificate] = (),
) -> list[RemdError]:
    """The full checks of the pulled file against the request (step 6 of docs/protocol.md#registration-flow);
    [] means register it.

    ``accredited``: the CAs a signer's certificate must be issued by (РЭМД accepts only accredited УЦ);
    empty = any issuer, as a sandbox without a trust list.
    """
    now = now or dt.datetime.now(dt.UTC)

    # 1. signatures: decodable, one signer each, one digest over exactly these bytes
    inspected, errors = _inspect_all(reg)
    if errors:
        return errors
    computed = _file_digests(inspected, data)
    if isinstance(computed, RemdError):
        return [computed]

    # 2. the СЭМД itself
    meta = _read_cda(data)
    if isinstance(meta, RemdError):
        return [meta]
    created = parse_time(reg.creation_date_time) or meta.creation_time

    # 3. each signature: certificate dates, then the cryptography
    for s in inspected:
        error = _signature_error(s, data, computed, created=created, now=now, accredited=accredited)
        if error is not None:
            errors.append(error)
    if errors:
        return errors

    # 4. signing-time order: every doctor ≤ the organisation ≤ the request's arrival
    errors += _signing_order(inspected, arrival)

    # 5. the request against the СЭМД header
    errors += cross_check(reg, meta, created)
    return errors


def _inspect_all(reg: Registration) -> tuple[list[_Inspected], list[RemdError]]:
    """Every signature of the request decoded (personal ones first, then the organisation's), and the
    errors of those that are not decodable or are sent twice."""
    inspected: list[_Inspected] = []
    errors: list[RemdError] = []
    items = [
        (f"сотрудника {s.signer.snils or '?'}", s.signature, True, s.signer.snils)
        for s in reg.personal_signatures
    ]
    if reg.org_signature is not None:
        items.append(("МО", reg.org_signature.signature, False, None))
    seen: set[bytes] = set()
    for label, der, personal, snils in items:
        if der in seen:
            errors.append(RemdError("SIGNATURE_DUPLICATION", f"Подпись {label} передана повторно"))
            continue
        seen.add(der)
        result = _inspect(label, der, personal=personal, snils=snils)
        if isinstance(result, RemdError):
            errors.append(result)
        else:
            inspected.append(result)
    return inspected, errors


def _file_digests(inspected: list[_Inspected], data: bytes) -> dict[int, bytes] | RemdError:
    """The file's digest for each Streebog size the signatures use ({bits: digest}: hashed once, then handed
    to each verification), or the error when the signatures disagree or do not match the file."""
    by_alg: dict[str, set[bytes]] = {}
    for s in inspected:
        by_alg.setdefault(s.digest_oid or "", set()).add(s.message_digest or b"")
    if any(len(digests) > 1 for digests in by_alg.values()):
        return RemdError("INCONSISTENT_DIGESTS", "Подписи содержат разные хеши документа")
    computed: dict[int, bytes] = {}
    for alg, digests in by_alg.items():
        bits = 512 if alg == gost.OID_STREEBOG512 else 256
        computed[bits] = gost.streebog(data, bits)
        if not hmac.compare_digest(next(iter(digests)), computed[bits]):
            return RemdError(
                "DIGEST_MISMATCH",
                "Хеш документа, полученного из предоставляющей системы, не совпадает с хешем, указанным в подписях",
            )
    return computed


def _read_cda(data: bytes) -> CdaMetadata | RemdError:
    try:
        return extract(parse_xml(data))
    except NotCda as exc:
        return RemdError("INVALID_CONTENT", f"Файл не является СЭМД (HL7 CDA R2): {exc.message}")
    except PermanentError as exc:
        return RemdError("INVALID_CONTENT", f"Файл не является корректным XML: {exc.message}")


def _signature_error(
    s: _Inspected,
    data: bytes,
    computed: dict[int, bytes],
    *,
    created: dt.datetime | None,
    now: dt.datetime,
    accredited: Sequence[Certificate],
) -> RemdError | None:
    """The first thing wrong with one signature: its certificate's issuer and dates, the cryptography, the
    signer's СНИЛС (None: nothing)."""
    cert = s.certificate
    if cert is not None and accredited and not any(cert.issued_by(ca) for ca in accredited):
        return RemdError(
            "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT",
            f"Сертификат подписи {s.label} выпущен не аккредитованным УЦ",
        )
    if cert is not None and created is not None:
        dates = _certificate_dates_error(s, cert, created=created, now=now)
        if dates is not None:
            return dates
    try:
        cades.verify_detached(data, s.cms_der, digests=computed, parsed=s.parsed)
    except cades.SignatureError as exc:
        return RemdError(
            _CADES_TO_REMD.get(exc.reason, "SIGNATURE_VERIFICATION_ERROR"),
            f"Подпись {s.label}: {exc.message}",
        )
    if s.personal and cert is not None and cert.snils and s.snils and digits(cert.snils) != digits(s.snils):
        return RemdError(
            "VALUE_MISMATCH_METADATA_AND_CERTIFICATE",
            f"СНИЛС сотрудника в запросе не совпадает со СНИЛС в сертификате подписи {s.label}",
        )
    return None


def _certificate_dates_error(
    s: _Inspected, cert: Certificate, *, created: dt.datetime, now: dt.datetime
) -> RemdError | None:
    """A certificate not valid when the document was created or, for a doctor's, when it is checked."""
    if not cert.is_valid_at(created):
        if s.personal:
            return RemdError(
                "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_DOC_CREATION_DT",
                f"Сертификат подписи {s.label} не действителен на дату создания ЭМД",
            )
        code = (
            "DOC_DATE_MISMATCH_CERT_NOT_AFTER"
            if created > cert.not_after
            else "DOC_DATE_MISMATCH_CERT_NOT_BEFORE"
        )
        return RemdError(code, f"Дата создания ЭМД вне срока действия сертификата {s.label}")
    if s.personal and not cert.is_valid_at(now):
        return RemdError(
            "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_CHECK_DT",
            f"Сертификат подписи {s.label} не действителен на дату проверки",
        )
    return None


def _signing_order(inspected: list[_Inspected], arrival: dt.datetime) -> list[RemdError]:
    """Every doctor signs before the organisation, and everyone before the request arrives (with skew)."""
    skew = dt.timedelta(seconds=CLOCK_SKEW)
    errors: list[RemdError] = []
    org = next((s for s in inspected if not s.personal), None)
    for s in inspected:
        if s.signing_time is not None and s.signing_time > arrival + skew:
            errors.append(
                RemdError(SIGNING_ORDER, f"Время подписи {s.label} позже времени поступления запроса")
            )
        if (
            s.personal
            and org is not None
            and s.signing_time
            and org.signing_time
            and s.signing_time > org.signing_time + skew
        ):
            errors.append(RemdError(SIGNING_ORDER, f"Подпись {s.label} создана позже подписи МО"))
    return errors


def cross_check(reg: Registration, meta: CdaMetadata, created: dt.datetime | None) -> list[RemdError]:
    """The request's metadata against the СЭМД header: document, patient, signers, recipient."""
    errors = _header_mismatches(reg, meta, created) + _patient_mismatches(reg, meta)
    # medical workers: each signer of the request is in the СЭМД (by СНИЛС) with the same data; the legal
    # authenticator signs
    for sign in reg.personal_signatures:
        errors += _signer_mismatches(sign.signer, meta)
    request_snils = {digits(sign.signer.snils) for sign in reg.personal_signatures}
    for s in meta.signers:
        if s.role == "legalAuthenticator" and s.snils and digits(s.snils) not in request_snils:
            errors.append(
                RemdError(
                    "LEGAL_AUTHENTICATOR_NOT_FOUND",
                    "Подпись лица, заверившего документ (legalAuthenticator), отсутствует в запросе",
                )
            )
    errors += _recipient_check(reg, meta)
    return errors


def _mismatch(what: str, in_doc: object, in_request: object) -> RemdError:
    return RemdError(HEADER_MISMATCH, f"{what} в ЭМД [{in_doc}] не совпадает с запросом [{in_request}]")


def _header_mismatches(reg: Registration, meta: CdaMetadata, created: dt.datetime | None) -> list[RemdError]:
    errors: list[RemdError] = []
    if meta.local_uid != reg.local_uid:
        errors.append(_mismatch("Идентификатор документа", meta.local_uid, reg.local_uid))
    if meta.kind_code is not None and meta.kind_code != reg.kind:
        errors.append(_mismatch("Вид документа", meta.kind_code, reg.kind))
    if meta.organization_oid != reg.organization:
        errors.append(_mismatch("OID организации", meta.organization_oid, reg.organization))
    if meta.creation_time is not None and created is not None and meta.creation_time != created:
        errors.append(_mismatch("Дата создания документа", meta.creation_time_raw, reg.creation_date_time))
    return errors


def _patient_mismatches(reg: Registration, meta: CdaMetadata) -> list[RemdError]:
    p, rp = meta.patient, reg.patient
    if p is None:
        return []
    errors: list[RemdError] = []
    if digits(p.snils) != digits(rp.snils):
        errors.append(_mismatch("СНИЛС пациента", p.snils, rp.snils))
    for what, doc, req in (
        ("Фамилия пациента", p.family, rp.family),
        ("Имя пациента", p.given, rp.given),
        ("Отчество пациента", p.patronymic, rp.patronymic),
        ("Пол пациента", p.gender, rp.gender),
    ):
        if req is not None and not _same(doc, req):
            errors.append(_mismatch(what, doc, req))
    if rp.birth_date is not None and p.birth_date is not None and p.birth_date.isoformat() != rp.birth_date:
        errors.append(_mismatch("Дата рождения пациента", p.birth_date, rp.birth_date))
    return errors


def _signer_mismatches(d: Signer, meta: CdaMetadata) -> list[RemdError]:
    """One signer of the request against the СЭМД. One СНИЛС may appear in several CDA roles (author,
    legalAuthenticator); the request carries the person once, so the first appearance with the same position
    is the one compared."""
    same = [s for s in meta.signers if s.snils and digits(s.snils) == digits(d.snils)]
    if not same:
        return [RemdError("INVALID_DOCTOR_SNILS", f"Сотрудник со СНИЛС [{d.snils}] не найден в ЭМД")]
    errors: list[RemdError] = []
    position = d.position.code if d.position else None
    found = next((s for s in same if s.position_code == position), same[0])
    for code, doc, req in (
        ("INVALID_DOCTOR_FAMILY", found.family, d.family),
        ("INVALID_DOCTOR_NAME", found.given, d.given),
        ("INVALID_DOCTOR_PATRONYMIC", found.patronymic, d.patronymic),
    ):
        if req is not None and not _same(doc, req):
            errors.append(RemdError(code, f"Данные сотрудника [{d.snils}] в запросе не совпадают с ЭМД"))
    if d.local_id is not None and found.local_id is not None and d.local_id != found.local_id:
        errors.append(
            RemdError("INVALID_DOCTOR_ID", f"Идентификатор сотрудника [{d.snils}] не совпадает с ЭМД")
        )
    if position != found.position_code:
        errors.append(_mismatch(f"Должность сотрудника [{d.snils}]", found.position_code, position))
    speciality = d.speciality.code if d.speciality else None
    if speciality is not None and found.speciality_code is not None and speciality != found.speciality_code:
        errors.append(_mismatch(f"Специальность сотрудника [{d.snils}]", found.speciality_code, speciality))
    return errors


def _recipient_check(reg: Registration, meta: CdaMetadata) -> list[RemdError]:
    """A recipient in the request must be the one the СЭМД names (РЭМД spells the codes RECIPIENT_*, [P])."""
    r = reg.recipient
    if r is None:
        return []
    doc = meta.recipient
    if doc is None:
        return [RemdError("RECIPIENT_INFO_MISMATCH", "Получатель из запроса не найден в ЭМД")]
    if r.organization is not None and r.organization != doc.organization_oid:
        return [
            RemdError(
                "RECIPIENT_INFO_MISMATCH",
                f"Организация-получатель [{r.organization}] из запроса не найдена в ЭМД",
            )
        ]
    if r.snils is not None and digits(r.snils) != digits(doc.snils):
        return [RemdError("RECIPIENT_SNILS_MISMATCH", "СНИЛС получателя в запросе не совпадает с ЭМД")]
    return []
