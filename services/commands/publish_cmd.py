"""``emd publish``: hand СЭМД files to the pipeline (``emd.document.created.<misId>``) from the command line.

It publishes as one МИС (``--mis``, default ``EMD_MIS_ID``), to that МИС's own topic: the pipeline signs only
for the organisations and systemIds the organisations file grants it (docs/security.md).

Every file is read, checked and turned into its event first; only when *all* are valid is anything
sent, so a bad file in a batch publishes nothing. ``--dry-run`` stops after the checks and prints the
events (large documents show the reference they would get; nothing is stored or sent).

``--dry-run --record REC.json`` checks a record as a МИС in another language would send it, exactly as the
signer will (``producer.contract``): ``{"key": "<localUid>", "headers": {"emd-event-type": …, "emd-trace-id": …,
"emd-schema-version": "1"}, "value": {<the event>}}`` (``value`` may also be the event's JSON text). A refusal
prints its reason (``KEY_NOT_LOCAL_UID``, ``HEADER_MISSING``, ``HEADER_MISMATCH``, ``KIND_NOT_VALID_ON_DATE``,
``EVENT_INVALID``…) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from producer import contract, events, topology
from producer.client import (
    DocumentPublisher,
    InvalidDocument,
    PublishError,
    build_created_event,
)
from producer.errors import ConfigurationError, PermanentError
from producer.events import Envelope
from services import telemetry
from services.config import Settings
from services.documents.store import DocumentStore, store_from_settings
from services.messaging.clients import security_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="publish СЭМД files to a МИС's emd.document.created.<misId>",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="*", type=Path, metavar="DOC.xml", help="СЭМД (HL7 CDA) files")
    p.add_argument(
        "--kind", help="НСИ 1520 kind; checked against the document (required for legacy templates)"
    )
    p.add_argument("--org", help="organisation OID; checked against the document's custodian")
    p.add_argument(
        "--meta",
        type=Path,
        help=f"JSON object with any of: {', '.join(__import__('producer.client').client.META_FIELDS)}",
    )
    p.add_argument(
        "--mis", help="the МИС to publish as: its topic emd.document.created.<MIS> (default: EMD_MIS_ID)"
    )
    p.add_argument("--system-id", help="registering system id (default: KAFKA_CLIENT_ID)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument(
        "--dry-run", action="store_true", help="check and print the events; store and send nothing"
    )
    p.add_argument(
        "--record",
        type=Path,
        action="append",
        default=[],
        metavar="REC.json",
        help="with --dry-run: check a Kafka record (key, headers, value) as the signer will (repeatable)",
    )
    p.set_defaults(func=run_publish)


class _PreviewStore:
    """Gives the reference the real store would return, without writing (for --dry-run)."""

    def __init__(self, real: DocumentStore) -> None:
        self.real = real

    def put(self, data: bytes, *, durable: bool = True) -> str:
        return self.real.ref_for(data)

    def get(self, ref: str, *, max_bytes: int | None = None) -> bytes:
        return self.real.get(ref, max_bytes=max_bytes)

    def exists(self, ref: str) -> bool:
        return self.real.exists(ref)

    def ref_for(self, data: bytes) -> str:
        return self.real.ref_for(data)


def _fail(message: str, code: int = 1) -> int:
    print(f"emd publish: {message}", file=sys.stderr)
    return code


class _Refused(Exception):
    """What stops ``emd publish``: its message and exit status (1 bad input, 2 configuration, 3 broker)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def run_publish(args: argparse.Namespace) -> int:
    try:
        if args.record:
            _check_records(args)
            if not args.files:
                return 0
        if not args.files:
            raise _Refused("give the СЭМД files to publish (DOC.xml …), or --dry-run --record REC.json", 2)
        return _publish(args)
    except _Refused as exc:
        return _fail(exc.message, exc.code)


def _check_records(args: argparse.Namespace) -> None:
    if not args.dry_run:
        raise _Refused("--record checks a record and publishes nothing: give --dry-run with it", 2)
    for path in args.record:
        _check_record_file(path)


