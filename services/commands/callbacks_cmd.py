"""``emd callbacks``: the МИС callback endpoint for ИПС; ``emd status LOCALUID``: one document's history."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from producer.errors import ConfigurationError
from services.config import Settings
from services.logs import configure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "callbacks",
        help="serve the callback endpoint ИПС calls (registerDocumentResult, getDocumentFile)",
        description=__doc__,
    )
    p.add_argument("--host", help="interface (default EMD_CALLBACK_HOST)")
    p.add_argument("--port", type=int, help="port (default EMD_CALLBACK_PORT)")
    p.set_defaults(func=run_callbacks)

    s = sub.add_parser(
        "status",
        help="one document's registration history from the lifecycle store",
        description="Every attempt (MessageID, time, outcome, code) and the current state.",
    )
    s.add_argument("local_uid", help="the document's localUid")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_status)


def run_callbacks(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    if not settings.kafka_bootstrap_servers:
        print("emd callbacks: KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    from workers.callbacks.worker import build

    if args.host is not None:
        settings = dataclasses.replace(settings, callback_host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, callback_port=args.port)
    try:
        asyncio.run(build(settings).run())
    except ConfigurationError as exc:
        print(f"emd callbacks: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _iso(t) -> str | None:
    return t.isoformat() if t is not None else None


def run_status(args: argparse.Namespace) -> int:
    from services.lifecycle import open_store

    settings = Settings.from_env()
    store = open_store(settings.data_dir, url=settings.lifecycle_store_url)
    try:
        doc = store.get(args.local_uid)
        if doc is None:
            print(f"emd status: no document {args.local_uid!r} in the lifecycle store", file=sys.stderr)
            return 1
        attempts = store.history(args.local_uid)
    finally:
        store.close()
    report = {
        "localUid": doc.local_uid,
        "organization": doc.organization,
        "kind": doc.kind,
        "state": doc.state,
        "emdrId": doc.emdr_id,
        "acceptedMessageId": doc.accepted_message_id,
        "failure": (
            {"reason": doc.failure_reason, "code": doc.failure_code, "message": doc.failure_message}
            if doc.failure_reason
            else None
        ),
        "createdAt": _iso(doc.created_at),
        "acceptedAt": _iso(doc.accepted_at),
        "registeredAt": _iso(doc.registered_at),
        "failedAt": _iso(doc.failed_at),
        "attempts": [
            {
                "attempt": a.attempt,
                "messageId": a.message_id,
                "endpoint": a.endpoint,
                "sentAt": _iso(a.sent_at),
                "outcome": a.outcome,
                "code": a.code,
                "message": a.message,
                "finishedAt": _iso(a.finished_at),
            }
            for a in attempts
        ],
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{doc.local_uid}  state={doc.state}  organisation={doc.organization}  kind={doc.kind}")
    if doc.emdr_id:
        print(f"  emdrId {doc.emdr_id}  registered {_iso(doc.registered_at)}")
    if doc.failure_reason:
        print(f"  failed: {doc.failure_reason} {doc.failure_code or ''} {doc.failure_message or ''}".rstrip())
    for a in attempts:
        print(
            f"  #{a.attempt}  {a.message_id}  sent {_iso(a.sent_at)}  → {a.outcome or 'pending'}"
            f"{'  ' + a.code if a.code else ''}{'  ' + a.message if a.message else ''}"
        )
    return 0
