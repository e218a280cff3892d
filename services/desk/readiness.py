"""``emd clinic check``: is a clinic ready to send? One line per requirement, each ok or what to do.

The list follows what a МИС support team checks before connecting a clinic:

1. ФРМО OID well formed (``1.2.643.5.1.13.13.12.2.<region>.<n>``) and configured in the organisations file;
2. every doctor's certificate: a СНИЛС, in date, issued by a configured CA (``--ca``; default the
   ``ca.pem`` beside the organisations file, which ``emd certs dev-config`` writes), its key usable;
3. the organisation's signing path: its certificate (in date, the organisation's ОГРН), and the МЧД:
   signed by the head, covering this employee, for this organisation, in date, with the powers РЭМД needs;
4. the ИС certificate for ИПС (WS-Security): present, in date, its key usable; the clientEntityId;
5. endpoints: the ИПС address (and the test stand's), and the callback URL answering HTTP;
6. environment: where its documents go in its current onboarding state (``services.pipeline.routing``).

``check(...)`` returns the lines; nothing here raises for a problem it found: a problem is a line. A key the
process does not hold (the console holds none: docs/security.md) is not judged here: the process of its role
checks it when it loads it (a missing or mismatched key stops it at start, a locked one is logged).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.errors import EmdError
from services.crypto import gost
from services.crypto.certificates import Certificate, load_certificate

FRMO_OID = re.compile(r"^1\.2\.643\.5\.1\.13\.13\.12\.2\.\d+\.\d+(\.\d+)*$")
#: certificates expiring sooner than this are flagged (still "ok", with the date to act by)
WARN_DAYS = 30


@dataclass(frozen=True)
class Line:
    item: str
    ok: bool
    text: str  # "ok: …" details, or what to do

    def render(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.item:<28} {self.text}"


def load_cas(paths: Sequence[Path]) -> list[Certificate]:
    return [load_certificate(p) for p in paths]


def issued_by(cert: Certificate, cas: Sequence[Certificate]) -> Certificate | None:
    """The CA among ``cas`` whose key signed ``cert`` (GOST R 34.10-2012 over the TBS), or None."""
    tbs_der = cert.tbs.dump()
    signature = cert.asn1["signature_value"].native
    for ca in cas:
        if ca.subject.dump() != cert.issuer_der:
            continue
        key = ca.public_key
        try:
            if key.verify_digest(gost.streebog(tbs_der, key.curve.bits), signature):
                return ca
        except (ValueError, TypeError):
            continue
    return None


def _days(cert: Certificate, now: dt.datetime) -> float:
    return (cert.not_after - now).total_seconds() / 86400


def _certificate(
    item: str,
    cert: Certificate,
    *,
    now: dt.datetime,
    cas: Sequence[Certificate],
    usable: bool,
    need_snils: bool = False,
) -> Line:
    problems = []
    if need_snils and not cert.snils:
        problems.append(
            "the certificate carries no СНИЛС: ask the УЦ for a qualified certificate of the doctor"
        )
    if cert.not_before > now:
        problems.append(f"not valid before {cert.not_before:%Y-%m-%d}: wait, or configure the current one")
    if cert.not_after < now:
        problems.append(
            f"expired on {cert.not_after:%Y-%m-%d}: get a new certificate and key, update the "
            "organisations file"
        )
    if not cas:
        problems.append("no CA configured to check the chain (give --ca FILE)")
    elif issued_by(cert, cas) is None:
        problems.append("not issued by a configured CA: check the УЦ, or add its certificate with --ca")
    if not usable:
        problems.append("the private key cannot be unlocked: check its password_file/password_env")
    if problems:
        return Line(item, False, "; ".join(problems))
    left = _days(cert, now)
    soon = f" — expires in {left:.0f} days: plan the renewal" if left < WARN_DAYS else ""
    return Line(item, True, f"ok: serial {cert.serial_number:x}, until {cert.not_after:%Y-%m-%d}{soon}")


def check(
    oid: str,
    config: Any,
    *,
    cas: Sequence[Certificate],
    clinic_state: str,
    unpromoted: str,
    now: dt.datetime | None = None,
    reachable: Callable[[str], str | None] | None = None,
) -> list[Line]:
    """The readiness lines of clinic ``oid`` (``config``: a loaded ``OrganizationsConfig``).

    ``reachable(url)`` → None when the URL answers, else why not (default: an HTTP GET with a short timeout).
    """
    from services.pipeline import routing

    now = now or dt.datetime.now(dt.UTC)
    reachable = reachable or _http_reachable
    lines: list[Line] = []
    org = config.organizations.get(oid)
    if not FRMO_OID.match(oid):
        lines.append(
            Line(
                "ФРМО OID",
                False,
                f"{oid} is not a ФРМО OID (1.2.643.5.1.13.13.12.2.<region>.<n>): "
                "take it from the clinic's ФРМО card",
            )
        )
    elif org is None:
        lines.append(Line("ФРМО OID", False, f"{oid} is not in {config.path.name}: add the organisation"))
    else:
        lines.append(Line("ФРМО OID", True, f"ok: {org.name}"))
    if org is None:
        return lines

    lines += _doctor_lines(org, now=now, cas=cas)
    lines += _organization_lines(org, config, now=now, cas=cas)

    remd = org.remd
    if remd is None:
        lines.append(
            Line(
                "ИС certificate (ИПС)",
                False,
                "no remd section: add endpoint, callback_url, "
                "client_entity_id, system_key and system_certificate",
            )
        )
        return lines
    if remd.system is None:
        lines.append(
            Line(
                "ИС certificate (ИПС)",
                False,
                "missing: add remd.system_key and remd.system_certificate "
                "(the certificate registered for the ИС in ИПС)",
            )
        )
    else:
        lines.append(
            _certificate(
                "ИС certificate (ИПС)",
                remd.system.certificate,
                now=now,
                cas=cas,
                usable=remd.system.usable or not remd.system.held,
            )
        )
    lines.append(
        Line(
            "clientEntityId",
            bool(remd.client_entity_id),
            f"ok: {remd.client_entity_id}"
            if remd.client_entity_id
            else "missing: add remd.client_entity_id (issued when the ИС is registered in ИПС)",
        )
    )
    lines.append(
        Line(
            "ИПС endpoint",
            True,
            f"ok: {remd.endpoint} ({remd.environment})"
            + (f", test stand {remd.test_endpoint}" if remd.test_endpoint else ""),
        )
    )
    if not remd.callback_url:
        lines.append(Line("callback URL", False, "missing: add remd.callback_url (where ИПС sends results)"))
    else:
        why = reachable(remd.callback_url)
        lines.append(
            Line(
                "callback URL",
                why is None,
                f"ok: {remd.callback_url} answers"
                if why is None
                else f"{remd.callback_url} does not answer ({why}): start `emd callbacks`, check the "
                "ingress and firewall",
            )
        )
    try:
        where = routing.route(remd, clinic_state, unpromoted=unpromoted)
        lines.append(
            Line(
                "environment",
                True,
                f"ok: clinic {clinic_state}; documents go to {where.endpoint} ({where.environment})",
            )
        )
    except EmdError:
        lines.append(
            Line(
                "environment",
                clinic_state != "production",
                f"clinic {clinic_state}: documents are held until it is promoted (no test stand "
                "configured, or EMD_UNPROMOTED_CLINICS=hold): add remd.test_endpoint to test it",
            )
        )
    return lines


_MCHD_ACTIONS = {
    "MCHD_WRONG_ORGANIZATION": "the МЧД names another organisation (ИНН/ОГРН): configure this organisation's МЧД",
    "MCHD_WRONG_EMPLOYEE": "the МЧД is for another employee: configure the МЧД of the certificate's owner",
    "MCHD_EXPIRED": "ask the head to issue a new МЧД and register it in the ФНС register",
    "MCHD_NOT_YET_VALID": "wait for its start date, or configure the current МЧД",
    "MCHD_REVOKED": "the МЧД was revoked: configure a valid one",
    "MCHD_POWERS_MISSING": "the МЧД must grant the power to sign СЭМД for РЭМД",
    "MCHD_SIGNATURE_INVALID": "the head's signature does not verify: get the МЧД and its signature file again",
}


def _http_reachable(url: str) -> str | None:
    import httpx

    try:
        httpx.get(url, timeout=5.0)  # any HTTP answer (even 405 to a GET) proves the service listens
        return None
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _doctor_lines(org: Any, *, now: dt.datetime, cas: Sequence[Certificate]) -> list[Line]:
    """Each doctor's certificate, or why none is needed (mode mis) or missing."""
    lines: list[Line] = []
    if not org.doctors:
        lines.append(
            Line(
                "doctors' certificates",
                org.mode == "mis",
                "ok: the МИС signs for its doctors (mode mis)"
                if org.mode == "mis"
                else "no doctor's key configured (server mode needs each doctor's)",
            )
        )
    for snils, cred in sorted(org.doctors.items()):
        lines.append(
            _certificate(
                f"doctor ***-***-*** {snils[-2:]}",
                cred.certificate,
                now=now,
                cas=cas,
                usable=cred.usable or not cred.held,
                need_snils=True,
            )
        )
    return lines


