"""Per-organisation settings: who signs for each organisation, with which keys, and where it registers.

One JSON file (``Settings.organizations_file``, default ``config/organizations.json``), read and checked
once at start by :func:`load_organizations`; every problem is a ``ConfigurationError`` naming the
organisation and the field (``organizations[1] (1.2.643.…): signing.organization.certificate: no such
file …``). Paths are relative to the file. Shape::

    {
      "schematron": "warn",                  // block | warn | off  (default warn, see below)
      "max_document_bytes": 52428800,        // default: Settings.max_document_bytes
      "mchd_revoked": ["<НомДовер GUID>"],   // and/or
      "mchd_revocation_file": "revoked.txt", // one GUID a line, '#' comments; re-read when it changes
      "mchd_required_powers": ["EMD_REMD_SIGN"],
      "organizations": [{
        "oid": "1.2.643.5.1.13.13.12.2.77.7831", "name": "…", "inn": "7701234567", "ogrn": "1027700000000",
        "signing": {
          "mode": "server",                  // "mis": the МИС attaches each doctor's detached CMS
                                             // "server": we hold the doctors' keys and sign for them
          "doctors": {"<СНИЛС>": {"key": "k.pem", "certificate": "c.pem",
                                  "password_file": "…" | "password_env": "…"}},
          "organization": {"key": "…", "certificate": "…", "password_file": "…",
                           "mchd": {"xml": "mchd.xml", "signature": "mchd.sig"}}   // mchd: optional
        },
        "remd": {"environment": "test", "endpoint": "https://…", "callback_url": "https://…",
                 "test_endpoint": "https://…",      // the test stand, for clinics not yet promoted
                 "client_entity_id": "…", "system_key": "…", "system_certificate": "…",
                 "system_password_file": "…", "rate_limit_per_minute": 60, "transport": "ips"}
      }]
    }

Schematron policy: ``block`` dead-letters a document that fails its kind's Schematron, ``warn`` (the
default) logs and counts the failures and signs anyway, ``off`` does not run it. The default is ``warn``
because the Ministry's own published examples fail some asserts of the rule files we have
(``semd-samples/.../SOURCES.md``: signature time left NI, package-version drift), and РЭМД runs its
own ФЛК on registration; XSD failures always block.

Keys are loaded once, at start. A key that cannot be *unlocked* (wrong or missing password) does not
stop the process: the other organisations keep working, and each document that needs that key is
dead-lettered with the key's reason (``KEY_PASSWORD_INVALID``…) until the configuration is fixed.
A missing file, an unreadable certificate or a key that does not match its certificate is a
``ConfigurationError`` at start. Passwords are never logged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.config import MAX_DOCUMENT_BYTES
from services.crypto import keys, mchd
from services.crypto.certificates import Certificate, load_certificate
from services.crypto.signer import LocalKeySigner, Signer
from services.errors import ConfigurationError, EmdError, PermanentError
from services.logs import get_logger

__all__ = [
    "SIGNING_MODES", "SCHEMATRON_POLICIES", "ENVIRONMENTS", "Credential", "Mchd", "RemdSettings",
    "Organization", "OrganizationsConfig", "load_organizations",
]

SIGNING_MODES = ("mis", "server")
SCHEMATRON_POLICIES = ("block", "warn", "off")
ENVIRONMENTS = ("test", "production")
TRANSPORTS = ("ips",)
_SNILS = re.compile(r"^\d{11}$")


def _log():
    return get_logger(__name__)


# --------------------------------------------------------------------------------------------------
# model


@dataclass(eq=False)
class Credential:
    """A certificate and its private key. ``signer()`` raises the key's load error, if any, per use."""

    label: str                       # "1.2.643…/organization", for messages and metric labels
    certificate: Certificate
    key_path: Path
    _signer: Signer | None = field(default=None, repr=False)
    _error: EmdError | None = field(default=None, repr=False)

    def signer(self) -> Signer:
        if self._error is not None:
            # a fresh exception each time: the runtime reads reason/details from it
            raise PermanentError(f"{self.label}: {self._error.message}", reason=self._error.reason)
        assert self._signer is not None
        return self._signer

    @property
    def usable(self) -> bool:
        return self._error is None


@dataclass(frozen=True)
class Mchd:
    """An МЧД that lets an employee's certificate sign for the organisation: XML, the head's signature."""

    poa: mchd.PowerOfAttorney
    xml: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    xml_path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class RemdSettings:
    environment: str
    endpoint: str
    callback_url: str | None
    client_entity_id: str | None
    system: Credential | None
    rate_limit_per_minute: int
    transport: str = "ips"
    #: the test stand's ИПС address, where a clinic not yet promoted sends (docs/support.md); None: held
    test_endpoint: str | None = None


