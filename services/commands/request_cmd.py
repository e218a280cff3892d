"""``emd request DOC.xml``: every request the sender would send for a document, in order, printed, never sent.

    emd request DOC.xml [--org OID] [--route ips|n3] [--dev] [--json] [--unmask]

What support shows Нетрика or СТП ЕГИСЗ before (or after) a document fails. The document goes the pipeline's own
way: the МИС library's checks and event (``producer.client``), the signer's checks (N3's codes on the n3 route,
``services.pipeline.n3_route``), the sender's registration and the route's builder (``services.remd``). On the n3
route: PixService ``AddPatient`` (always shown, whatever the sender remembers of the patient) then EmkService
``AddMedRecord``; on ips: ``registerDocument``. **No connection is opened** and **no qualified signature is
made**:

* ``--dev``: a throwaway development configuration for the document's organisation, as ``emd run`` writes it
  (development keys from a fresh dev CA; needs the development tooling, emd-lab, which offers it through the
  ``emd.dev_config`` entry point): the doctors' and the organisation's signatures, and on ips the WS-Security
  signature, are real development signatures, so the output verifies (``emd request --dev --route ips``);
* otherwise the organisations file (``EMD_ORGANIZATIONS``) gives the endpoints and codes, and every signature is a
  placeholder.

Secrets are never printed: the N3 GUID is a placeholder. Patient data (names, birth dates, СНИЛС, the attached
СЭМД) is masked, except with ``--dev`` (development data) or ``--unmask``, which is written to the desk's audit
log with who asked. ``--json`` prints ``[{"operation", "endpoint", "soapAction", "envelope"}]`` in sending order.
Exit 0: printed; 1: the pipeline would refuse the document (its reason printed); 2: bad input or configuration.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from lxml import etree

from producer.errors import EmdError, PermanentError

#: installed packages that write a development configuration for one document (``callable(directory, document,
#: route) -> organisations file``): the development tooling, emd-lab, offers ``emd request --dev`` this way
DEV_CONFIG_GROUP = "emd.dev_config"
ROUTES = ("ips", "n3")
#: what stands in for the N3 GUID in every printed request (the real one is a secret)
GUID_PLACEHOLDER = "PLACEHOLDER-N3-GUID"
SYSTEM_ID = "emd-request"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "request",
        help="print every request the sender would send for a document (nothing is sent)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("document", type=Path, metavar="DOC.xml", help="the СЭМД (HL7 CDA)")
    p.add_argument("--org", metavar="OID", help="the organisation (checked against the document's custodian)")
    p.add_argument(
        "--route",
        choices=ROUTES,
        help="ips or n3 (default: the organisation's remd.transport; ips with --dev)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="a throwaway development configuration with development keys (needs emd-lab installed)",
    )
    p.add_argument(
        "--json", action="store_true", help='[{"operation", "endpoint", "soapAction", "envelope"}]'
    )
    p.add_argument("--unmask", action="store_true", help="show patient data (written to the audit log)")
    p.set_defaults(func=run_request)


@dataclass(frozen=True)
class Request:
    operation: str
    endpoint: str
    soap_action: str
    envelope: bytes

    def to_json(self, show: Callable[[bytes], str]) -> dict[str, str]:
        return {
            "operation": self.operation,
            "endpoint": self.endpoint,
            "soapAction": self.soap_action,
            "envelope": show(self.envelope),
        }


class Refused(Exception):
    """Bad input or configuration: the message for the user (exit 2)."""


# --- configuration -----------------------------------------------------------------------------------------


def _dev_config(directory: Path, document: bytes, route: str) -> Path:
    providers = sorted(entry_points(group=DEV_CONFIG_GROUP), key=lambda ep: ep.name)
    if not providers:
        raise Refused(
            "--dev needs the development tooling (emd-lab): it writes the throwaway development configuration; "
            "without --dev the organisations file (EMD_ORGANIZATIONS) is used and signatures are placeholders"
        )
    return Path(providers[0].load()(directory, document, route))


def _config(args: argparse.Namespace, document: bytes, route: str | None, directory: Path) -> Any:
    from services.config import Settings
    from services.pipeline.organizations import load_organizations

    if args.dev:
        path = _dev_config(directory, document, route or "ips")
    else:
        path = Path(Settings.from_env().organizations_file)
    try:
        return load_organizations(path)
    except EmdError as exc:
        hint = "" if args.dev else " (or give --dev for a throwaway development configuration)"
        raise Refused(f"{exc.message}{hint}") from None


# --- signatures: development ones, or placeholders ----------------------------------------------------------


class Placeholders:
    """Stand-ins for signatures that are not made: each is the base64 of its own description, shown as
    ``[placeholder: …]`` in the printed requests."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def cms(self, label: str) -> str:
        text = base64.b64encode(f"placeholder: {label}".encode()).decode()
        self.labels[text] = f"[placeholder: {label}, made when the document is signed]"
        return text

    def show(self, text: str) -> str:
        for b64, label in self.labels.items():
            text = text.replace(b64, label)
        return text


