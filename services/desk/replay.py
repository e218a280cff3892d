"""Replaying dead letters: each record back to the stage that takes it, once, resumable, interruptible.

A replayed record is the original (key, value) with the failure and retry headers removed (the attempt
count starts again) and ``emd-replay-count`` + 1; a record already replayed ``limit`` times is refused, so
a document that keeps failing cannot loop. It goes to the topic of the stage that takes its event type
(else its original topic): the status worker dead-letters a rejected document's *signed* event with origin
``emd.document.sent``, whose consumer would refuse it. A created event goes back to the created topic of the
МИС that wrote it, its original topic, and to no other: the topic is what names its writer to the signer
(docs/security.md), so a replay cannot move a document to another МИС's grant.

Once each: the replay reads through its own consumer group (one per filter, ``group_for``) and commits a
record's offset right after the broker acknowledged its re-published copy. A stop request (SIGTERM from
Kubernetes deleting the Job's pod, Ctrl-C) is honoured *between* records, after that commit: the next run
resumes exactly after the last replayed record, and no record is published twice. Only a ``kill -9``
between the publish and the commit can replay one record twice, which the pipeline absorbs (the sender
answers an accepted or registered localUid from its lifecycle store, without a second registration).
Dead letters written after the run began (its own replays failing again) are left, uncommitted, for the
next run: one run never replays its own output in a loop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from producer import events, topology
from services.desk import reader
from services.desk.deadletters import DeadLetter, Filters
from services.messaging import deadletter as dl

GROUP_PREFIX = "emd-dlq-replay"
#: event type → the pipeline topic whose stage takes it (a replayed record goes where its type is handled)
CONSUMES = {
    events.SIGNED: topology.SIGNED.name,
    events.SENT: topology.SENT.name,
}
_DROP_ON_REPLAY = (
    dl.ATTEMPTS,
    dl.RETRY_DUE,
    dl.RETRY_REASON,
    dl.RETRY_ORIGINAL_TOPIC,
    dl.RETRY_ORIGINAL_PARTITION,
    dl.RETRY_ORIGINAL_OFFSET,
    dl.REPLAY_COUNT,
)
PROGRESS_EVERY_SECONDS = 5.0


def plan(d: DeadLetter, *, limit: int) -> tuple[str, list[tuple[str, bytes]]] | str:
    """(topic, headers) to re-publish ``d`` with, or why it is refused."""
    count = d.replay_count
    if count >= limit:
        return f"already replayed {count} times (limit {limit})"
    topic = d.header(dl.ORIGINAL_TOPIC)
    if not topic:
        return "no original-topic header"
    event_type = d.header(events.HEADER_EVENT_TYPE) or ""
    if event_type == events.CREATED and topology.mis_of_created_topic(topic) is None:
        return f"a created event from {topic}, not a МИС's created topic"
    topic = CONSUMES.get(event_type, topic)
    kept = [
        (k, v.encode())
        for k, v in d.headers.items()
        if not k.startswith(dl.FAILURE_PREFIXES) and k not in _DROP_ON_REPLAY
    ]
    # the MessageIDs stay: the next dead letter, if any, still lists every request ever sent
    return topic, [*kept, (dl.REPLAY_COUNT, str(count + 1).encode())]


def group_for(filters: Filters) -> str:
    """One consumer group per filter: records another filter skipped are not committed away from it."""
    return f"{GROUP_PREFIX}-{hashlib.sha256(filters.key().encode()).hexdigest()[:12]}"


@dataclass
class Summary:
    replayed: int = 0
    refused: int = 0
    read: int = 0
    left: int = 0  # written after the run began: for the next run
    stopped: bool = False  # a stop request ended the run early

    def line(self, *, dry_run: bool = False) -> str:
        """The summary line (the last line a replay prints)."""
        text = (
            f"{self.replayed} {'to replay (dry run)' if dry_run else 'replayed'}, {self.refused} refused, "
            f"{self.read} dead letters read"
        )
        if self.left:
            text += f", {self.left} newer than this run left for the next"
        if self.stopped:
            text += "; stopped early: run the same command again to resume"
        return text


def replay(
    kafka: Mapping[str, Any],
    filters: Filters,
    *,
    dry_run: bool = False,
    max_records: int | None = None,
    limit: int = 3,
    on_record: Callable[[str, DeadLetter, str], None] = lambda *a: None,
    on_progress: Callable[[Summary], None] = lambda s: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Summary:
    """Replay the dead letters ``filters`` select (module docstring; ``kafka``: the client settings, as for
    ``reader.read``); ``on_record(action, dead_letter, detail)``
    is told each replay/refusal, ``on_progress`` every few seconds; ``should_stop`` is asked between records."""
    from kafka import KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    summary = Summary()
    producer = None if dry_run else KafkaProducer(**kafka, acks="all", client_id="emd-dlq-replay")
    started_ms = int(time.time() * 1000)
    newer: set[tuple[str, int]] = set()  # partitions that reached a dead letter newer than this run
    last_progress = time.monotonic()
    try:
        for consumer, d in reader.read(
            kafka, filters.topics(), group=None if dry_run else group_for(filters)
        ):
            if should_stop() or (max_records is not None and summary.replayed >= max_records):
                summary.stopped = should_stop()
                break
            summary.read += 1
            tp = (d.topic, d.partition)
            if tp in newer or (d.timestamp_ms or 0) > started_ms:
                newer.add(tp)  # left, uncommitted, for the next run
                summary.left += 1
                continue
            if filters.matches(d):
                target = plan(d, limit=limit)
                if isinstance(target, str):
                    summary.refused += 1
                    on_record("refused", d, target)
                else:
                    topic, headers = target
                    if producer is not None:
                        producer.send(
                            topic,
                            key=d.key.encode() if d.key is not None else None,
                            value=d.value,
                            headers=headers,
                        ).get(timeout=30)
                    summary.replayed += 1
                    on_record("would replay" if dry_run else "replayed", d, topic)
            if not dry_run:  # commit only what was published (or deliberately skipped)
                consumer.commit({TopicPartition(*tp): OffsetAndMetadata(d.offset + 1, "", -1)})
            if time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS:
                on_progress(summary)
                last_progress = time.monotonic()
        else:
            summary.stopped = should_stop()
    finally:
        if producer is not None:
            producer.flush()
            producer.close()
    return summary
