"""``emd dlq``: dead letters for escalation to СТП ЕГИСЗ, and their replay (docs/dead-letters.md, docs/support.md).

    emd dlq list [filters] [--json] [--limit N]          newest first, one line (or JSON object) each
    emd dlq show LOCALUID [--unmask] [--json]            every attempt: MessageID, time, code, hint, request, answer
    emd dlq export --format csv|jsonl [--out F] [filters]  one row per dead letter, UTC and Moscow time
    emd dlq ticket LOCALUID                              the Russian text of a request to СТП ЕГИСЗ
    emd dlq replay [filters] [--dry-run] [--max N] [--limit N]

Filters: --stage --reason --code --category --org --kind --since --until --message-id --local-uid.
Patient data is masked unless ``--unmask``, which is written to the desk's audit log with who asked.
``replay`` prints each record, progress every few seconds and a summary line; it resumes where an
interrupted run stopped (SIGTERM or Ctrl-C end it between records), so it runs unchanged as a Kubernetes
Job: configuration from the environment, exit 0 when done, 1 when a stop request cut it short, 2 for bad
input. The cluster is ``KAFKA_BOOTSTRAP_SERVERS``; attempts and kept requests come from the lifecycle and
support tables (``EMD_LIFECYCLE_STORE``, ``EMD_DATA_DIR``) and the claim-check store (``EMD_DOCUMENT_STORE``).
Without a cluster, ``list``, ``show``, ``export`` and ``ticket`` read the dead letters a local ``emd run`` or
``emd demo`` kept in ``EMD_DATA_DIR`` (its broker's topics went with it); the line such a run prints at its end
names that directory.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from producer.errors import EmdError
from services import logs
from services.commands.arguments import iso_datetime, whole_number
from services.config import Settings
from services.desk import reader
from services.desk import replay as replaying
from services.desk.case import build_case, case_json, case_text
from services.desk.deadletters import (
    TOPIC_OF_STAGE,
    DeadLetter,
    Filters,
    export_csv,
    export_jsonl,
    newest_first,
)
from services.desk.ticket import ticket_text

STAGES = TOPIC_OF_STAGE  # stage → its dead-letter topic
_log = logs.get_logger(__name__)


positive_int = whole_number(1)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dlq",
        help="dead letters: list, show, export, ticket for СТП ЕГИСЗ, replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = p.add_subparsers(dest="dlq_command", required=True)

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--stage", choices=sorted(STAGES), help="only this stage's dead letters")
        q.add_argument(
            "--reason", help="only this reason code (emd-dlt-reason: REMD_REJECTED, CERT_EXPIRED…)"
        )
        q.add_argument("--code", help="only this РЭМД code (PERSON_NOT_FOUND…)")
        q.add_argument(
            "--category",
            choices=("transient", "data", "configuration", "internal", "security"),
            help="only this category (who must act)",
        )
        q.add_argument("--org", help="only this organisation (ФРМО OID)")
        q.add_argument("--kind", help="only this document kind (НСИ 1520 code)")
        q.add_argument(
            "--since", type=iso_datetime, help="failed at or after this ISO time (UTC if no offset)"
        )
        q.add_argument("--until", type=iso_datetime, help="failed before this ISO time (UTC if no offset)")
        q.add_argument("--message-id", dest="message_id", help="only the document that sent this MessageID")
        q.add_argument("--local-uid", dest="local_uid", help="only this document")

    q = dsub.add_parser("list", help="dead letters, newest first")
    filters(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    q.add_argument("--limit", type=positive_int, default=None, help="at most N (the newest)")
    q.set_defaults(func=_cluster_errors(cmd_list))
    q = dsub.add_parser(
        "show", help="one document: every attempt with MessageID, time, code, hint, request, answer"
    )
    q.add_argument("uid", metavar="LOCALUID")
    q.add_argument("--org", help="the organisation (ФРМО OID) when several have a document under LOCALUID")
    q.add_argument("--unmask", action="store_true", help="show patient data (logged in the audit log)")
    q.add_argument("--json", action="store_true", help="JSON instead of text")
    q.set_defaults(func=_cluster_errors(cmd_show))
    q = dsub.add_parser("export", help="one row per dead letter (CSV or JSON lines) for a ticket")
    filters(q)
    q.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="csv (default) or jsonl")
    q.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    q.set_defaults(func=_cluster_errors(cmd_export))
    q = dsub.add_parser("ticket", help="the Russian text of a request to СТП ЕГИСЗ for one document")
    q.add_argument("uid", metavar="LOCALUID")
    q.add_argument("--org", help="the organisation (ФРМО OID) when several have a document under LOCALUID")
    q.set_defaults(func=_cluster_errors(cmd_ticket))
    q = dsub.add_parser("replay", help="re-publish dead letters to the stage that takes them (resumable)")
    filters(q)
    q.add_argument("--dry-run", action="store_true", help="say what would be replayed, publish nothing")
    q.add_argument("--max", type=positive_int, default=None, help="replay at most N records")
    q.add_argument(
        "--limit", type=positive_int, default=3, help="refuse records already replayed this many times"
    )
    q.set_defaults(func=_cluster_errors(cmd_replay))


def filters_of(args: argparse.Namespace) -> Filters:
    return Filters(
        **{
            k: getattr(args, k, None)
            for k in (
                "stage",
                "reason",
                "code",
                "category",
                "kind",
                "since",
                "until",
                "message_id",
                "local_uid",
            )
        },
        organization=getattr(args, "org", None),
    )


def _cluster_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An unreachable cluster or store is a clear one-line error and exit 1, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from kafka.errors import KafkaError

        logs.configure(level="warning")  # stdout is for the answer
        try:
            return command(args)
        except KafkaError as exc:
            print(
                f"emd dlq: the cluster at {Settings.from_env().kafka_bootstrap_servers} failed: {exc}",
                file=sys.stderr,
            )
            return 1
        except EmdError as exc:
            print(f"emd dlq: {exc.message}", file=sys.stderr)
            return 1

    return run


def _kafka() -> dict[str, Any]:
    """Bootstrap servers and TLS/SASL for a kafka-python client (the dead letters live on the cluster)."""
    from services.messaging.clients import kafka_python_config

    settings = Settings.from_env()
    if not settings.kafka_bootstrap_servers:
        print(
            "emd dlq: set KAFKA_BOOTSTRAP_SERVERS (dead letters live on the cluster; a local `emd run` keeps "
            "its own in its EMD_DATA_DIR, which its last line names)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return kafka_python_config(settings)


def _read(topics: list[str]) -> list[DeadLetter]:
    """The dead letters of ``topics``: from the cluster, or without one from what a local run kept."""
    settings = Settings.from_env()
    kept = Path(settings.data_dir) / reader.KEPT_FILE
    if not settings.kafka_bootstrap_servers and kept.is_file():
        print(
            f"emd dlq: no KAFKA_BOOTSTRAP_SERVERS: the dead letters a local run kept in {kept}",
            file=sys.stderr,
        )
        return reader.read_kept(kept, topics)
    return reader.read_all(_kafka(), topics)


def _select(args: argparse.Namespace, filters: Filters | None = None) -> list[DeadLetter]:
    filters = filters or filters_of(args)
    return newest_first(_read(filters.topics()), filters, limit=getattr(args, "limit", None))


def actor() -> str:
    """Who is acting, for the audit log (the login name; a Job's pod runs as its service account's user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Desk:
    """The stores ``show`` and ``ticket`` read (lifecycle, support tables, claim-check), opened from the settings."""

    def __init__(self, settings: Settings) -> None:
        from services.documents.store import store_from_settings
        from services.lifecycle import open_store
        from services.lifecycle.support_tables import open_support_tables
        from services.pipeline.exchanges import ExchangeArchive

        self.settings = settings
        self.lifecycle = open_store(settings.data_dir, url=settings.lifecycle_store_url)
        self.tables = open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)
        self.archive = ExchangeArchive(documents=store_from_settings(settings), tables=self.tables)

    def organization(self, oid: str | None) -> Any:
        from services.pipeline.organizations import load_organizations

        try:
            return load_organizations(self.settings.organizations_file).organizations.get(oid or "")
        except EmdError:
            return None  # the ticket names what the dead letter knows

    def close(self) -> None:
        self.lifecycle.close()
        self.tables.close()