def _signatures(
    data: Mapping[str, Any], document: bytes, config: Any, *, dev: bool, placeholders: Placeholders
) -> dict[str, Any]:
    """The signed event's signatures: the signer's own (development keys) with ``dev``; else placeholders after
    the signer's checks (the document, N3's codes), so a refusal shows here as it would at the signer."""
    from services.pipeline.n3_route import dictionary_of, n3_codes, on_n3_route
    from services.pipeline.signing import check_document, sign_document

    if dev:
        return sign_document(dict(data), document, config)
    meta = check_document(
        dict(data), document, max_document_bytes=config.max_document_bytes, schematron=config.schematron
    )
    org = config.organization(data["organizationOid"])
    if on_n3_route(org):
        n3_codes(data, org, dictionary_of(config))
    personal: list[dict[str, Any]] = []
    for s in data["signers"]:
        if any(p["snils"] == s["snils"] for p in personal):
            continue
        personal.append(
            {
                "snils": s["snils"],
                "role": s["role"],
                "cms": placeholders.cms(f"the {s['role']}'s detached CMS"),
                "signingTime": data["creationTime"],
                "source": "server",
            }
        )
    organization = None
    if meta.requires_organization_signature is not False:
        organization = {"cms": placeholders.cms("the organisation's detached CMS"), "mchd": None}
    return {"personal": personal, "organization": organization}


# --- the requests ----------------------------------------------------------------------------------------------


def _n3_requests(signed: Mapping[str, Any], document: bytes, org: Any, config: Any) -> list[Request]:
    from services.pipeline.n3_route import dictionary_of, n3_codes
    from services.pipeline.submission import registration_from_event
    from services.remd import n3
    from services.remd._transports.n3 import build_requests
    from services.remd.transport import SubmitRequest

    remd = org.remd
    if remd is None or remd.n3 is None:
        raise Refused(
            f"organisation {org.oid} is not configured for N3 (remd.n3); give --dev for a development one"
        )
    request = SubmitRequest(
        registration=registration_from_event(signed),
        message_id="dry-run",
        endpoint=remd.endpoint,
        document=document,
        auth_token=GUID_PLACEHOLDER,
        lpu_id=remd.n3.lpu_id,
        n3_codes=n3_codes(signed, org, dictionary_of(config)),
        add_patient=True,  # always shown, whatever the sender remembers of the patient
        pix_endpoint=remd.n3.pix_for(remd.endpoint),
    )
    try:
        calls = build_requests(request)
    except ValueError as exc:
        raise PermanentError(str(exc), reason="REQUEST_BUILD_FAILED") from None
    return [Request(op, endpoint, n3.soap_action(op), body) for op, endpoint, body in calls]


def _ips_requests(signed: Mapping[str, Any], org: Any, *, dev: bool) -> list[Request]:
    from services.pipeline.submission import registration_from_event
    from services.remd import names, soap

    remd = org.remd
    if remd is None or (dev and remd.system is None):
        raise Refused(f"organisation {org.oid} has no ИПС settings (remd); give --dev for a development one")
    key = remd.system.signer() if dev and remd.system is not None else None
    try:
        body, _ = soap.build_register_document(
            registration_from_event(signed),
            client_entity_id=remd.client_entity_id or "",
            to=remd.endpoint,
            reply_to=remd.callback_url or "",
            key=key,
            certificate=remd.system.certificate if key is not None else None,
        )
    except ValueError as exc:
        raise PermanentError(str(exc), reason="REQUEST_BUILD_FAILED") from None
    return [Request("registerDocument", remd.endpoint, names.ACTION_REGISTER_DOCUMENT, body)]


