"""Reading the dead-letter topics from the cluster (kafka-python: a command's short-lived, synchronous client), or
from the file a local run kept them in.

``read(kafka, topics)`` yields ``(consumer, DeadLetter)`` for every record, from the beginning (or, with
``group``, from that group's committed offsets, which is how a replay resumes). Reading stops once the
topics were quiet for ``idle`` seconds, counted from the moment partitions are assigned: joining a group
takes seconds (the coordinator's join delay), and a timeout counted from the start would end the read
before anything was fetched. Never from end offsets: the local broker's "latest" is wrong after batched
produce (DEVELOPERS.md), so a read goes to the quiet end instead.

``emd run`` and ``emd demo`` spawn a broker that keeps its topics in memory, so its dead letters would go with
it: before it stops they are written, as read, to ``<EMD_DATA_DIR>/dead-letters.jsonl`` (:func:`keep`, one
JSON object per record: topic, partition, offset, timestamp, key, base64 value, headers; only the owner may
read it), and ``emd dlq`` without a cluster reads them back (:func:`read_kept`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from services.desk.deadletters import DeadLetter

IDLE_SECONDS = 3.0
JOIN_TIMEOUT_SECONDS = 60.0


def read(
    kafka: Mapping[str, Any],
    topics: Sequence[str],
    *,
    group: str | None = None,
    idle: float = IDLE_SECONDS,
    client_id: str = "emd-dlq",
) -> Iterator[tuple[Any, DeadLetter]]:
    """Every dead letter of ``topics`` (see the module docstring). ``kafka``: the client settings, bootstrap
    servers and security (``services.messaging.clients.kafka_python_config``)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaTimeoutError

    consumer = KafkaConsumer(
        **kafka, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", client_id=client_id
    )
    try:
        consumer.subscribe(list(topics))
        give_up = time.monotonic() + JOIN_TIMEOUT_SECONDS
        last: float | None = None
        while True:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for m in records:
                    last = time.monotonic()
                    yield (
                        consumer,
                        DeadLetter.of(
                            m.topic,
                            m.partition,
                            m.offset,
                            m.key,
                            m.value,
                            m.headers or (),
                            timestamp_ms=m.timestamp,
                        ),
                    )
            now = time.monotonic()
            if last is None and consumer.assignment():
                last = now
            if last is not None and now - last >= idle:
                return
            if last is None and now >= give_up:
                raise KafkaTimeoutError(f"no partitions assigned within {JOIN_TIMEOUT_SECONDS:.0f} s")
    finally:
        consumer.close()


def read_all(kafka: Mapping[str, Any], topics: Sequence[str], **options: Any) -> list[DeadLetter]:
    """Every dead letter of ``topics``, read without a group."""
    return [d for _, d in read(kafka, topics, **options)]


#: the file a local run keeps its dead letters in, inside its data directory
KEPT_FILE = "dead-letters.jsonl"


def keep(letters: Iterable[DeadLetter], path: Path | str) -> int:
    """Write ``letters`` to ``path`` (replaced whole; readable by the owner only): how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for d in letters:
            row = {
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "timestampMs": d.timestamp_ms,
                "key": d.key,
                "value": base64.b64encode(d.value).decode("ascii"),
                "headers": dict(d.headers),
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_kept(path: Path | str, topics: Sequence[str] | None = None) -> list[DeadLetter]:
    """The dead letters :func:`keep` wrote (of ``topics`` only, when given); a line that is not one is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            letter = DeadLetter(
                topic=row["topic"],
                partition=int(row["partition"]),
                offset=int(row["offset"]),
                timestamp_ms=row.get("timestampMs"),
                key=row.get("key"),
                value=base64.b64decode(row.get("value") or ""),
                headers={str(k): str(v) for k, v in (row.get("headers") or {}).items()},
            )
        except (ValueError, KeyError, TypeError):
            continue
        if topics is None or letter.topic in topics:
            out.append(letter)
    return out