def _organization_lines(org: Any, config: Any, *, now: dt.datetime, cas: Sequence[Certificate]) -> list[Line]:
    """The organisation's certificate (its ОГРН the organisation's) and its МЧД."""
    from services.crypto import mchd

    lines: list[Line] = []
    if org.organization is None:
        lines.append(
            Line(
                "organisation certificate",
                False,
                "no organisation key: documents whose kind needs the "
                "organisation's signature (MO_SIGN) cannot be signed",
            )
        )
    else:
        line = _certificate(
            "organisation certificate",
            org.organization.certificate,
            now=now,
            cas=cas,
            usable=org.organization.usable or not org.organization.held,
        )
        cert_ogrn = org.organization.certificate.ogrn
        if line.ok and cert_ogrn and cert_ogrn != org.ogrn:
            line = Line(line.item, False, f"the certificate's ОГРН is not the organisation's {org.ogrn}")
        lines.append(line)
        if org.mchd is None:
            lines.append(Line("МЧД", True, "ok: none configured (the certificate is the head's own)"))
        else:
            try:
                mchd.check_mchd(
                    org.mchd.poa,
                    signature_der=org.mchd.signature,
                    employee_certificate=org.organization.certificate,
                    organization_inn=org.inn,
                    organization_ogrn=org.ogrn,
                    at=now,
                    revoked=config.revoked,
                    required_powers=config.required_powers,
                )
                poa = org.mchd.poa
                lines.append(
                    Line(
                        "МЧД",
                        True,
                        f"ok: {poa.number}, until {poa.valid_until.isoformat()}, powers "
                        f"{', '.join(sorted(poa.power_codes & config.required_powers))}",
                    )
                )
            except EmdError as exc:
                lines.append(
                    Line(
                        "МЧД",
                        False,
                        f"{exc.reason}: {exc.message} — {_MCHD_ACTIONS.get(exc.reason, 'issue a new МЧД')}",
                    )
                )
    return lines