def build(
    document: bytes, config: Any, *, route: str | None, org_oid: str | None, dev: bool
) -> tuple[list[Request], Placeholders, dict[str, Any]]:
    """The requests of ``document`` on ``route`` (default: its organisation's), the placeholders used, and the
    created event's data. ``PermanentError``: the pipeline would refuse the document (its reason)."""
    from producer.client import InvalidDocument, build_created_event

    try:
        data = dict(
            build_created_event(document, system_id=SYSTEM_ID, store=None, organization_oid=org_oid)["data"]
        )
    except InvalidDocument as exc:
        raise Refused(f"{exc.field}: {exc.message}") from None
    org = config.organization(data["organizationOid"])
    route = route or (org.remd.transport if org.remd is not None else "ips")
    placeholders = Placeholders()
    signed = {**data, "signatures": _signatures(data, document, config, dev=dev, placeholders=placeholders)}
    if route == "n3":
        return _n3_requests(signed, document, org, config), placeholders, data
    return _ips_requests(signed, org, dev=dev), placeholders, data


# --- showing them ----------------------------------------------------------------------------------------------


def _pretty(envelope: bytes) -> str:
    from producer.xmlsafe import parse_xml

    return etree.tostring(parse_xml(envelope), encoding="unicode", pretty_print=True)


def _signed(envelope: bytes) -> bool:
    from services.remd import names

    return names.NS_WSSE.encode() in envelope


def _masked(envelope: bytes, document: bytes, *, pretty: bool) -> str:
    """Patient data replaced (services.desk's masking of kept requests); the attached СЭМД summarised."""
    from services.desk.deadletters import mask_xml

    text = mask_xml((_pretty(envelope) if pretty else envelope.decode("utf-8")).encode()) or ""
    summary = f"[the signed СЭМД: {len(document)} bytes, sha256 {hashlib.sha256(document).hexdigest()}]"
    return re.sub(r"(<(?:[\w.-]+:)?Data>)\*\*\*(</)", lambda m: f"{m.group(1)}{summary}{m.group(2)}", text)


def run_request(args: argparse.Namespace) -> int:
    from services import logs

    logs.configure(level="warning")  # stdout is for the requests (and --json)
    try:
        document = args.document.read_bytes()
    except OSError as exc:
        print(f"emd request: {args.document}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="emd-request-") as directory:
        try:
            config = _config(args, document, args.route, Path(directory))
            requests, placeholders, data = build(
                document, config, route=args.route, org_oid=args.org, dev=args.dev
            )
        except Refused as exc:
            print(f"emd request: {exc}", file=sys.stderr)
            return 2
        except PermanentError as exc:
            print(
                f"emd request: the pipeline would refuse this document: {exc.reason}: {exc.message}",
                file=sys.stderr,
            )
            return 1
    if args.unmask and not args.dev:
        _audit(data["localUid"])

    def show(envelope: bytes) -> str:
        # exact bytes, as they would be sent (a WS-Security signature must verify), unless masked; text mode
        # indents a request no signature covers
        if not (args.dev or args.unmask):
            text = _masked(envelope, document, pretty=not args.json)
        elif args.json or _signed(envelope):
            text = envelope.decode("utf-8")
        else:
            text = _pretty(envelope)
        return placeholders.show(text)

    if not (args.dev or args.unmask):
        print("emd request: patient data masked; --unmask shows it, and is logged", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json(show) for r in requests], ensure_ascii=False, indent=2))
        return 0
    for n, r in enumerate(requests, 1):
        print(f"== {n}. {r.operation} → {r.endpoint}\nSOAPAction: {r.soap_action}\n{show(r.envelope)}")
    return 0


def _audit(local_uid: str) -> None:
    """``--unmask`` is written to the desk's audit log (who looked at which document's patient data)."""
    from services.commands.dlq_cmd import actor
    from services.config import Settings
    from services.lifecycle.support_tables import open_support_tables
    from services.logs import get_logger

    settings = Settings.from_env()
    tables = open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)
    try:
        tables.audit("request.unmask", actor=actor(), target=local_uid, via="emd request")
    finally:
        tables.close()
    get_logger(__name__).warning("request.unmask", local_uid=local_uid, actor=actor())
