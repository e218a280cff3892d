"""created → signed, without Kafka: check a СЭМД, then add the doctors' and the organisation's signatures.

:func:`sign_document` takes the ``data`` of an ``emd.document.created`` event, the document's exact bytes
and the loaded :class:`services.pipeline.organizations.OrganizationsConfig`, and returns the ``signatures`` object
of ``emd.document.signed`` (docs/architecture.md). In order:

1. the document, BEFORE anything is signed: size limit, hardened parsing (``producer.xmlsafe``: no DTD,
   no entities), a CDA header that agrees with the event (localUid, organisation, signers), XSD of its
   kind (always blocks) and Schematron (per the configured policy: block / warn / off). Fail closed: a kind
   for which no XSD or Schematron is shipped is refused unless the organisation allows it
   (``allow_unvalidated_kinds``, an operator's decision logged at start);
2. the doctors (each distinct СНИЛС among the signers): in ``mis`` mode the detached CMS the МИС attached
   is verified over these exact bytes, its certificate valid on the creation date and at its signing time
   and now, and its СНИЛС that of the signer it is attached to; in ``server`` mode the doctor's key held
   here signs, after the same certificate checks, and only when the doctor is configured under this
   organisation with a recorded consent to server-side signing and is named by the CDA itself as the
   document's author, legal authenticator or authenticator (docs/security.md, "Server-side signing");
3. the organisation (unless the kind needs no MO_SIGN): its certificate valid now, its МЧД (when it is an
   employee's certificate) checked by ``services.crypto.mchd``; signed so that every doctor's signing time ≤ the
   organisation's ≤ ``now``.

Every failure is a ``PermanentError`` whose ``reason`` says which check failed::

    DOCUMENT_TOO_LARGE           over max_document_bytes
    XXE_FORBIDDEN                a DOCTYPE declaring an external (SYSTEM/PUBLIC) entity
    ENTITY_EXPANSION_FORBIDDEN   a DOCTYPE declaring internal entities (billion laughs) or an entity reference
    DTD_FORBIDDEN / NOT_XML      any other DOCTYPE / not well-formed
    NOT_CDA                      not a ClinicalDocument
    EVENT_DOCUMENT_MISMATCH      the event's localUid / organisation / signers are not the document's
    KIND_NOT_VALIDATED           no XSD or Schematron is shipped for the kind, and the organisation does not allow it
    XSD_INVALID                  fails its kind's XSD
    SCHEMATRON_INVALID           fails its kind's Schematron (policy "block" only)
    ORGANIZATION_UNKNOWN         the custodian is not configured
    DOCTOR_SIGNATURE_MISSING     mis mode: a signer has no attached signature
    DOCTOR_KEY_UNKNOWN           server mode: no key configured for a signer's СНИЛС
    SERVER_SIGNING_NOT_CONSENTED server mode: the doctor's consent to server-side signing is not recorded
    SIGNER_SNILS_MISMATCH        the signing certificate's СНИЛС is not the signer's
    DIGEST_MISMATCH, SIGNATURE_INVALID, ESS_CERT_MISMATCH, …   the attached CMS (services.crypto.cades reasons)
    CERT_NOT_YET_VALID / CERT_EXPIRED   a certificate outside its validity (``role`` detail says whose)
    SIGNING_TIME_IN_FUTURE       an attached signature claims a time after now
    KEY_PASSWORD_INVALID / KEY_PASSWORD_MISSING   the key needed cannot be unlocked
    MCHD_*                       the organisation's МЧД (services.crypto.mchd reasons: revoked, expired, …)
    N3_*                         an organisation on the N3.Health route: the kind or a doctor has no N3 code, or
                                 the document lacks what N3 needs (services.pipeline.n3_route), before signing
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from producer import cda
from producer.errors import PermanentError
from producer.text import digits
from producer.xmlsafe import XmlRejected, parse_xml
from services import telemetry
from services.crypto import cades, gost, mchd
from services.crypto.certificates import Certificate
from services.documents import validation as semd_validation
from services.logs import get_logger
from services.metrics import REGISTRY
from services.pipeline.n3_route import dictionary_of, n3_codes, on_n3_route
from services.pipeline.organizations import Credential, Organization, OrganizationsConfig
from services.timestamps import signature_time

__all__ = [
    "sign_document",
    "check_document",
    "is_validated",
    "update_expiry_metrics",
    "SIGNATURES",
    "SIGNING_DURATION",
    "CERTIFICATE_NOT_AFTER",
    "MCHD_NOT_AFTER",
    "SCHEMATRON_WARNINGS",
]

SIGNATURES = Counter(
    "emd_signatures", "Signatures produced or accepted, by kind.", ["kind", "source"], registry=REGISTRY
)
SIGNING_DURATION = Histogram(
    "emd_signing_duration_seconds",
    "Checking and signing one document.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SCHEMATRON_WARNINGS = Counter(
    "emd_schematron_warnings",
    "Documents signed despite Schematron failures (policy warn), by kind.",
    ["kind"],
    registry=REGISTRY,
)
CERTIFICATE_NOT_AFTER = Gauge(
    "emd_certificate_not_after_timestamp_seconds",
    "When the first configured certificate of an organisation and "
    "role (doctor, organization, system) expires, Unix time (alert on this minus time()).",
    ["organization", "role"],
    registry=REGISTRY,
)
MCHD_NOT_AFTER = Gauge(
    "emd_mchd_not_after_timestamp_seconds",
    "When an organisation's МЧД expires (the end of its last day, Moscow time), Unix time.",
    ["organization"],
    registry=REGISTRY,
)

_EXTERNAL_ENTITY = re.compile(rb"<!ENTITY\s+(?:%\s*)?[^\s>]+\s+(?:SYSTEM|PUBLIC)\b", re.I)


def _log():
    return get_logger(__name__)


def _utc_now(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


# --------------------------------------------------------------------------------------------------
# 1. the document


def _parse(document: bytes, limit: int):
    if len(document) > limit:
        raise PermanentError(
            f"document is {len(document)} bytes, over the limit of {limit} bytes",
            reason="DOCUMENT_TOO_LARGE",
            size=len(document),
            limit=limit,
        )
    try:
        return parse_xml(document, max_bytes=limit)
    except XmlRejected as exc:
        reason = exc.reason
        if reason == "ENTITY_FORBIDDEN":
            # an external entity reads files / URLs (XXE); an internal one multiplies text (billion laughs)
            reason = (
                "XXE_FORBIDDEN" if _EXTERNAL_ENTITY.search(document[:65536]) else "ENTITY_EXPANSION_FORBIDDEN"
            )
        raise PermanentError(f"document rejected: {exc.message}", reason=reason) from None


def is_validated(kind: str, *, schematron: str = "warn") -> bool:
    """Whether documents of ``kind`` are checked here at all: its XSD is shipped, or its Schematron is and the
    policy runs it."""
    return semd_validation.has_xsd(kind) or (schematron != "off" and semd_validation.has_schematron(kind))


def check_document(
    data: dict[str, Any],
    document: bytes,
    *,
    max_document_bytes: int,
    schematron: str = "warn",
    allow_unvalidated: bool = False,
) -> cda.CdaMetadata:
    """Step 1 alone: parse, cross-check the header with the event, XSD and Schematron. Returns the header.

    ``allow_unvalidated``: sign a kind for which nothing is shipped to check it with (else KIND_NOT_VALIDATED)."""
    root = _parse(document, max_document_bytes)
    try:
        meta = cda.extract(root)
    except cda.NotCda as exc:
        raise PermanentError(f"not a СЭМД: {exc.message}", reason="NOT_CDA") from None
    problems = []
    if meta.local_uid != data["localUid"]:
        problems.append("localUid")
    if meta.organization_oid != data["organizationOid"]:
        problems.append("organizationOid")
    doc_signers = {(s.role, s.snils) for s in meta.signers}
    if any((s["role"], s.get("snils")) not in doc_signers for s in data["signers"]):
        problems.append("signers")
    if problems:
        raise PermanentError(
            f"the event's {', '.join(problems)} differ from the document's header",
            reason="EVENT_DOCUMENT_MISMATCH",
            fields=",".join(problems),
        )
    kind = data["kind"]
    if not allow_unvalidated and not is_validated(kind, schematron=schematron):
        raise PermanentError(
            f"no XSD or Schematron is shipped for СЭМД kind {kind}, and organisation "
            f"{data['organizationOid']} does not allow unvalidated kinds: the document is not signed",
            reason="KIND_NOT_VALIDATED",
            kind=kind,
        )
    report = semd_validation.validate_semd(root, kind, schematron=schematron != "off")
    if report.xsd_errors:
        shown = "; ".join(str(e) for e in report.xsd_errors[:3])
        raise PermanentError(
            f"СЭМД kind {kind} is not valid against its XSD: {len(report.xsd_errors)} problem(s): {shown}",
            reason="XSD_INVALID",
            errors=len(report.xsd_errors),
        )
    if report.schematron_failures:
        shown = "; ".join(str(f) for f in report.schematron_failures[:3])
        if schematron == "block":
            raise PermanentError(
                f"СЭМД kind {kind} fails its Schematron: {len(report.schematron_failures)} "
                f"assert(s): {shown}",
                reason="SCHEMATRON_INVALID",
                errors=len(report.schematron_failures),
            )
        SCHEMATRON_WARNINGS.labels(kind).inc()
        _log().warning(
            "schematron failures, signing anyway (policy warn)",
            kind=kind,
            local_uid=data["localUid"],
            failures=len(report.schematron_failures),
        )
    return meta


# --------------------------------------------------------------------------------------------------
# 2. + 3. signatures


def _check_validity(cert: Certificate, when: dt.datetime, *, role: str, what: str) -> None:
    if when < cert.not_before:
        raise PermanentError(
            f"the {role} certificate is not yet valid on the {what} ({when:%Y-%m-%d %H:%M%z}, "
            f"valid from {cert.not_before:%Y-%m-%d})",
            reason="CERT_NOT_YET_VALID",
            role=role,
        )
    if when > cert.not_after:
        raise PermanentError(
            f"the {role} certificate has expired by the {what} ({when:%Y-%m-%d %H:%M%z}, "
            f"valid until {cert.not_after:%Y-%m-%d})",
            reason="CERT_EXPIRED",
            role=role,
        )


def _distinct_signers(data: dict[str, Any]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for s in data["signers"]:
        snils = s.get("snils")
        if not snils:
            raise PermanentError(
                f"the {s['role']} has no СНИЛС: a doctor's signature cannot be attributed",
                reason="SIGNER_SNILS_MISSING",
                role=s["role"],
            )
        current = seen.get(snils)
        if current is None:
            seen[snils] = dict(s)
        elif "signature" not in current and s.get("signature"):
            current["signature"] = s["signature"]  # one person in two roles signs once
    return list(seen.values())


class _Digests(dict):
    """bits → the document's Streebog digest, each computed on first use: the document is hashed once, whoever
    signs or is verified over it (the doctors, the organisation)."""

    def __init__(self, document: bytes) -> None:
        super().__init__()
        self.document = document

    def __missing__(self, bits: int) -> bytes:
        self[bits] = digest = gost.streebog(self.document, bits)
        return digest

    def of(self, certificate: Certificate) -> bytes:
        return self[certificate.public_key.curve.bits]


def _doctor_from_mis(
    signer: dict[str, Any], document: bytes, created: dt.datetime, now: dt.datetime, digests: _Digests
) -> dict[str, Any]:
    role = signer["role"]
    if not signer.get("signature"):
        raise PermanentError(
            f"the {role} has no attached signature (signing mode mis)",
            reason="DOCTOR_SIGNATURE_MISSING",
            role=role,
        )
    try:
        cms_der = cades.from_wire(signer["signature"])
        verified = cades.verify_detached(document, cms_der, at=now, document_time=created, digests=digests)
    except PermanentError as exc:
        raise PermanentError(f"the {role}'s signature: {exc.message}", reason=exc.reason, role=role) from None
    if digits(verified.certificate.snils) != signer["snils"]:
        raise PermanentError(
            f"the {role}'s signature is made with a certificate of another person (СНИЛС differs)",
            reason="SIGNER_SNILS_MISMATCH",
            role=role,
        )
    signing_time = verified.signing_time.astimezone(dt.UTC)
    if signing_time > now:
        raise PermanentError(
            f"the {role}'s signature claims a signing time after now ({signature_time(signing_time)} > {signature_time(now)})",
            reason="SIGNING_TIME_IN_FUTURE",
            role=role,
        )
    return {
        "snils": signer["snils"],
        "role": role,
        "cms": cades.to_base64(cms_der),
        "signingTime": signature_time(signing_time),
        "source": "mis",
        "_time": signing_time,
    }


def _doctor_on_server(
    signer: dict[str, Any],
    org: Organization,
    document: bytes,
    created: dt.datetime,
    at: dt.datetime,
    digests: _Digests,
) -> dict[str, Any]:
    role = signer["role"]
    cred: Credential | None = org.doctors.get(signer["snils"])
    if cred is None:
        raise PermanentError(
            f"no key is configured for the {role} of this document in organisation {org.oid}",
            reason="DOCTOR_KEY_UNKNOWN",
            role=role,
        )
    if signer["snils"] not in org.consented:
        raise PermanentError(
            f"the {role}'s consent to server-side signing is not recorded in organisation {org.oid} "
            "(server_signing_consent): the key held here signs nothing for this doctor",
            reason="SERVER_SIGNING_NOT_CONSENTED",
            role=role,
        )
    cert = cred.certificate
    _check_validity(cert, created, role="doctor", what="document creation date")
    _check_validity(cert, at, role="doctor", what="signing time")
    if digits(cert.snils) != signer["snils"]:  # also checked at load; a key file swapped since must not sign
        raise PermanentError(
            f"the {role}'s configured certificate is another person's",
            reason="SIGNER_SNILS_MISMATCH",
            role=role,
        )
    cms_der = cred.signer().sign(document, signing_time=at, digest=digests.of(cert))
    return {
        "snils": signer["snils"],
        "role": role,
        "cms": cades.to_base64(cms_der),
        "signingTime": signature_time(at),
        "source": "server",
        "_time": at,
    }


def _organization_signature(
    org: Organization, config: OrganizationsConfig, document: bytes, at: dt.datetime, digests: _Digests
) -> dict[str, Any]:
    cred = org.organization
    if cred is None:
        raise PermanentError(
            f"organisation {org.oid} has no organisation key, and this kind needs MO_SIGN",
            reason="ORGANIZATION_KEY_MISSING",
        )
    _check_validity(cred.certificate, at, role="organization", what="signing time")
    reference = None
    if org.mchd is not None:
        mchd.check_mchd(
            org.mchd.poa,
            signature_der=org.mchd.signature,
            employee_certificate=cred.certificate,
            organization_inn=org.inn,
            organization_ogrn=org.ogrn,
            at=at,
            revoked=config.revoked,
            required_powers=config.required_powers,
        )
        reference = mchd.mchd_reference(org.mchd.poa, org.mchd.xml, org.mchd.signature)
    cms_der = cred.signer().sign(document, signing_time=at, digest=digests.of(cred.certificate))
    return {"cms": cades.to_base64(cms_der), "signingTime": signature_time(at), "mchd": reference}


def sign_document(
    data: dict[str, Any], document: bytes, config: OrganizationsConfig, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The ``signatures`` object for a created event's ``data`` and its exact ``document`` bytes.

    ``config``: the loaded organisations file (the organisation is ``data["organizationOid"]``).
    ``now``: the moment of signing (default: the clock; aware). Raises ``PermanentError`` (module docstring).
    """
    started = time.perf_counter()
    now = _utc_now(now)
    at = now.replace(microsecond=0)  # CMS signingTime has whole seconds: never later than now
    org = config.organization(data["organizationOid"])
    meta = check_document(
        data,
        document,
        max_document_bytes=config.max_document_bytes,
        schematron=config.schematron,
        allow_unvalidated=org.may_sign_unvalidated(data["kind"]),
    )
    if on_n3_route(org):  # N3's own codes, resolved before a qualified signature is spent on the document
        n3_codes(data, org, dictionary_of(config))
    created = dt.datetime.fromisoformat(data["creationTime"])

    personal = []
    digests = _Digests(document)
    for signer in _distinct_signers(data):
        if org.mode == "mis":
            personal.append(_doctor_from_mis(signer, document, created, now, digests))
        else:
            personal.append(_doctor_on_server(signer, org, document, created, at, digests))

    organization = None
    if meta.requires_organization_signature is not False:
        # every doctor's time ≤ the organisation's ≤ now: `at` ≤ now, and mis signatures were checked ≤ now;
        # a mis signature within the current second is truncated to it by the CMS encoding as well.
        latest = max((p["_time"] for p in personal), default=at)
        organization = _organization_signature(
            org, config, document, max(at, latest.replace(microsecond=0)), digests
        )
    for p in personal:
        SIGNATURES.labels("doctor", p["source"]).inc()
        del p["_time"]
    if organization is not None:
        SIGNATURES.labels("organization", "server").inc()
    SIGNING_DURATION.observe(time.perf_counter() - started, exemplar=telemetry.exemplar())
    return {"personal": personal, "organization": organization}


