"""``emd dlq``: inspect, export and replay dead letters (format: docs/dead-letters.md).

    emd dlq list [--stage S] [--reason R] [--since ISO]     one line per dead letter
    emd dlq show LOCALUID                                   every dead letter of one document, all headers
    emd dlq export --out FILE.jsonl [filters]               key, value (base64), every header, MessageIDs
    emd dlq replay [--stage S] [--reason R] [--local-uid U] [--dry-run] [--max N]

Replay re-publishes the original record to the topic of the stage that takes its event type (else its
original topic) with ``emd-replay-count`` incremented and the failure and retry headers removed (the
attempt count starts again); a record already replayed
``--limit`` times (default 3) is refused, so a document that keeps failing cannot loop. It reads through
its own consumer group (``emd-dlq-replay-<hash of the filters>``) and commits only after the broker acknowledged the
re-published records: an interrupted replay resumes where it stopped and never publishes a record twice
unless it was stopped between the publish and the commit. Dead letters written after a run began are left
for the next run (no loop within one run). ``--dry-run`` reads without a group.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from services import events
from services.commands.arguments import iso_datetime
from services.config import Settings
from services.messaging import deadletter as dl
from services.messaging import topology
from services.messaging.clients import kafka_python_config

STAGES = {"signer": topology.CREATED_DLT.name, "sender": topology.SIGNED_DLT.name, "status": topology.SENT_DLT.name}
REPLAY_GROUP = "emd-dlq-replay"
IDLE_SECONDS = 3.0            # reading ends once the topics were quiet this long after assignment
JOIN_TIMEOUT_SECONDS = 60.0
#: event type → the pipeline topic whose stage takes it (a replayed record goes where its type is handled)
CONSUMES = {events.CREATED: topology.CREATED.name, events.SIGNED: topology.SIGNED.name,
            events.SENT: topology.SENT.name}
_DROP_ON_REPLAY = (dl.ATTEMPTS, dl.RETRY_DUE, dl.RETRY_REASON, dl.RETRY_ORIGINAL_TOPIC, dl.RETRY_ORIGINAL_PARTITION,
                   dl.RETRY_ORIGINAL_OFFSET, dl.REPLAY_COUNT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="inspect, export and replay dead letters", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="dlq_command", required=True)

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--stage", choices=sorted(STAGES), help="only this stage's dead letters")
        q.add_argument("--reason", help="only this reason code (emd-dlt-reason)")
        q.add_argument("--since", type=iso_datetime, help="only failures at or after this ISO time (UTC if no offset)")
        q.add_argument("--local-uid", dest="local_uid", help="only this document")

    q = dsub.add_parser("list", help="one line per dead letter")
    filters(q)
    q.set_defaults(func=_cluster_errors(cmd_list))
    q = dsub.add_parser("show", help="every dead letter of one document, with all headers")
    q.add_argument("uid", metavar="LOCALUID")
    q.set_defaults(func=_cluster_errors(cmd_show))
    q = dsub.add_parser("export", help="write dead letters as JSON lines")
    filters(q)
    q.add_argument("--out", required=True, help="the .jsonl file to write")
    q.set_defaults(func=_cluster_errors(cmd_export))
    q = dsub.add_parser("replay", help="re-publish dead letters to their original topic")
    filters(q)
    q.add_argument("--dry-run", action="store_true", help="say what would be replayed, publish nothing")
    q.add_argument("--max", type=_positive, default=None, help="replay at most N records")
    q.add_argument("--limit", type=_positive, default=3, help="refuse records already replayed this many times")
    q.set_defaults(func=_cluster_errors(cmd_replay))


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def _headers(raw: Any) -> dict[str, bytes]:
    return {k: v for k, v in (raw or ()) if v is not None}


def entry(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
          headers: dict[str, bytes], *, timestamp_ms: int | None = None) -> dict[str, Any]:
    """One dead letter as a JSON-able dict (the export line); ``timestamp`` = when it was dead-lettered (ms)."""
    return {"topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp_ms,
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
    # The stage that takes this event type, not necessarily where it failed: the status worker dead-letters
    # a rejected document's *signed* event (what must be sent again) with origin emd.document.sent, whose
    # consumer would refuse it (EVENT_INVALID) and dead-letter it once more.
    topic = CONSUMES.get(h.get(events.HEADER_EVENT_TYPE, ""), topic)
    kept = [(k, v.encode()) for k, v in h.items()
            if not k.startswith(dl.FAILURE_PREFIXES) and k not in _DROP_ON_REPLAY]
    # the MessageIDs stay: the next dead letter, if any, still lists every request ever sent
    return topic, [*kept, (dl.REPLAY_COUNT, str(count + 1).encode())]


def _topics(args: argparse.Namespace) -> list[str]:
    return [STAGES[args.stage]] if getattr(args, "stage", None) else list(STAGES.values())


def _cluster_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An unreachable or failing cluster is a clear one-line error and exit 1, not a kafka-python traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from kafka.errors import KafkaError

        try:
            return command(args)
        except KafkaError as exc:
            print(f"emd dlq: the cluster at {Settings.from_env().kafka_bootstrap_servers} failed: {exc}",
                  file=sys.stderr)
            return 1
    return run


def _kafka() -> dict[str, Any]:
    """Bootstrap servers and TLS/SASL for a kafka-python client (the dead letters live on the cluster)."""
    settings = Settings.from_env()
    if not settings.kafka_bootstrap_servers:
        print("emd dlq: set KAFKA_BOOTSTRAP_SERVERS (dead letters live on the cluster)", file=sys.stderr)
        raise SystemExit(2)
    return kafka_python_config(settings)


def _read(args: argparse.Namespace, *, group: str | None = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every dead letter of the chosen topics (from the group's committed offsets when ``group`` is given).

    Reading stops after ``IDLE_SECONDS`` without a record, counted from the moment partitions are assigned:
    joining a consumer group takes seconds (the group coordinator's join delay), and a timeout counted from
    the start would end the read before anything was fetched (a replay that replayed nothing).
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaTimeoutError

    consumer = KafkaConsumer(**_kafka(), group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id="emd-dlq")
    try:
        consumer.subscribe(_topics(args))
        give_up = time.monotonic() + JOIN_TIMEOUT_SECONDS
        last: float | None = None
        while True:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for m in records:
                    last = time.monotonic()
                    yield consumer, entry(m.topic, m.partition, m.offset, m.key, m.value, _headers(m.headers),
                                          timestamp_ms=m.timestamp)
            now = time.monotonic()
            if last is None and consumer.assignment():
                last = now
            if last is not None and now - last >= IDLE_SECONDS:
                return
            if last is None and now >= give_up:
                raise KafkaTimeoutError(f"no partitions assigned within {JOIN_TIMEOUT_SECONDS:.0f} s")
    finally:
        consumer.close()


def cmd_list(args: argparse.Namespace) -> int:
    n = 0
    for _, e in _read(args):
        if matches(e, args):
            h = e["headers"]
            # the last MessageID is the request РЭМД answered: the one СТП asks for
            print(f"{h.get(dl.LAST_FAILURE, '?')}  {h.get(dl.STAGE, '?'):7} {h.get(dl.REASON, '?'):28} "
                  f"{e['key'] or '-'}  remd={h.get(dl.REMD_CODE, '-')}  ids={','.join(e['messageIds'][-1:]) or '-'}"
                  f"  hint={h.get(dl.HINT, '-')}")
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

    producer = None if args.dry_run else KafkaProducer(**_kafka(), acks="all",
                                                       client_id="emd-dlq-replay")
    replayed = refused = 0
    started_ms = int(time.time() * 1000)
    newer: set[tuple[str, int]] = set()  # partitions that reached a dead letter newer than this run
    try:
        for consumer, e in _read(args, group=None if args.dry_run else replay_group(args)):
            if args.max is not None and replayed >= args.max:
                break
            tp = (e["topic"], e["partition"])
            if tp in newer or (e["timestamp"] or 0) > started_ms:
                # dead-lettered after this run began (perhaps our own replay failing again): left, uncommitted,
                # for the next run, so one run never replays its own output in a loop
                newer.add(tp)
                continue
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
                consumer.commit({TopicPartition(*tp): OffsetAndMetadata(e["offset"] + 1, "", -1)})
    finally:
        if producer is not None:
            producer.flush()
            producer.close()
    print(f"{replayed} replayed, {refused} refused", file=sys.stderr)
    return 0
