"""Dead letters nobody has handled yet, and the age of the oldest: what support must act on before it is gone.

The dead-letter topics keep a record 30 days; after that it is deleted, handled or not. Counting dead letters
as they come (``emd_dead_letters_total``) says nothing about that, so this module keeps the other view:

* ``emd_dead_letters_unhandled{stage,category}``: documents whose latest dead letter is not handled;
* ``emd_dead_letters_unhandled_oldest_seconds{stage,category}``: how old the oldest of them is.

A dead letter is **handled** once its document has moved on after it: a replay (``emd dlq replay``) or a corrected
resend by the МИС made the lifecycle store record the document again (it changed after the dead letter and is
not ``failed``). A newer dead letter of the same document replaces the older one. One that outlives the topics'
retention is gone from Kafka and is dropped here too.

:class:`DeadLetterWatch` keeps the view up to date in the status worker's lease holder (one replica,
``services.pipeline.lease``): it reads the dead-letter topics incrementally (from the beginning when it starts,
then only what is new; the headers are all it needs), keeps the latest unhandled dead letter of each document,
and asks the lifecycle store about those only. A replica that is not the holder exports nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from producer import topology
from producer.errors import TransientError
from services import lifecycle as lc
from services.desk.deadletters import DeadLetter
from services.logs import get_logger
from services.messaging.records import Output
from services.metrics import REGISTRY
from services.pipeline.lease import Lease

log = get_logger(__name__)

UNHANDLED = Gauge(
    "emd_dead_letters_unhandled",
    "Documents whose latest dead letter nobody has handled yet (no replay, no corrected resend since).",
    ["stage", "category"],
    registry=REGISTRY,
)
UNHANDLED_OLDEST = Gauge(
    "emd_dead_letters_unhandled_oldest_seconds",
    "Age of the oldest unhandled dead letter (the dead-letter topics delete records after 30 days).",
    ["stage", "category"],
    registry=REGISTRY,
)
#: what the dead-letter topics keep (producer/topology.py): a dead letter older than this is gone from Kafka
RETENTION = dt.timedelta(milliseconds=topology.CREATED_DLT.retention_ms)
DEAD_LETTER_TOPIC_NAMES = tuple(t.name for t in topology.DEAD_LETTER_TOPICS)


@dataclass(frozen=True)
class Letter:
    local_uid: str
    #: the document's organisation (a document is the pair: docs/state.md); None when the dead letter names none
    organization: str | None
    stage: str
    category: str
    failed_at: dt.datetime


def letter_of(d: DeadLetter) -> Letter | None:
    """The part of a dead letter this view needs (from its headers); None without a localUid."""
    uid = d.local_uid
    if not uid:
        return None
    return Letter(uid, d.organization, d.stage, d.category or "unknown", d.failed_at)


def moved_on(doc: lc.Document | None, failed_at: dt.datetime) -> bool:
    """Whether the document was recorded again after its dead letter, and not as failed (a replay, a resend)."""
    return (
        doc is not None
        and doc.state != lc.FAILED
        and doc.updated_at is not None
        and doc.updated_at > failed_at
    )


class UnhandledDeadLetters:
    """The latest unhandled dead letter of each document (pure: no Kafka, no clock of its own)."""

    def __init__(self, *, retention: dt.timedelta = RETENTION) -> None:
        self.retention = retention
        #: (organisation, localUid) → its latest dead letter
        self.letters: dict[tuple[str | None, str], Letter] = {}

    def add(self, letters: Iterable[Letter]) -> None:
        for letter in letters:
            key = (letter.organization, letter.local_uid)
            known = self.letters.get(key)
            if known is None or letter.failed_at >= known.failed_at:
                self.letters[key] = letter

    def settle(self, lookup: Callable[[str, str], lc.Document | None], now: dt.datetime) -> None:
        """Drop what is handled (``lookup(organization, local_uid)``: the lifecycle store's document) and what the
        topics no longer hold. A dead letter that names no organisation names no document: only its age ends it."""
        for key, letter in list(self.letters.items()):
            org, uid = key
            doc = lookup(org, uid) if org else None
            if now - letter.failed_at > self.retention or moved_on(doc, letter.failed_at):
                del self.letters[key]

    def summary(self, now: dt.datetime) -> dict[tuple[str, str], tuple[int, float]]:
        """(stage, category) → (unhandled documents, age in seconds of the oldest)."""
        out: dict[tuple[str, str], tuple[int, float]] = {}
        for letter in self.letters.values():
            count, oldest = out.get((letter.stage, letter.category), (0, 0.0))
            out[(letter.stage, letter.category)] = (
                count + 1,
                max(oldest, (now - letter.failed_at).total_seconds()),
            )
        return out


def export(summary: Mapping[tuple[str, str], tuple[int, float]]) -> None:
    """The gauges, exactly ``summary`` (an empty one removes every series)."""
    UNHANDLED.clear()
    UNHANDLED_OLDEST.clear()
    for (stage, category), (count, oldest) in summary.items():
        UNHANDLED.labels(stage, category).set(count)
        UNHANDLED_OLDEST.labels(stage, category).set(oldest)


class DeadLetterWatch:
    """Reads the dead-letter topics incrementally and keeps the gauges (see the module docstring).

    :param kafka: kafka-python client settings (``services.messaging.clients.kafka_python_config``).
    :param store: the lifecycle store.
    :param topics: the dead-letter topics (default: every stage's).
    """

    def __init__(
        self,
        kafka: Mapping[str, Any],
        *,
        store: lc.LifecycleStore,
        topics: Sequence[str] = DEAD_LETTER_TOPIC_NAMES,
    ) -> None:
        self.kafka, self.store, self.topics = dict(kafka), store, tuple(topics)
        self.view = UnhandledDeadLetters()
        self._consumer: Any = None

    def _new_letters(self) -> list[Letter]:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            consumer = KafkaConsumer(
                **self.kafka,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="emd-dead-letter-watch",
            )
            partitions = [
                TopicPartition(t, p)
                for t in self.topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            self._consumer = consumer
        found: list[Letter] = []
        while batch := self._consumer.poll(timeout_ms=1000, max_records=5000):
            for records in batch.values():
                for m in records:
                    d = DeadLetter.of(
                        m.topic, m.partition, m.offset, m.key, b"", m.headers or (), timestamp_ms=m.timestamp
                    )
                    letter = letter_of(d)
                    if letter is not None:
                        found.append(letter)
        return found

    def refresh(self, now: dt.datetime | None = None) -> None:
        """Read what is new, drop what is handled, export the gauges (blocking: run it in a thread)."""
        self.view.add(self._new_letters())
        at = now or dt.datetime.now(dt.UTC)
        self.view.settle(lambda org, uid: self.store.get(uid, organization=org), at)
        export(self.view.summary(at))

    def forget(self) -> None:
        """Not the lease holder (any more): export nothing, read from the beginning if it becomes one again."""
        export({})
        self.view = UnhandledDeadLetters()
        self.close()

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def watch_tick(watch: DeadLetterWatch, lease: Lease) -> Callable[[], Awaitable[Sequence[Output]]]:
    """The status worker's ticker: refresh on the lease holder, export nothing elsewhere. Kafka or the lifecycle
    store being down is logged and waited out (a restart would not bring them back: liveness stays fresh)."""
    from kafka.errors import KafkaError

    async def tick() -> Sequence[Output]:
        if not lease.held():
            await asyncio.to_thread(watch.forget)
            return []
        try:
            await asyncio.to_thread(watch.refresh)
        except (TransientError, KafkaError) as exc:
            log.warning("unhandled dead letters not counted this time", error=type(exc).__name__)
        return []

    return tick