@dataclass(frozen=True, kw_only=True)
class Organization:
    oid: str
    name: str
    inn: str
    ogrn: str
    mode: str                                   # "mis" | "server"
    doctors: Mapping[str, Credential]           # СНИЛС → credential (server mode)
    organization: Credential | None             # None: the kinds it registers need no MO_SIGN
    mchd: Mchd | None
    remd: RemdSettings | None


@dataclass(kw_only=True)
class OrganizationsConfig:
    """The loaded file: organisations by OID, and the global МЧД / size / Schematron settings."""

    path: Path
    organizations: dict[str, Organization]
    schematron: str = "warn"
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    required_powers: frozenset[str] = mchd.DEFAULT_REMD_POWERS
    revoked_inline: frozenset[str] = frozenset()
    revocation_file: Path | None = None
    _revocation_cache: tuple[float, frozenset[str]] | None = field(default=None, repr=False)

    def organization(self, oid: str) -> Organization:
        """The organisation with this ФРМО OID, or ``PermanentError(ORGANIZATION_UNKNOWN)``."""
        try:
            return self.organizations[oid]
        except KeyError:
            raise PermanentError(f"organisation {oid} is not configured in {self.path.name}",
                                 reason="ORGANIZATION_UNKNOWN", organization=oid) from None

    @property
    def revoked(self) -> frozenset[str]:
        """Revoked МЧД numbers: the inline list plus the revocation file (re-read when its mtime changes)."""
        if self.revocation_file is None:
            return self.revoked_inline
        try:
            mtime = self.revocation_file.stat().st_mtime
        except OSError as exc:
            # a revocation list we cannot read must not be mistaken for "nothing revoked"
            raise PermanentError(f"МЧД revocation file {self.revocation_file} is unreadable: {exc}",
                                 reason="MCHD_REVOCATION_UNAVAILABLE") from None
        if self._revocation_cache is None or self._revocation_cache[0] != mtime:
            self._revocation_cache = (mtime, _read_revocations(self.revocation_file))
        return self.revoked_inline | self._revocation_cache[1]

    def credentials(self) -> Iterator[tuple[Organization, str, Credential]]:
        """Every configured certificate: (organisation, role, credential); role is doctor/organization/system."""
        for org in self.organizations.values():
            for cred in org.doctors.values():
                yield org, "doctor", cred
            if org.organization is not None:
                yield org, "organization", org.organization
            if org.remd is not None and org.remd.system is not None:
                yield org, "system", org.remd.system


