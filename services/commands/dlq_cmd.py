"""``emd dlq``: inspect, export and replay dead letters (format: docs/dead-letters.md).

    emd dlq list [--stage S] [--reason R] [--since ISO]     one line per dead letter
    emd dlq show LOCALUID                                   every dead letter of one document, all headers
    emd dlq export --out FILE.jsonl [filters]               key, value (base64), every header, MessageIDs
    emd dlq replay [--stage S] [--reason R] [--local-uid U] [--dry-run] [--max N]

Replay re-publishes the original record to its original topic with ``emd-replay-count`` incremented and
the failure and retry headers removed (the attempt count starts again); a record already replayed
``--limit`` times (default 3) is refused, so a document that keeps failing cannot loop. It reads through
its own consumer group (``emd-dlq-replay-<hash of the filters>``) and commits only after the broker acknowledged the
re-published records: an interrupted replay resumes where it stopped and never publishes a record twice
unless it was stopped between the publish and the commit. ``--dry-run`` reads without a group.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
from collections.abc import Iterator
from typing import Any

from services import deadletter as dl
from services import topology
from services.config import Settings

STAGES = {"signer": topology.CREATED_DLT.name, "sender": topology.SIGNED_DLT.name, "status": topology.SENT_DLT.name}
REPLAY_GROUP = "emd-dlq-replay"
_DROP_ON_REPLAY = (dl.ATTEMPTS, dl.RETRY_DUE, dl.RETRY_REASON, dl.RETRY_ORIGINAL_TOPIC, dl.RETRY_ORIGINAL_PARTITION,
                   dl.RETRY_ORIGINAL_OFFSET)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="inspect, export and replay dead letters", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="dlq_command", required=True)

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--stage", choices=sorted(STAGES), help="only this stage's dead letters")
        q.add_argument("--reason", help="only this reason code (emd-dlt-reason)")
        q.add_argument("--since", type=_since, help="only failures at or after this ISO time (UTC if no offset)")
        q.add_argument("--local-uid", dest="local_uid", help="only this document")

    q = dsub.add_parser("list", help="one line per dead letter")
    filters(q)
    q.set_defaults(func=cmd_list)
    q = dsub.add_parser("show", help="every dead letter of one document, with all headers")
    q.add_argument("uid", metavar="LOCALUID")
    q.set_defaults(func=cmd_show)
    q = dsub.add_parser("export", help="write dead letters as JSON lines")
    filters(q)
    q.add_argument("--out", required=True, help="the .jsonl file to write")
    q.set_defaults(func=cmd_export)
    q = dsub.add_parser("replay", help="re-publish dead letters to their original topic")
    filters(q)
    q.add_argument("--dry-run", action="store_true", help="say what would be replayed, publish nothing")
    q.add_argument("--max", type=int, default=None, help="replay at most N records")
    q.add_argument("--limit", type=int, default=3, help="refuse records already replayed this many times")
    q.set_defaults(func=cmd_replay)


def _since(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _headers(raw: Any) -> dict[str, bytes]:
    return {k: v for k, v in (raw or ()) if v is not None}


def entry(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
          headers: dict[str, bytes]) -> dict[str, Any]:
    """One dead letter as a JSON-able dict (the export line)."""
    return {"topic": topic, "partition": partition, "offset": offset,
            "key": key.decode("utf-8", "replace") if key is not None else None,
            "value": base64.b64encode(value or b"").decode(),
            "headers": {k: v.decode("utf-8", "replace") for k, v in headers.items()},
            "messageIds": dl.split_ids(headers.get(dl.MESSAGE_IDS))}


def matches(e: dict[str, Any], args: argparse.Namespace) -> bool:
    h = e["headers"]
    if getattr(args, "reason", None) and h.get(dl.REASON) != args.reason:
        return False
    if getattr(args, "local_uid", None) and (h.get(dl.LOCAL_UID) or e["key"]) != args.local_uid:
        return False
    if getattr(args, "since", None):
        last = h.get(dl.LAST_FAILURE)
        if not last or dt.datetime.fromisoformat(last.replace("Z", "+00:00")) < args.since:
            return False
    return True


def replay_record(e: dict[str, Any], *, limit: int) -> tuple[str, list[tuple[str, bytes]]] | str:
    """(topic, headers) to re-publish, or why it is refused."""
    h = e["headers"]
    count = int(h.get(dl.REPLAY_COUNT) or 0)
    if count >= limit:
        return f"already replayed {count} times (limit {limit})"
    topic = h.get(dl.ORIGINAL_TOPIC)
    if not topic:
        return "no original-topic header"
    kept = [(k, v.encode()) for k, v in h.items()
            if not k.startswith(("kafka_dlt-", "emd-dlt-")) and k not in _DROP_ON_REPLAY and k != dl.REPLAY_COUNT]
    # the MessageIDs stay: the next dead letter, if any, still lists every request ever sent
    return topic, [*kept, (dl.REPLAY_COUNT, str(count + 1).encode())]


def _topics(args: argparse.Namespace) -> list[str]:
    return [STAGES[args.stage]] if getattr(args, "stage", None) else list(STAGES.values())


def _bootstrap() -> str:
    servers = Settings.from_env().kafka_bootstrap_servers
    if not servers:
        print("emd dlq: set KAFKA_BOOTSTRAP_SERVERS (dead letters live on the cluster)", file=sys.stderr)
        raise SystemExit(2)
    return servers


def _read(args: argparse.Namespace, *, group: str | None = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*_topics(args), bootstrap_servers=_bootstrap(), group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             client_id="emd-dlq")
    try:
        for m in consumer:
            e = entry(m.topic, m.partition, m.offset, m.key, m.value, _headers(m.headers))
            yield consumer, e
    finally:
        consumer.close()


def cmd_list(args: argparse.Namespace) -> int:
    n = 0
    for _, e in _read(args):
        if matches(e, args):
            h = e["headers"]
            print(f"{h.get(dl.LAST_FAILURE, '?')}  {h.get(dl.STAGE, '?'):7} {h.get(dl.REASON, '?'):28} "
                  f"{e['key'] or '-'}  remd={h.get(dl.REMD_CODE, '-')}  ids={','.join(e['messageIds'][-1:]) or '-'}")
            n += 1
    print(f"{n} dead letter(s)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    args.local_uid = args.uid
    found = [e for _, e in _read(args) if matches(e, args)]
    for e in found:
        print(json.dumps({k: v for k, v in e.items() if k != "value"}, ensure_ascii=False, indent=2))
    if not found:
        print(f"no dead letter for {args.uid}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for _, e in _read(args):
            if matches(e, args):
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
                n += 1
    print(f"{n} dead letter(s) written to {args.out}", file=sys.stderr)
    return 0


def replay_group(args: argparse.Namespace) -> str:
    """One consumer group per filter: records another filter skipped are not committed away from it."""
    import hashlib
    spec = json.dumps([args.stage, args.reason, args.local_uid, str(args.since)])
    return f"{REPLAY_GROUP}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def cmd_replay(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    producer = None if args.dry_run else KafkaProducer(bootstrap_servers=_bootstrap(), acks="all",
                                                       client_id="emd-dlq-replay")
    replayed = refused = 0
    try:
        for consumer, e in _read(args, group=None if args.dry_run else replay_group(args)):
            if args.max is not None and replayed >= args.max:
                break
            if matches(e, args):
                plan = replay_record(e, limit=args.limit)
                if isinstance(plan, str):
                    refused += 1
                    print(f"refused {e['key']} ({e['topic']}@{e['offset']}): {plan}", file=sys.stderr)
                else:
                    topic, headers = plan
                    print(f"{'would replay' if args.dry_run else 'replay'} {e['key']} → {topic}")
                    if producer is not None:
                        producer.send(topic, key=e["key"].encode() if e["key"] else None,
                                      value=base64.b64decode(e["value"]), headers=headers).get(timeout=30)
                    replayed += 1
            if not args.dry_run:  # commit only what was published (or deliberately skipped)
                consumer.commit({TopicPartition(e["topic"], e["partition"]): OffsetAndMetadata(e["offset"] + 1, "", -1)})
    finally:
        if producer is not None:
            producer.flush()
            producer.close()
    print(f"{replayed} replayed, {refused} refused", file=sys.stderr)
    return 0
