"""``emd clinic``: connect a clinic as the МИС's support team does — check, test on the test stand, promote.

    emd clinic list                          every configured clinic with its onboarding state
    emd clinic check OID [--ca FILE]         the readiness list: each line ok or what to do (exit 1 if any fails)
    emd clinic test OID [--document F]       one real round trip on the test stand through the running pipeline
    emd clinic promote OID [--force]         to production, only after a successful test (--force is logged)
    emd clinic suspend OID --reason TEXT     hold the clinic's documents again

States: onboarding → testing → production (→ suspended), kept in the support tables next to the lifecycle
(``EMD_LIFECYCLE_STORE``). Until a clinic is promoted its documents go to its test stand or are held
(``EMD_UNPROMOTED_CLINICS``, docs/support.md). ``test`` needs the pipeline running (broker, workers,
callback service); without ``--document`` it uses a development sample of that organisation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from producer.errors import ConfigurationError, EmdError
from services import logs
from services.config import Settings

_log = logs.get_logger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clinic",
        help="clinic onboarding: readiness check, test-stand test, promotion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="clinic_command", required=True)
    q = csub.add_parser("list", help="every configured clinic with its onboarding state")
    q.set_defaults(func=_errors(cmd_list))
    q = csub.add_parser("check", help="readiness list of one clinic (exit 1 when a line fails)")
    q.add_argument("oid", metavar="OID", help="the clinic's ФРМО OID")
    q.add_argument(
        "--ca",
        type=Path,
        action="append",
        default=None,
        help="a CA certificate the clinic's certificates must chain to (repeatable; default: ca.pem "
        "beside the organisations file)",
    )
    q.add_argument("--config", type=Path, default=None, help="organisations file (default EMD_ORGANIZATIONS)")
    q.set_defaults(func=_errors(cmd_check))
    q = csub.add_parser("test", help="one real registration on the test stand, through the running pipeline")
    q.add_argument("oid", metavar="OID")
    q.add_argument("--document", type=Path, default=None, help="the СЭМД to register (default: a sample)")
    q.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for РЭМД (default 300)")
    q.add_argument(
        "--mis", default="", help="publish as this МИС (default EMD_MIS_ID, else the МИС granted the clinic)"
    )
    q.set_defaults(func=_errors(cmd_test))
    q = csub.add_parser(
        "promote", help="switch to production (refused before a successful test unless --force)"
    )
    q.add_argument("oid", metavar="OID")
    q.add_argument("--force", action="store_true", help="promote without a recorded test (logged)")
    q.set_defaults(func=_errors(cmd_promote))
    q = csub.add_parser("suspend", help="hold the clinic's documents (back to the test stand or held)")
    q.add_argument("oid", metavar="OID")
    q.add_argument("--reason", required=True, help="why (kept in the audit log)")
    q.set_defaults(func=_errors(cmd_suspend))


def _errors(command):
    def run(args: argparse.Namespace) -> int:
        logs.configure(level="warning")  # stdout is for the answer
        try:
            return command(args)
        except EmdError as exc:
            print(f"emd clinic: {exc.message}", file=sys.stderr)
            return 1

    run.__doc__ = command.__doc__
    return run


def _tables(settings: Settings) -> Any:
    from services.lifecycle.support_tables import open_support_tables

    return open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)


@contextmanager
def _opened_tables() -> Iterator[Any]:
    tables = _tables(Settings.from_env())
    try:
        yield tables
    finally:
        tables.close()


def _actor() -> str:
    from services.commands.dlq_cmd import actor

    return actor()


def cmd_list(args: argparse.Namespace) -> int:
    from services.pipeline.organizations import load_organizations

    settings = Settings.from_env()
    config = load_organizations(settings.organizations_file)
    tables = _tables(settings)
    try:
        for oid, org in sorted(config.organizations.items()):
            c = tables.clinic(oid)
            tested = (
                f"tested {c.tested_at:%Y-%m-%d %H:%M} UTC ({c.tested_local_uid})"
                if c.tested_at
                else "not tested"
            )
            print(f"{oid}  {c.state:<10}  {tested}  {org.name}")
    finally:
        tables.close()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from services.desk import readiness
    from services.pipeline.organizations import load_organizations

    settings = Settings.from_env()
    path = args.config or settings.organizations_file
    try:
        config = load_organizations(path, max_document_bytes=settings.max_document_bytes)
    except ConfigurationError as exc:
        print(readiness.Line("organisations file", False, exc.message).render())
        return 1
    ca_paths = args.ca or [p for p in (Path(path).parent / "ca.pem",) if p.is_file()]
    try:
        cas = readiness.load_cas(ca_paths)
    except EmdError as exc:
        print(f"emd clinic check: --ca: {exc.message}", file=sys.stderr)
        return 2
    with _opened_tables() as tables:
        state = tables.clinic(args.oid).state
    lines = readiness.check(
        args.oid, config, cas=cas, clinic_state=state, unpromoted=settings.unpromoted_clinics
    )
    for line in lines:
        print(line.render())
    failed = [line for line in lines if not line.ok]
    print(
        f"{len(lines) - len(failed)} of {len(lines)} ok" + (f"; {len(failed)} to fix" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


#: installed packages that offer test documents (``callable(oid) -> bytes | None``); the development tooling,
#: emd-lab, offers its samples re-dated for the clinic, so a production install without it asks for --document
TEST_DOCUMENTS_GROUP = "emd.test_documents"


def _sample_for(oid: str) -> bytes:
    """A test document of organisation ``oid`` with a fresh localUid, from an installed provider."""
    providers = sorted(entry_points(group=TEST_DOCUMENTS_GROUP), key=lambda ep: ep.name)
    if not providers:
        raise EmdError(
            "no --document given and no sample documents are installed (they ship with the "
            "development tooling, emd-lab): give one of the clinic's own documents with --document",
            reason="NO_SAMPLE",
        )
    for provider in providers:
        document = provider.load()(oid)
        if document is not None:
            return bytes(document)
    raise EmdError(f"no sample document of organisation {oid}: give one with --document", reason="NO_SAMPLE")


def _publisher_of(oid: str, mis_id: str, settings: Settings) -> tuple[str, str]:
    """(misId, systemId) the test document is published as: ``mis_id`` if given, else the МИС the organisations
    file grants the clinic (the first by id); the systemId is the first the grant names. The signer accepts only
    what a МИС's grant covers, for a test as for any document (docs/security.md)."""
    from services.pipeline.organizations import read_grants

    grants = read_grants(settings.organizations_file)
    granted = sorted(g.id for g in grants.values() if oid in g.organizations)
    chosen = mis_id or (granted[0] if granted else "")
    if chosen not in granted:
        raise EmdError(
            f"no МИС is granted organisation {oid} in the organisations file (mis)"
            if not mis_id
            else f"МИС {mis_id} is not granted organisation {oid} in the organisations file (mis)",
            reason="ORGANIZATION_NOT_ALLOWED",
        )
    return chosen, sorted(grants[chosen].system_ids)[0]