# --------------------------------------------------------------------------------------------------
# expiry gauges


def update_expiry_metrics(config: OrganizationsConfig) -> None:
    """Set ``emd_certificate_not_after_timestamp_seconds{organization,role}`` and
    ``emd_mchd_not_after_timestamp_seconds{organization}`` from the configuration.

    Labels are the organisation's OID and the role: few, fixed by the configuration, and free of personal
    data (never a serial number, a СНИЛС or a МЧД number). Of several doctors' certificates the earliest
    expiry counts: it is the one to renew first. Absolute times, so a value never goes stale between
    refreshes; the signer refreshes them on a timer all the same, idle or not.
    """
    earliest: dict[tuple[str, str], dt.datetime] = {}
    for org, role, cred in config.credentials():
        key = (org.oid, role)
        earliest[key] = min(earliest.get(key, cred.certificate.not_after), cred.certificate.not_after)
    for (oid, role), not_after in earliest.items():
        CERTIFICATE_NOT_AFTER.labels(oid, role).set(not_after.timestamp())
    for org in config.organizations.values():
        if org.mchd is not None:
            MCHD_NOT_AFTER.labels(org.oid).set(mchd_expiry(org.mchd.poa).timestamp())


def mchd_expiry(poa: mchd.PowerOfAttorney) -> dt.datetime:
    """The end of the МЧД's last valid day (СрокДейст counts whole, Moscow time), as an aware datetime."""
    return dt.datetime.combine(poa.valid_until + dt.timedelta(days=1), dt.time(0), tzinfo=mchd.MOSCOW)