def _audit(action: str, **detail: Any) -> None:
    """An action in the desk's audit log, and in the command's log (a Job's pod log, where no store is
    writable: the log line is then the record, and the warning says so)."""
    import sqlite3

    from services.lifecycle.support_tables import open_support_tables

    _log.warning(action, actor=actor(), **detail)
    settings = Settings.from_env()
    try:
        store = open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)
        try:
            store.audit(action, actor=actor(), **detail)
        finally:
            store.close()
    except (EmdError, OSError, sqlite3.Error) as exc:
        print(
            f"emd dlq: the audit log could not be written ({exc}); the line above is the record",
            file=sys.stderr,
        )


def cmd_list(args: argparse.Namespace) -> int:
    found = _select(args)
    for d in found:
        if args.json:
            print(json.dumps(d.summary(), ensure_ascii=False))
        else:
            s = d.summary()
            print(
                f"{s['failedAt']}  {d.stage:7} {d.reason or '?':28} {d.local_uid or '-'}  code={d.code or '-'}  "
                f"messageId={d.message_id or '-'}  org={d.organization or '-'}  hint={d.hint or '-'}"
            )
    print(f"{len(found)} dead letter(s)", file=sys.stderr)
    return 0


def _case(args: argparse.Namespace, desk: Desk) -> Any:
    org = getattr(args, "org", None)
    letters = _select(args, Filters(local_uid=args.uid, organization=org))
    if not letters:
        print(f"emd dlq: no dead letter for {args.uid}", file=sys.stderr)
        return None
    orgs = sorted({d.organization for d in letters if d.organization})
    if org is None and len(orgs) > 1:
        print(
            f"emd dlq: dead letters of {len(orgs)} organisations under {args.uid} ({', '.join(orgs)}): "
            "choose one with --org",
            file=sys.stderr,
        )
        return None
    return build_case(args.uid, letters, lifecycle=desk.lifecycle, archive=desk.archive, organization=org)