def cmd_test(args: argparse.Namespace) -> int:
    from producer.client import DocumentPublisher
    from services.desk.onboarding import run_test
    from services.documents.store import store_from_settings
    from services.lifecycle import open_store

    settings = Settings.from_env()
    if not settings.kafka_bootstrap_servers:
        print(
            "emd clinic test: set KAFKA_BOOTSTRAP_SERVERS (the test goes through the running pipeline)",
            file=sys.stderr,
        )
        return 2
    if args.document is not None:
        try:
            document = args.document.read_bytes()
        except OSError as exc:
            print(f"emd clinic test: --document: {exc}", file=sys.stderr)
            return 2
    else:
        document = _sample_for(args.oid)
    try:
        mis_id, system_id = _publisher_of(args.oid, args.mis or settings.mis_id, settings)
    except EmdError as exc:
        print(f"emd clinic test: {exc.message}", file=sys.stderr)
        return 2
    lifecycle = open_store(settings.data_dir, url=settings.lifecycle_store_url)
    tables = _tables(settings)
    try:
        with DocumentPublisher(
            settings.kafka_bootstrap_servers,
            mis_id=mis_id,
            store=store_from_settings(settings),
            system_id=system_id,
        ) as publisher:
            result = run_test(
                args.oid,
                document,
                publish=lambda data: publisher.publish(data).local_uid,
                lifecycle=lifecycle,
                tables=tables,
                actor=_actor(),
                timeout=args.timeout,
                say=lambda s: print(s, flush=True),
            )
    finally:
        lifecycle.close()
        tables.close()
    ids = ", ".join(result.message_ids) or "-"
    if result.ok:
        print(f"test passed: {result.local_uid} registered as {result.emdr_id}; MessageIDs {ids}")
        print(f"next: emd clinic promote {args.oid}")
        return 0
    print(f"test failed: {result.local_uid}: {result.detail}; MessageIDs {ids}")
    return 1


def cmd_promote(args: argparse.Namespace) -> int:
    from services.lifecycle.support_tables import ClinicConflict

    with _opened_tables() as tables:
        try:
            clinic = tables.promote(args.oid, actor=_actor(), force=args.force)
        except ClinicConflict as exc:
            print(f"emd clinic promote: refused: {exc}", file=sys.stderr)
            return 1
    if args.force:
        _log.warning("clinic promoted without a recorded test", oid=args.oid, actor=_actor())
    print(f"{args.oid} is {clinic.state}: its documents now go to its production endpoint")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    with _opened_tables() as tables:
        clinic = tables.suspend(args.oid, actor=_actor(), reason=args.reason)
    print(
        f"{args.oid} is {clinic.state}: its documents go to the test stand or are held until promoted again"
    )
    return 0
