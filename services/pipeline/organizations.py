"""Per-organisation settings: who signs for each organisation, with which keys, and where it registers.

One JSON file (``Settings.organizations_file``, default ``config/organizations.json``), read and checked
once at start by :func:`load_organizations`: its shape by the JSON Schema packaged with the code
(``services/data/organizations.schema.json``, which documents every field), then what a schema cannot
check (files exist, keys match their certificates, a certificate's СНИЛС and ОГРН, each OID once). Every
problem is a ``ConfigurationError`` naming the organisation and the field (``organizations[1]
(1.2.643.…): signing.organization.certificate: no such file …``). Paths are relative to the file. Shape::

    {
      "schematron": "warn",                  // block | warn | off  (default warn, see below)
      "max_document_bytes": 52428800,        // default: Settings.max_document_bytes
      "mchd_revoked": ["<НомДовер GUID>"],   // and/or
      "mchd_revocation_file": "revoked.txt", // one GUID a line, '#' comments; re-read when it changes
      "mchd_required_powers": ["EMD_REMD_SIGN"],
      "mis": [{"id": "dental-mis",           // who may publish for which organisation (docs/security.md)
               "organizations": ["1.2.643.5.1.13.13.12.2.77.7831"], "systemIds": ["dental-mis-01"]}],
      "n3_dictionary": "nsi-195.json",       // N3's dictionary 195 (default: the one shipped); re-read on change
      "organizations": [{
        "oid": "1.2.643.5.1.13.13.12.2.77.7831", "name": "…", "inn": "7701234567", "ogrn": "1027700000000",
        "allow_unvalidated_kinds": false,    // true or ["227", …]: sign kinds no XSD/Schematron is shipped for
        "signing": {
          "mode": "server",                  // "mis": the МИС attaches each doctor's detached CMS
                                             // "server": we hold the doctors' keys and sign for them
          "doctors": {"<СНИЛС>": {"key": "k.pem", "certificate": "c.pem",
                                  "password_file": "…" | "password_env": "…",
                                  "server_signing_consent": "…"}},   // where the doctor's consent is kept
          "organization": {"key": "…", "certificate": "…", "password_file": "…",
                           "mchd": {"xml": "mchd.xml", "signature": "mchd.sig"}}   // mchd: optional
        },
        "remd": {"environment": "test", "endpoint": "https://…", "callback_url": "https://…",
                 "test_endpoint": "https://…",      // the test stand, for clinics not yet promoted
                 "client_entity_id": "…", "system_key": "…", "system_certificate": "…",
                 "system_password_file": "…", "rate_limit_per_minute": 60, "transport": "ips",
                 // transport "n3" (N3.Health): endpoint = its EmkService (…/EMKService.svc), and
                 "n3": {"lpu_id": "…", "token_file": "n3.token" | "token_env": "…",
                        "status_url": "https://…",            // [G] optional: the status poll
                        "pix_endpoint": "https://…",          // optional: default the sibling PixService.svc
                        "doctors": {"<СНИЛС>": {"id_speciality": 28, "id_position": 114}}}}
      }]
    }

Schematron policy: ``block`` dead-letters a document that fails its kind's Schematron, ``warn`` (the
default) logs and counts the failures and signs anyway, ``off`` does not run it. The default is ``warn``
because the Ministry's own published examples fail some asserts of the rule files we have
(``semd-samples/.../SOURCES.md``: signature time left NI, package-version drift), and РЭМД runs its
own ФЛК on registration; XSD failures always block.

**Each process loads only the keys of its role** (``role=``, ``ROLES``; docs/security.md "Keys per pod"):
the signer the doctors' and organisations' signing keys; the sender, the status worker and the callback
service the information systems' keys (and N3 tokens where they use them); the console none. A key outside
the role is not even opened (its pod does not mount it): its certificate is loaded, and a use of the key
raises ``KEY_NOT_HELD``. Without a role (the command-line tools) every key is loaded.

Keys are loaded at start and **reloaded when the files change** (``reload_if_changed``, polled by
``watch_organizations``): a Kubernetes projected Secret volume is updated in place, all its files at once,
when a clinic is added or a key rotated, so the fleet picks it up without a restart. A new version that does
not load is logged and the previous one kept. A key that cannot be *unlocked* (wrong or missing password)
does not stop the process: the other organisations keep working, and each document that needs that key is
dead-lettered with the key's reason (``KEY_PASSWORD_INVALID``…) until the configuration is fixed.
A missing file, an unreadable certificate or a key that does not match its certificate is a
``ConfigurationError`` at start. Passwords are never logged.

Who may publish for whom (``mis``; docs/security.md): each МИС by its id, with the organisations and
systemIds it may publish for. Every granted organisation must be configured, and each id given once. Which
organisations may sign kinds no XSD or Schematron is shipped for (``allow_unvalidated_kinds``), and which
doctors have consented to server-side signing (``server_signing_consent``), the signer logs at start
(:func:`log_operator_decisions`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from prometheus_client import Counter

from producer.errors import ConfigurationError, EmdError, PermanentError
from producer.text import digits
from services.config import MAX_DOCUMENT_BYTES
from services.crypto import keys, mchd
from services.crypto.cades import from_wire
from services.crypto.certificates import Certificate, load_certificate
from services.crypto.signer import LocalKeySigner, Signer
from services.logs import get_logger
from services.metrics import REGISTRY
from services.remd.n3 import StaffCodes, pix_endpoint_for
from services.remd.n3_kinds import DictionaryFile

__all__ = [
    "ROLES",
    "SIGNING_MODES",
    "SCHEMATRON_POLICIES",
    "ENVIRONMENTS",
    "TRANSPORTS",
    "Credential",
    "Mchd",
    "N3Settings",
    "RemdSettings",
    "MisGrant",
    "Organization",
    "OrganizationsConfig",
    "load_organizations",
    "log_operator_decisions",
    "read_grants",
    "read_mis_ids",
    "schema",
    "watch_organizations",
]


@functools.cache
def schema() -> dict[str, Any]:
    """The organisations file's JSON Schema, ``services/data/organizations.schema.json`` (packaged)."""
    text = (
        resources.files("services").joinpath("data", "organizations.schema.json").read_text(encoding="utf-8")
    )
    return json.loads(text)