def _publish(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        telemetry.start("emd-mis", instrument=())  # the МИС library's publish spans, the store's
    except ConfigurationError as exc:
        raise _Refused(str(exc), 2) from None
    system_id = args.system_id or settings.kafka_client_id
    mis_id = args.mis or settings.mis_id
    if not args.dry_run and not mis_id:
        raise _Refused(
            "which МИС publishes? give --mis ID or set EMD_MIS_ID (the organisations file's mis list)", 2
        )
    if mis_id and not topology.is_mis_id(mis_id):
        raise _Refused(
            f"--mis {mis_id!r}: expected lower-case letters, digits and dashes (not dlt or retry)", 2
        )
    meta = _read_meta(args.meta) if args.meta else None
    try:
        store = store_from_settings(settings)
    except ConfigurationError as exc:
        raise _Refused(str(exc), 2) from None

    bootstrap = args.bootstrap or settings.kafka_bootstrap_servers
    if not args.dry_run and not bootstrap:
        raise _Refused(
            "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS (or --bootstrap), or start one with "
            "`emd broker` and export the address it prints",
            2,
        )

    # 1. check everything; nothing is stored or sent unless every file passes
    checked = [_checked(path, args, settings, store, system_id, meta) for path in args.files]
    if args.dry_run:
        for _path, _data, event in checked:
            print(json.dumps(event, ensure_ascii=False, indent=2))
        print(f"dry run: {len(checked)} document(s) valid, nothing published", file=sys.stderr)
        return 0

    # 2. publish, each send confirmed by the broker
    try:
        publisher = DocumentPublisher(
            bootstrap,
            mis_id=mis_id,
            store=store,
            client_id=f"{settings.kafka_client_id}-publish",
            system_id=system_id,
            inline_limit=settings.inline_document_limit,
            max_bytes=settings.max_document_bytes,
            security=security_from(settings),
        )
    except ConfigurationError as exc:
        raise _Refused(str(exc), 2) from None
    except PublishError as exc:
        raise _Refused(f"{exc.message} (is the broker running? `emd broker` starts one)", 3) from None
    total = len(checked)
    with publisher:
        for n, (path, data, _event) in enumerate(checked, 1):
            try:
                done = publisher.publish(data, kind=args.kind, organization_oid=args.org, meta=meta)
            except PublishError as exc:
                raise _Refused(f"{path}: {exc.message}; {n - 1} of {total} published before it", 3) from None
            prefix = f"[{n}/{total}] " if total > 1 else ""
            print(
                f"{prefix}{path.name}: published localUid={done.local_uid} to {done.topic} "
                f"partition {done.partition} offset {done.offset}",
                flush=True,
            )
    return 0


def _read_meta(path: Path) -> dict[str, Any]:
    """The ``--meta`` JSON object."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Refused(f"{path}: meta: file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(f"{path}: meta: not a JSON file ({exc})") from None
    if not isinstance(meta, dict):
        raise _Refused(f"{path}: meta: expected a JSON object")
    return meta


def _checked(
    path: Path,
    args: argparse.Namespace,
    settings: Settings,
    store: DocumentStore,
    system_id: str,
    meta: dict[str, Any] | None,
) -> tuple[Path, bytes, Envelope]:
    """One file read and checked as ``publish`` would send it, nothing stored: (path, bytes, the event)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Refused(f"{path}: file: not found") from None
    except OSError as exc:
        raise _Refused(f"{path}: file: {exc.strerror}") from None
    try:
        event = build_created_event(
            data,
            system_id=system_id,
            store=_PreviewStore(store),
            inline_limit=settings.inline_document_limit,
            max_bytes=settings.max_document_bytes,
            kind=args.kind,
            organization_oid=args.org,
            meta=meta,
        )
    except InvalidDocument as exc:
        raise _Refused(f"{path}: {exc.message} [{exc.reason}]") from None
    except ConfigurationError as exc:
        raise _Refused(f"{path}: {exc}", 2) from None
    try:  # the record publish would send, checked as the signer checks it
        contract.check_record(event["data"]["localUid"], events.headers_for(event), event)
    except PermanentError as exc:
        raise _Refused(f"{path}: {exc.message} [{exc.reason}]") from None
    return path, data, event


def _check_record_file(path: Path) -> None:
    """One ``--record`` file checked as the signer checks a record: printed when valid, else ``_Refused``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Refused(f"{path}: file: not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(raw, dict) or "value" not in raw:
        raise _Refused(f'{path}: expected {{"key": …, "headers": {{…}}, "value": {{the event}}}}')
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _Refused(f"{path}: headers: expected an object of strings")
    key = raw.get("key")
    if key is not None and not isinstance(key, str):
        raise _Refused(f"{path}: key: expected a string")
    value = raw["value"]
    encoded = (
        value.encode("utf-8") if isinstance(value, str) else json.dumps(value, ensure_ascii=False).encode()
    )
    try:
        event = contract.read_record(key, headers, encoded)
    except PermanentError as exc:
        raise _Refused(f"{path}: {exc.message} [{exc.reason}]") from None
    data = event["data"]
    print(
        f"{path}: record valid: localUid={data['localUid']} kind={data['kind']}, key and headers as the signer "
        "expects; nothing published",
        flush=True,
    )
