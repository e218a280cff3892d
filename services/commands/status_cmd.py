"""``emd status LOCALUID``: one document's registration history, from the lifecycle store."""

from __future__ import annotations

import argparse
import json
import sys

from services.config import Settings
from services.timestamps import for_people


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "status",
        help="one document's registration history from the lifecycle store",
        description="Every attempt (MessageID, time, outcome, code), every registry question (getRegistryItem, "
        "answered on the callback) and the current state. Reads the lifecycle store of EMD_LIFECYCLE_STORE / "
        "EMD_DATA_DIR: after `emd run` or `emd demo`, the EMD_DATA_DIR their last lines print.",
    )
    s.add_argument("local_uid", help="the document's localUid")
    s.add_argument(
        "--org",
        help="the organisation's OID (needed when several organisations have a document under this localUid)",
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from services.lifecycle import open_store

    settings = Settings.from_env()
    store = open_store(settings.data_dir, url=settings.lifecycle_store_url)
    try:
        found = (
            [d for d in [store.get(args.local_uid, organization=args.org)] if d is not None]
            if args.org
            else store.documents_of(args.local_uid)
        )
        if not found:
            # the URL may carry a password: only the SQLite file is named
            where = (
                "EMD_LIFECYCLE_STORE"
                if settings.lifecycle_store_url
                else f"{settings.data_dir}/lifecycle.sqlite3"
            )
            of = f" of organisation {args.org}" if args.org else ""
            print(
                f"emd status: no document {args.local_uid!r}{of} in the lifecycle store ({where}); after "
                "`emd run` or `emd demo`, use the EMD_DATA_DIR their last lines print",
                file=sys.stderr,
            )
            return 1
        if len(found) > 1:
            orgs = ", ".join(d.organization for d in found)
            print(
                f"emd status: {len(found)} organisations have a document {args.local_uid!r} ({orgs}): "
                "choose one with --org",
                file=sys.stderr,
            )
            return 2
        doc = found[0]
        attempts = store.history(doc.local_uid, organization=doc.organization)
        questions = store.registry_requests(doc.local_uid, organization=doc.organization)
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
        "createdAt": for_people(doc.created_at),
        "acceptedAt": for_people(doc.accepted_at),
        "registeredAt": for_people(doc.registered_at),
        "storeTillDate": doc.store_till_date,
        "failedAt": for_people(doc.failed_at),
        "attempts": [
            {
                "attempt": a.attempt,
                "messageId": a.message_id,
                "endpoint": a.endpoint,
                "sentAt": for_people(a.sent_at),
                "outcome": a.outcome,
                "code": a.code,
                "message": a.message,
                "finishedAt": for_people(a.finished_at),
            }
            for a in attempts
        ],
        "registryQuestions": [
            {
                "messageId": q.message_id,
                "emdrId": q.emdr_id,
                "purpose": q.purpose,
                "askedAt": for_people(q.asked_at),
                "outcome": q.outcome,
                "code": q.code,
                "decidedBy": q.decided_by,
                "answeredAt": for_people(q.answered_at),
            }
            for q in questions
        ],
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{doc.local_uid}  state={doc.state}  organisation={doc.organization}  kind={doc.kind}")
    if doc.emdr_id:
        till = f"  stored till {doc.store_till_date}" if doc.store_till_date else ""
        print(f"  emdrId {doc.emdr_id}  registered {for_people(doc.registered_at)}{till}")
    if doc.failure_reason:
        print(f"  failed: {doc.failure_reason} {doc.failure_code or ''} {doc.failure_message or ''}".rstrip())
    for a in attempts:
        print(
            f"  #{a.attempt}  {a.message_id}  sent {for_people(a.sent_at)}  → {a.outcome or 'pending'}"
            f"{'  ' + a.code if a.code else ''}{'  ' + a.message if a.message else ''}"
        )
    for q in questions:
        print(
            f"  getRegistryItem {q.emdr_id}  {q.message_id}  asked {for_people(q.asked_at)} ({q.purpose})"
            f"  → {q.outcome or 'no answer yet'}{'  ' + q.code if q.code else ''}"
        )
    return 0