#: the choices the schema allows, for code that branches on them
SIGNING_MODES = tuple(schema()["$defs"]["signing"]["properties"]["mode"]["enum"])
SCHEMATRON_POLICIES = tuple(schema()["properties"]["schematron"]["enum"])
ENVIRONMENTS = tuple(schema()["$defs"]["remd"]["properties"]["environment"]["enum"])
TRANSPORTS = tuple(schema()["$defs"]["remd"]["properties"]["transport"]["enum"])


def _log():
    return get_logger(__name__)


#: the secrets each process of the pipeline holds, by role: which kinds of key it loads (docs/security.md)
ROLES: dict[str, frozenset[str]] = {
    "signer": frozenset({"doctor", "organization"}),
    "sender": frozenset({"system", "n3"}),
    "status": frozenset({"system", "n3"}),
    "callbacks": frozenset({"system"}),
    "console": frozenset(),
}
#: without a role (the command-line tools): every key
ALL_SECRETS = frozenset({"doctor", "organization", "system", "n3"})
#: how often a watched configuration looks at its files (seconds)
RELOAD_SECONDS = 10.0

RELOADS = Counter(
    "emd_organizations_reloads",
    "Reloads of the organisations file and its keys after a change, by outcome (loaded | refused).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("loaded", "refused"):
    RELOADS.labels(_outcome)


# --------------------------------------------------------------------------------------------------
# model


@dataclass(eq=False)
class Credential:
    """A certificate and its private key. ``signer()`` raises the key's load error, if any, per use."""

    label: str  # "1.2.643…/organization", for messages and metric labels
    certificate: Certificate
    key_path: Path
    _signer: Signer | None = field(default=None, repr=False)
    _error: EmdError | None = field(default=None, repr=False)
    #: False: this process's role does not hold the key (not loaded; ``signer()`` raises KEY_NOT_HELD)
    held: bool = True

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
class N3Settings:
    """An organisation on the N3.Health route: its platform id, its auth GUID (a secret), where PixService and the
    [G] status method are, and each doctor's N3 codes (СНИЛС → ``StaffCodes``)."""

    lpu_id: str
    token: str = field(repr=False)
    pix_endpoint: str | None = None  #: None: the sibling PixService.svc of the EmkService address in use
    status_url: str | None = None  #: None: nothing to poll (the deadline decides)
    docstorage_url: str | None = None
    doctors: Mapping[str, StaffCodes] = field(default_factory=dict)

    def pix_for(self, emk_endpoint: str) -> str:
        """PixService's address for a document sent to ``emk_endpoint`` (production or the test stand)."""
        return self.pix_endpoint or pix_endpoint_for(emk_endpoint)


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
    n3: N3Settings | None = None  #: transport "n3": N3.Health's settings


@dataclass(frozen=True, kw_only=True)
class Organization:
    oid: str
    name: str
    inn: str
    ogrn: str
    mode: str  # "mis" | "server"
    doctors: Mapping[str, Credential]  # СНИЛС → credential (server mode)
    organization: Credential | None  # None: the kinds it registers need no MO_SIGN
    mchd: Mchd | None
    remd: RemdSettings | None
    #: СНИЛС of the doctors whose consent to server-side signing is recorded (``server_signing_consent``)
    consented: frozenset[str] = frozenset()
    #: kinds without a shipped XSD or Schematron this organisation's documents may be signed in: True (all),
    #: a set of НСИ 1520 codes, or False (none: KIND_NOT_VALIDATED)
    unvalidated_kinds: bool | frozenset[str] = False

    def may_sign_unvalidated(self, kind: str) -> bool:
        """Whether the operator allowed documents of ``kind`` to be signed without an XSD or Schematron."""
        allowed = self.unvalidated_kinds
        return allowed is True or (isinstance(allowed, frozenset) and kind in allowed)


@dataclass(frozen=True, kw_only=True)
class MisGrant:
    """What one МИС may publish: for which organisations, under which systemIds (its topics carry its ``id``)."""

    id: str
    organizations: frozenset[str]
    system_ids: frozenset[str]


@dataclass(kw_only=True)
class OrganizationsConfig:
    """The loaded file: organisations by OID, and the global МЧД / size / Schematron settings."""

    path: Path
    organizations: dict[str, Organization]
    #: misId → its grant (the ``mis`` list)
    mis: dict[str, MisGrant] = field(default_factory=dict)
    schematron: str = "warn"
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    required_powers: frozenset[str] = mchd.DEFAULT_REMD_POWERS
    revoked_inline: frozenset[str] = frozenset()
    revocation_file: Path | None = None
    _revocation_cache: tuple[float, frozenset[str]] | None = field(default=None, repr=False)
    #: N3's dictionary 195 (``n3_dictionary``, else the one shipped), read when an organisation is on the n3 route
    n3_dictionary: DictionaryFile | None = field(default=None, repr=False)
    #: the role whose keys were loaded (None: every key)
    role: str | None = None
    #: the files read, and their state then: a change to any of them is a new version to load
    _watched: tuple[Path, ...] = field(default=(), repr=False)
    _fingerprint: tuple[Any, ...] = field(default=(), repr=False)
    _default_max_bytes: int | None = field(default=None, repr=False)
    _listeners: list[Callable[[OrganizationsConfig], None]] = field(default_factory=list, repr=False)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_reload(self, listener: Callable[[OrganizationsConfig], None]) -> None:
        """Call ``listener(config)`` after each successful reload (for what a process derived from the file)."""
        self._listeners.append(listener)

    def reload_if_changed(self) -> bool:
        """Load the file again if it, or a file it names, changed since it was loaded; on success the new
        organisations replace the old ones in this object (so every holder of it sees them) and the listeners
        are told. A new version that does not load is logged and counted, and the old one kept: True only when
        a new version is in place."""
        with self._reload_lock:
            now = _fingerprint(self._watched)
            if now == self._fingerprint:
                return False
            try:
                new = load_organizations(
                    self.path, max_document_bytes=self._default_max_bytes, role=self.role
                )
            except EmdError as exc:
                self._fingerprint = now  # tried: the next change tries again
                RELOADS.labels("refused").inc()
                _log().error(
                    "organisations file changed but does not load: keeping the previous version",
                    path=str(self.path),
                    error=exc.message,
                )
                return False
            self.organizations, self.mis = new.organizations, new.mis
            self.schematron, self.max_document_bytes = new.schematron, new.max_document_bytes
            self.required_powers, self.revoked_inline = new.required_powers, new.revoked_inline
            self.revocation_file, self._revocation_cache = new.revocation_file, None
            self.n3_dictionary = new.n3_dictionary
            self._watched, self._fingerprint = new._watched, new._fingerprint
        RELOADS.labels("loaded").inc()
        _log().info(
            "organisations reloaded", path=str(self.path), count=len(self.organizations), role=self.role
        )
        for listener in list(self._listeners):
            listener(self)
        return True

    def organization(self, oid: str) -> Organization:
        """The organisation with this ФРМО OID, or ``PermanentError(ORGANIZATION_UNKNOWN)``."""
        try:
            return self.organizations[oid]
        except KeyError:
            raise PermanentError(
                f"organisation {oid} is not configured in {self.path.name}",
                reason="ORGANIZATION_UNKNOWN",
                organization=oid,
            ) from None

    def environment(self, oid: str, endpoint: str | None = None) -> str:
        """The РЭМД environment ("test" or "production") of the organisation's request to ``endpoint``: its
        configured one, except for a request to its test stand (``remd.test_endpoint``, before a promotion)."""
        remd = self.organization(oid).remd
        if remd is None or (endpoint is not None and endpoint == remd.test_endpoint):
            return "test"
        return remd.environment

    @property
    def revoked(self) -> frozenset[str]:
        """Revoked МЧД numbers: the inline list plus the revocation file (re-read when its mtime changes)."""
        if self.revocation_file is None:
            return self.revoked_inline
        try:
            mtime = self.revocation_file.stat().st_mtime
        except OSError as exc:
            # a revocation list we cannot read must not be mistaken for "nothing revoked"
            raise PermanentError(
                f"МЧД revocation file {self.revocation_file} is unreadable: {exc}",
                reason="MCHD_REVOCATION_UNAVAILABLE",
            ) from None
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

#: a place in the file, as JSON Schema paths give it: ("organizations", 0, "signing", "mode")
Where = tuple[str | int, ...]
_OID = re.compile(r"^\d+(\.\d+)+$")


class _File:
    """The file being loaded: every error it raises names the organisation and the field."""

    def __init__(self, path: Path, raw: Any, *, role: str | None = None) -> None:
        self.path, self.raw, self.role = path, raw, role
        self.holds = ROLES[role] if role is not None else ALL_SECRETS
        self.seen: list[Path] = []  # every file read, watched for changes

    def not_held(self, kind: str) -> PermanentError:
        return PermanentError(
            f"this process ({self.role}) does not hold {kind} keys: only the pods of their role mount them",
            reason="KEY_NOT_HELD",
        )

    def where(self, at: Where) -> str:
        """``organizations[1] (1.2.643…): signing.doctors[<СНИЛС>].certificate``: the organisation by index and
        OID (once its OID is valid), then the field."""
        text = ""
        for i, part in enumerate(at):
            if isinstance(part, int) or (i and at[i - 1] == "doctors"):
                text += f"[{part}]"
            else:
                text += (" " if text.endswith(":") else "." if text else "") + part
            if i == 1 and at[0] == "organizations" and len(at) > 2 and at[2] != "oid":
                oid = self._oid(at[1])
                text += f" ({oid}):" if oid else ""
        return text

    def _oid(self, index: str | int) -> str | None:
        try:
            oid = self.raw["organizations"][index]["oid"]
        except (KeyError, IndexError, TypeError):
            return None
        return oid if isinstance(oid, str) and _OID.match(oid) else None

    def error(self, at: Where, message: str) -> ConfigurationError:
        where = self.where(at)
        return ConfigurationError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")

    def file(self, at: Where, value: str) -> Path:
        """The existing file ``value`` names, relative to the organisations file."""
        p = Path(value)
        p = p if p.is_absolute() else self.path.parent / p
        if not p.is_file():
            raise self.error(at, f"no such file: {p}")
        self.seen.append(p)
        return p


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _known_fields(node: dict[str, Any]) -> set[str]:
    known = set(node.get("properties", {}))
    if "$ref" in node:  # the schema's references are all local: "#/$defs/<name>"
        known |= _known_fields(schema()["$defs"][node["$ref"].rsplit("/", 1)[1]])
    return known


def _schema_problem(error: ValidationError) -> tuple[Where, str]:
    """Where a schema violation is, and the message: the schema's ``errorMessage`` for that part (one for the
    whole part, or one per keyword), else one made from the keyword."""
    at: Where = tuple(error.absolute_path)
    # JSON values, all set on a raised error (jsonschema's types allow them to be unset)
    schema_part: Any = error.schema
    value: Any = error.validator_value
    instance: Any = error.instance
    custom = schema_part.get("errorMessage") if isinstance(schema_part, dict) else None
    if isinstance(custom, dict):
        custom = custom.get(str(error.validator))
    if error.validator == "required":
        missing = next(name for name in value if name not in instance)
        return at + (missing,), custom or "is required"
    if error.validator == "dependentRequired":
        missing = next(
            need
            for name, needs in value.items()
            if name in instance
            for need in needs
            if need not in instance
        )
        return at + (missing,), custom or "is required"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = _known_fields(schema_part)
        unknown = sorted(set(instance) - known)[0]
        return at + (unknown,), f"unknown field (known: {', '.join(sorted(known))})"
    if "propertyNames" in error.absolute_schema_path:
        return at + (instance,), custom or "is not an allowed key"
    if error.validator == "enum":
        return at, custom or f"expected one of {', '.join(value)}, got {instance!r}"
    return at, custom or error.message


def _check_shape(f: _File) -> None:
    """The whole file against the schema, before anything is loaded; the most relevant problem is raised."""
    error = best_match(_validator().iter_errors(f.raw))
    if error is not None:
        raise f.error(*_schema_problem(error))


def _credential(
    f: _File, at: Where, spec: Mapping[str, Any], label: str, *, kind: str, prefix: str = ""
) -> Credential:
    """The credential in ``spec``'s fields ``<prefix>key``, ``<prefix>certificate``, ``<prefix>password_file``
    and ``<prefix>password_env``. ``kind`` (doctor, organization, system): a key the role does not hold is not
    opened, only its certificate loaded."""
    cert_path = f.file(at + (prefix + "certificate",), spec[prefix + "certificate"])
    try:
        cert = load_certificate(cert_path)
    except EmdError as exc:
        raise f.error(at + (prefix + "certificate",), exc.message) from None
    if kind not in f.holds:
        key_path = Path(spec[prefix + "key"])
        return Credential(
            label=label, certificate=cert, key_path=key_path, _error=f.not_held(kind), held=False
        )
    key_path = f.file(at + (prefix + "key",), spec[prefix + "key"])
    cred = Credential(label=label, certificate=cert, key_path=key_path)
    password_file = spec.get(prefix + "password_file")
    try:
        password = keys.read_password(
            file=f.file(at + (prefix + "password_file",), password_file) if password_file else None,
            env=spec.get(prefix + "password_env"),
        )
        key = keys.load_private_key(key_path, password=password)
    except ConfigurationError:
        raise
    except PermanentError as exc:
        if exc.reason in ("KEY_PASSWORD_INVALID", "KEY_PASSWORD_MISSING"):
            cred._error = exc  # deferred: the documents of this organisation fail, the others go on
            _log().error("key unusable", credential=label, reason=exc.reason)
            return cred
        raise f.error(at + (prefix + "key",), exc.message) from None
    except OSError as exc:
        raise f.error(at + (prefix + "key",), str(exc)) from None
    try:
        cred._signer = LocalKeySigner(key, cert)
    except ConfigurationError:
        raise f.error(at + (prefix + "key",), "the private key does not belong to the certificate") from None
    return cred


def _doctors(
    f: _File, at: Where, oid: str, signing: Mapping[str, Any]
) -> tuple[dict[str, Credential], frozenset[str]]:
    """The organisation's doctors' keys by СНИЛС, and the СНИЛС of those whose consent to server-side signing is
    recorded."""
    doctors: dict[str, Credential] = {}
    consented: set[str] = set()
    for snils, dspec in (signing.get("doctors") or {}).items():
        number = digits(snils)
        dat = at + ("signing", "doctors", snils)
        cred = _credential(f, dat, dspec, f"{oid}/doctor", kind="doctor")
        if digits(cred.certificate.snils) != number:
            raise f.error(
                dat + ("certificate",), "the certificate's СНИЛС is not the one it is configured for"
            )
        cred.label = f"{oid}/doctor/{cred.certificate.serial_number:x}"  # no СНИЛС in labels: personal data
        doctors[number] = cred
        if dspec.get("server_signing_consent"):
            consented.add(number)
    return doctors, frozenset(consented)


def _organization(f: _File, at: Where, spec: dict[str, Any]) -> Organization:
    """One organisation whose shape the schema has checked: its files, keys and certificates."""
    oid = spec["oid"]
    signing = spec["signing"]
    doctors, consented = _doctors(f, at, oid, signing)

    org_cred: Credential | None = None
    poa: Mchd | None = None
    if signing.get("organization") is not None:
        oat = at + ("signing", "organization")
        ospec = signing["organization"]
        org_cred = _credential(f, oat, ospec, f"{oid}/organization", kind="organization")
        if org_cred.certificate.ogrn and org_cred.certificate.ogrn != spec["ogrn"]:
            raise f.error(oat + ("certificate",), f"the certificate's ОГРН is not {spec['ogrn']}")
        if ospec.get("mchd") is not None:
            mat = oat + ("mchd",)
            xml_path = f.file(mat + ("xml",), ospec["mchd"]["xml"])
            sig_path = f.file(mat + ("signature",), ospec["mchd"]["signature"])
            xml = xml_path.read_bytes()
            try:
                parsed = mchd.parse_mchd(xml)
                signature = from_wire(sig_path.read_bytes())
            except PermanentError as exc:
                raise f.error(mat, exc.message) from None
            poa = Mchd(poa=parsed, xml=xml, signature=signature, xml_path=xml_path)

    remd: RemdSettings | None = None
    if spec.get("remd") is not None:
        r = spec["remd"]
        system = None
        if r.get("system_key"):  # the schema requires the certificate with it
            system = _credential(f, at + ("remd",), r, f"{oid}/system", kind="system", prefix="system_")
        remd = RemdSettings(
            environment=r["environment"],
            endpoint=r["endpoint"],
            callback_url=r.get("callback_url"),
            client_entity_id=r.get("client_entity_id"),
            system=system,
            rate_limit_per_minute=r.get("rate_limit_per_minute", 60),
            transport=r.get("transport", "ips"),
            test_endpoint=r.get("test_endpoint"),
            n3=_n3(f, at + ("remd", "n3"), r["n3"]) if r.get("n3") else None,
        )
        if remd.transport == "n3" and remd.n3 is not None and remd.n3.pix_endpoint is None:
            for name in ("endpoint", "test_endpoint"):
                address = getattr(remd, name)
                try:
                    if address:
                        pix_endpoint_for(address)
                except ValueError as exc:
                    raise f.error(at + ("remd", name), str(exc)) from None
    return Organization(
        oid=oid,
        name=spec["name"].strip(),
        inn=spec["inn"],
        ogrn=spec["ogrn"],
        mode=signing["mode"],
        doctors=doctors,
        organization=org_cred,
        mchd=poa,
        remd=remd,
        consented=consented,
        unvalidated_kinds=_unvalidated_kinds(spec.get("allow_unvalidated_kinds", False)),
    )


def _unvalidated_kinds(value: bool | list[str]) -> bool | frozenset[str]:
    return frozenset(value) if isinstance(value, list) else bool(value)


def _grants(
    f: _File, raw: list[dict[str, Any]], organizations: Mapping[str, Organization]
) -> dict[str, MisGrant]:
    """The ``mis`` list: each id once, each granted organisation configured."""
    grants: dict[str, MisGrant] = {}
    for i, item in enumerate(raw):
        if item["id"] in grants:
            raise f.error(("mis", i, "id"), f"МИС {item['id']} is configured twice")
        for j, oid in enumerate(item["organizations"]):
            if oid not in organizations:
                raise f.error(("mis", i, "organizations", j), f"organisation {oid} is not configured")
        grants[item["id"]] = MisGrant(
            id=item["id"],
            organizations=frozenset(item["organizations"]),
            system_ids=frozenset(item["systemIds"]),
        )
    return grants


def log_operator_decisions(config: OrganizationsConfig) -> None:
    """What the operator allowed beyond the defaults, and each МИС's grant: said once by the signer at start, the
    one process they matter to (docs/security.md)."""
    log = _log()
    for org in config.organizations.values():
        if org.unvalidated_kinds:
            allowed = "all" if org.unvalidated_kinds is True else ",".join(sorted(org.unvalidated_kinds))
            log.warning(
                "organisation allows kinds without a shipped XSD or Schematron to be signed",
                organization=org.oid,
                kinds=allowed,
            )
        if org.mode == "server":
            missing = len(set(org.doctors) - org.consented)
            if missing:
                log.warning(
                    "doctors' keys without a recorded consent to server-side signing: they sign nothing",
                    organization=org.oid,
                    doctors=missing,
                )
    for grant in config.mis.values():
        log.info(
            "МИС granted",
            mis=grant.id,
            organizations=",".join(sorted(grant.organizations)),
            system_ids=",".join(sorted(grant.system_ids)),
        )


def _n3(f: _File, at: Where, spec: Mapping[str, Any]) -> N3Settings:
    """The n3 object: the token read now (file or environment), so a missing one fails at start; a role that
    does not use N3 (the signer, the callback service, the console) does not read it."""
    token = _n3_token(f, at, spec) if "n3" in f.holds else ""
    doctors = {
        digits(snils): StaffCodes(speciality=codes["id_speciality"], position=codes["id_position"])
        for snils, codes in (spec.get("doctors") or {}).items()
    }
    return N3Settings(
        lpu_id=spec["lpu_id"],
        token=token,
        pix_endpoint=spec.get("pix_endpoint"),
        status_url=spec.get("status_url"),
        docstorage_url=spec.get("docstorage_url"),
        doctors=doctors,
    )


def _n3_token(f: _File, at: Where, spec: Mapping[str, Any]) -> str:
    """The organisation's N3 token (file or environment), read now so that a missing one fails at start."""
    try:
        token = keys.read_password(
            file=f.file(at + ("token_file",), spec["token_file"]) if "token_file" in spec else None,
            env=spec.get("token_env"),
        )
    except PermanentError as exc:
        raise f.error(at + ("token_env",), exc.message) from None
    if not token or not token.strip():
        raise f.error(at, "the N3 token is empty")
    return token.strip()


def _read(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"{file}: no such file (EMD_ORGANIZATIONS; `emd certs dev-config DIR` writes a development one)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{file}: not readable JSON: {exc}") from None


def read_grants(path: str | os.PathLike) -> dict[str, MisGrant]:
    """The МИС the organisations file grants (its ``mis`` list), its shape checked, no key loaded: what ``emd
    topics`` needs to name each МИС's topics, and ``emd clinic test`` to publish as a МИС of the clinic."""
    file = Path(path)
    f = _File(file, _read(file))
    _check_shape(f)
    return {
        m["id"]: MisGrant(
            id=m["id"], organizations=frozenset(m["organizations"]), system_ids=frozenset(m["systemIds"])
        )
        for m in f.raw.get("mis", [])
    }


def read_mis_ids(path: str | os.PathLike) -> list[str]:
    """The ids of the МИС the organisations file grants, in the file's order (``read_grants``)."""
    return list(read_grants(path))


def load_organizations(
    path: str | os.PathLike, *, max_document_bytes: int | None = None, role: str | None = None
) -> OrganizationsConfig:
    """Read and check the organisations file; raise ``ConfigurationError`` naming the organisation and field.

    The shape is checked first, whole, by the file's JSON Schema (``schema()``); then each organisation's
    files, keys and certificates. ``max_document_bytes``: the deployment's default
    (``Settings.max_document_bytes``) when the file sets none. ``role``: one of ``ROLES``, whose keys alone
    are loaded (None: every key, for the command-line tools).
    """
    if role is not None and role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    file = Path(path)
    raw = _read(file)
    f = _File(file, raw, role=role)
    _check_shape(f)
    schematron = raw.get("schematron", "warn")
    revocation_file = (
        f.file(("mchd_revocation_file",), raw["mchd_revocation_file"])
        if raw.get("mchd_revocation_file")
        else None
    )
    powers = raw.get("mchd_required_powers")
    organizations: dict[str, Organization] = {}
    for i, item in enumerate(raw["organizations"]):
        org = _organization(f, ("organizations", i), item)
        if org.oid in organizations:
            raise f.error(("organizations", i), f"organisation {org.oid} is configured twice")
        organizations[org.oid] = org
    n3_dictionary = None
    if any(o.remd is not None and o.remd.transport == "n3" for o in organizations.values()):
        named = f.file(("n3_dictionary",), raw["n3_dictionary"]) if raw.get("n3_dictionary") else None
        try:
            n3_dictionary = DictionaryFile(named)
        except ConfigurationError as exc:
            raise f.error(("n3_dictionary",), exc.message) from None
    config = OrganizationsConfig(
        path=file,
        n3_dictionary=n3_dictionary,
        organizations=organizations,
        mis=_grants(f, raw.get("mis", []), organizations),
        schematron=schematron,
        max_document_bytes=raw.get("max_document_bytes", max_document_bytes or MAX_DOCUMENT_BYTES),
        required_powers=frozenset(powers) if powers else mchd.DEFAULT_REMD_POWERS,
        revoked_inline=frozenset(r.strip().lower() for r in raw.get("mchd_revoked", [])),
        revocation_file=revocation_file,
        role=role,
        _default_max_bytes=max_document_bytes,
    )
    config._watched = (file, *dict.fromkeys(f.seen))
    config._fingerprint = _fingerprint(config._watched)
    if revocation_file is not None:
        config.revoked  # noqa: B018 - read once now, so an unreadable file fails at start
    _log().info(
        "organisations loaded",
        path=str(file),
        count=len(organizations),
        mis=len(config.mis),
        schematron=schematron,
        role=role,
    )
    return config


def _fingerprint(paths: tuple[Path, ...]) -> tuple[Any, ...]:
    """What changes when a file is replaced: identity, time and size of each (following symlinks: Kubernetes
    swaps a volume's ``..data`` link to a new directory); None for a file that is gone."""
    out: list[Any] = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


def watch_organizations(config: OrganizationsConfig, *, interval: float = RELOAD_SECONDS) -> threading.Event:
    """Look at ``config``'s files every ``interval`` seconds in a daemon thread and reload it when they changed
    (``reload_if_changed``); set the returned event to stop."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                config.reload_if_changed()
            except Exception as exc:  # noqa: BLE001 - a listener failed: logged, the next change tries again
                _log().error("organisations reload failed", error=f"{type(exc).__name__}: {exc}"[:300])

    threading.Thread(target=run, name="emd-organizations-reload", daemon=True).start()
    return stop