def cmd_show(args: argparse.Namespace) -> int:
    desk = Desk(Settings.from_env())
    try:
        case = _case(args, desk)
        if case is None:
            return 1
        if args.unmask:  # who looked at patient data, and at which document
            desk.tables.audit("dlq.unmask", actor=actor(), target=args.uid, via="emd dlq show")
            _log.warning("dlq.unmask", local_uid=args.uid, actor=actor())
        print(
            json.dumps(case_json(case, unmask=args.unmask), ensure_ascii=False, indent=2)
            if args.json
            else case_text(case, unmask=args.unmask),
            end="" if not args.json else "\n",
        )
        return 0
    finally:
        desk.close()


def cmd_ticket(args: argparse.Namespace) -> int:
    desk = Desk(Settings.from_env())
    try:
        case = _case(args, desk)
        if case is None:
            return 1
        org = desk.organization(case.latest.organization)
        print(
            ticket_text(
                case.latest,
                attempts=case.attempts,
                organization_name=org.name if org else None,
                client_entity_id=org.remd.client_entity_id if org and org.remd else None,
            ),
            end="",
        )
        return 0
    finally:
        desk.close()


def cmd_export(args: argparse.Namespace) -> int:
    found = _select(args)
    text = export_csv(found) if args.format == "csv" else export_jsonl(found)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    print(f"{len(found)} dead letter(s) exported" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    kafka = _kafka()
    filters = filters_of(args)
    stop = {"asked": False}

    def ask_stop(signum: int, _frame: Any) -> None:
        stop["asked"] = True
        print(
            f"emd dlq replay: {signal.Signals(signum).name}: stopping after the current record",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, ask_stop) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_record(action: str, d: DeadLetter, detail: str) -> None:
        if action == "refused":
            print(f"refused {d.local_uid} ({d.topic}@{d.partition}:{d.offset}): {detail}", file=sys.stderr)
        else:
            print(
                f"{action} {d.local_uid} ({d.reason}, MessageID {d.message_id or '-'}) → {detail}", flush=True
            )

    def on_progress(s: replaying.Summary) -> None:
        print(
            f"progress: {s.read} read, {s.replayed} replayed, {s.refused} refused",
            file=sys.stderr,
            flush=True,
        )

    try:
        summary = replaying.replay(
            kafka,
            filters,
            dry_run=args.dry_run,
            max_records=args.max,
            limit=args.limit,
            on_record=on_record,
            on_progress=on_progress,
            should_stop=lambda: stop["asked"],
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not args.dry_run and (summary.replayed or summary.refused):
        _audit(
            "dlq.replay",
            target=filters.key(),
            replayed=summary.replayed,
            refused=summary.refused,
            stopped=summary.stopped,
        )
    print(summary.line(dry_run=args.dry_run), file=sys.stderr, flush=True)
    return 1 if summary.stopped else 0