def _read_revocations(path: Path) -> frozenset[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(s.strip().lower() for s in (ln.split("#", 1)[0] for ln in lines) if s.strip())


# --------------------------------------------------------------------------------------------------
# loading


class _Ctx:
    """Where we are in the file, so every error names the organisation and the field."""

    def __init__(self, file: Path, where: str = "") -> None:
        self.file, self.where = file, where

    def at(self, more: str) -> _Ctx:
        if not self.where:
            return _Ctx(self.file, more)
        return _Ctx(self.file, f"{self.where} {more}" if self.where.endswith(":") else f"{self.where}.{more}")

    def error(self, message: str) -> ConfigurationError:
        return ConfigurationError(f"{self.file}: {self.where}: {message}" if self.where else f"{self.file}: {message}")

    def path(self, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error("expected a file path")
        p = Path(value)
        p = p if p.is_absolute() else self.file.parent / p
        if not p.is_file():
            raise self.error(f"no such file: {p}")
        return p


def _obj(ctx: _Ctx, value: Any, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error("expected an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ctx.at(unknown[0]).error(f"unknown field (known: {', '.join(sorted(allowed))})")
    for name in sorted(required):
        if value.get(name) in (None, ""):
            raise ctx.at(name).error("is required")
    return value


def _str(ctx: _Ctx, value: Any, pattern: str | None = None, what: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error("expected a non-empty string")
    if pattern and not re.fullmatch(pattern, value):
        raise ctx.error(f"expected {what or pattern}")
    return value.strip()


def _credential(ctx: _Ctx, raw: Any, label: str, *, extra: set[str] = frozenset()) -> tuple[Credential, dict]:
    spec = _obj(ctx, raw, {"key", "certificate", "password_file", "password_env", *extra}, {"key", "certificate"})
    if "password_file" in spec and "password_env" in spec:
        raise ctx.error("give password_file or password_env, not both")
    cert_path = ctx.at("certificate").path(spec["certificate"])
    key_path = ctx.at("key").path(spec["key"])
    try:
        cert = load_certificate(cert_path)
    except EmdError as exc:
        raise ctx.at("certificate").error(exc.message) from None
    cred = Credential(label=label, certificate=cert, key_path=key_path)
    try:
        password = keys.read_password(
            file=ctx.at("password_file").path(spec["password_file"]) if "password_file" in spec else None,
            env=spec.get("password_env"))
        key = keys.load_private_key(key_path, password=password)
    except ConfigurationError:
        raise
    except PermanentError as exc:
        if exc.reason in ("KEY_PASSWORD_INVALID", "KEY_PASSWORD_MISSING"):
            cred._error = exc  # deferred: the documents of this organisation fail, the others go on
            _log().error("key unusable", credential=label, reason=exc.reason)
            return cred, spec
        raise ctx.at("key").error(exc.message) from None
    except OSError as exc:
        raise ctx.at("key").error(str(exc)) from None
    try:
        cred._signer = LocalKeySigner(key, cert)
    except ConfigurationError:
        raise ctx.at("key").error("the private key does not belong to the certificate") from None
    return cred, spec


def _organization(ctx: _Ctx, raw: Any) -> Organization:
    spec = _obj(ctx, raw, {"oid", "name", "inn", "ogrn", "signing", "remd"}, {"oid", "name", "inn", "ogrn", "signing"})
    oid = _str(ctx.at("oid"), spec["oid"], r"\d+(\.\d+)+", "an OID (ФРМО)")
    ctx = _Ctx(ctx.file, f"{ctx.where} ({oid}):")
    name = _str(ctx.at("name"), spec["name"])
    inn = _str(ctx.at("inn"), spec["inn"], r"\d{10}", "10 digits (ИНН ЮЛ)")
    ogrn = _str(ctx.at("ogrn"), spec["ogrn"], r"\d{13}", "13 digits (ОГРН)")

    sctx = ctx.at("signing")
    signing = _obj(sctx, spec["signing"], {"mode", "doctors", "organization"}, {"mode"})
    mode = signing["mode"]
    if mode not in SIGNING_MODES:
        raise sctx.at("mode").error(f"expected one of {', '.join(SIGNING_MODES)}, got {mode!r}")
    doctors: dict[str, Credential] = {}
    raw_doctors = signing.get("doctors") or {}
    if not isinstance(raw_doctors, dict):
        raise sctx.at("doctors").error("expected an object {СНИЛС: {key, certificate, ...}}")
    if mode == "server" and not raw_doctors:
        raise sctx.at("doctors").error("server mode needs at least one doctor's key")
    for snils, dspec in raw_doctors.items():
        digits = re.sub(r"\D", "", str(snils))
        dctx = sctx.at(f"doctors[{snils}]")
        if not _SNILS.match(digits):
            raise dctx.error("the key must be a СНИЛС (11 digits)")
        cred, _ = _credential(dctx, dspec, f"{oid}/doctor")
        cert_snils = re.sub(r"\D", "", cred.certificate.snils or "")
        if cert_snils != digits:
            raise dctx.at("certificate").error("the certificate's СНИЛС is not the one it is configured for")
        cred.label = f"{oid}/doctor/{cred.certificate.serial_number:x}"  # no СНИЛС in labels: personal data
        doctors[digits] = cred

    org_cred: Credential | None = None
    poa: Mchd | None = None
    if signing.get("organization") is not None:
        octx = sctx.at("organization")
        org_cred, ospec = _credential(octx, signing["organization"], f"{oid}/organization", extra={"mchd"})
        cert = org_cred.certificate
        if cert.ogrn and cert.ogrn != ogrn:
            raise octx.at("certificate").error(f"the certificate's ОГРН is not {ogrn}")
        if ospec.get("mchd") is not None:
            mctx = octx.at("mchd")
            mspec = _obj(mctx, ospec["mchd"], {"xml", "signature"}, {"xml", "signature"})
            xml_path = mctx.at("xml").path(mspec["xml"])
            sig_path = mctx.at("signature").path(mspec["signature"])
            xml = xml_path.read_bytes()
            try:
                parsed = mchd.parse_mchd(xml)
                from services.crypto.cades import from_wire
                signature = from_wire(sig_path.read_bytes())
            except PermanentError as exc:
                raise mctx.error(exc.message) from None
            poa = Mchd(poa=parsed, xml=xml, signature=signature, xml_path=xml_path)

    remd: RemdSettings | None = None
    if spec.get("remd") is not None:
        rctx = ctx.at("remd")
        r = _obj(rctx, spec["remd"], {"environment", "endpoint", "callback_url", "client_entity_id", "system_key",
                                      "system_certificate", "system_password_file", "system_password_env",
                                      "rate_limit_per_minute", "transport", "test_endpoint"},
                 {"environment", "endpoint"})
        if r["environment"] not in ENVIRONMENTS:
            raise rctx.at("environment").error(f"expected one of {', '.join(ENVIRONMENTS)}")
        if not re.match(r"^https?://", str(r["endpoint"])):
            raise rctx.at("endpoint").error("expected an http(s) URL")
        for url_field in ("callback_url", "test_endpoint"):
            if r.get(url_field) is not None and not re.match(r"^https?://", str(r[url_field])):
                raise rctx.at(url_field).error("expected an http(s) URL")
        transport = r.get("transport", "ips")
        if transport not in TRANSPORTS:
            raise rctx.at("transport").error(f"expected one of {', '.join(TRANSPORTS)}")
        rate = r.get("rate_limit_per_minute", 60)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise rctx.at("rate_limit_per_minute").error("expected a positive integer")
        system = None
        if r.get("system_key") or r.get("system_certificate"):
            sys_spec = {"key": r.get("system_key"), "certificate": r.get("system_certificate")}
            for src, dst in (("system_password_file", "password_file"), ("system_password_env", "password_env")):
                if src in r:
                    sys_spec[dst] = r[src]
            system, _ = _credential(rctx, sys_spec, f"{oid}/system")
        remd = RemdSettings(environment=r["environment"], endpoint=r["endpoint"],
                            callback_url=r.get("callback_url"), client_entity_id=r.get("client_entity_id"),
                            system=system, rate_limit_per_minute=rate, transport=transport,
                            test_endpoint=r.get("test_endpoint"))
    return Organization(oid=oid, name=name, inn=inn, ogrn=ogrn, mode=mode, doctors=doctors,
                        organization=org_cred, mchd=poa, remd=remd)


def load_organizations(path: str | os.PathLike, *, max_document_bytes: int | None = None) -> OrganizationsConfig:
    """Read and check the organisations file; raise ``ConfigurationError`` naming the organisation and field.

    ``max_document_bytes``: the deployment's default (``Settings.max_document_bytes``) when the file sets none.
    """
    file = Path(path)
    ctx = _Ctx(file)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{file}: no such file (EMD_ORGANIZATIONS; `emd certs dev-config DIR` writes "
                                 f"a development one)") from None
    except (OSError, ValueError) as exc:
        raise ctx.error(f"not readable JSON: {exc}") from None
    top = _obj(ctx, raw, {"organizations", "schematron", "max_document_bytes", "mchd_revoked",
                          "mchd_revocation_file", "mchd_required_powers", "comment"}, {"organizations"})
    schematron = top.get("schematron", "warn")
    if schematron not in SCHEMATRON_POLICIES:
        raise ctx.at("schematron").error(f"expected one of {', '.join(SCHEMATRON_POLICIES)}")
    size = top.get("max_document_bytes", max_document_bytes or MAX_DOCUMENT_BYTES)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ctx.at("max_document_bytes").error("expected a positive integer")
    revoked = top.get("mchd_revoked", [])
    if not isinstance(revoked, list) or not all(isinstance(r, str) for r in revoked):
        raise ctx.at("mchd_revoked").error("expected a list of МЧД numbers")
    revocation_file = ctx.at("mchd_revocation_file").path(top["mchd_revocation_file"]) \
        if top.get("mchd_revocation_file") else None
    powers = top.get("mchd_required_powers")
    if powers is not None and (not isinstance(powers, list) or not powers
                               or not all(isinstance(p, str) and p for p in powers)):
        raise ctx.at("mchd_required_powers").error("expected a non-empty list of power codes")
    orgs_raw = top["organizations"]
    if not isinstance(orgs_raw, list) or not orgs_raw:
        raise ctx.at("organizations").error("expected a non-empty list")
    organizations: dict[str, Organization] = {}
    for i, item in enumerate(orgs_raw):
        org = _organization(ctx.at(f"organizations[{i}]"), item)
        if org.oid in organizations:
            raise ctx.at(f"organizations[{i}]").error(f"organisation {org.oid} is configured twice")
        organizations[org.oid] = org
    config = OrganizationsConfig(
        path=file, organizations=organizations, schematron=schematron, max_document_bytes=size,
        required_powers=frozenset(powers) if powers else mchd.DEFAULT_REMD_POWERS,
        revoked_inline=frozenset(r.strip().lower() for r in revoked), revocation_file=revocation_file)
    if revocation_file is not None:
        config.revoked  # noqa: B018 - read once now, so an unreadable file fails at start
    _log().info("organisations loaded", path=str(file), count=len(organizations), schematron=schematron)
    return config
