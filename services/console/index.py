"""The console's view of the dead-letter topics: read once from the beginning, then followed as they grow.

A thread owns one kafka-python consumer (no group: the console commits nothing and every replica sees
everything) and appends each dead letter to an in-memory list; pages and ``/api/dead-letters`` filter that
list (``services.desk.deadletters``), newest first. ``ready`` is set once the topics were read to their
quiet end, so the first page is complete rather than half-loaded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from services.desk.deadletters import STAGE_OF_TOPIC, TOPIC_OF_STAGE, DeadLetter, Filters, newest_first
from services.logs import get_logger

log = get_logger(__name__)
#: a dead letter's id in the console's URLs and forms: the stage whose topic holds it, partition, offset
_LETTER_ID = re.compile(r"^(signer|sender|status)-(\d{1,9})-(\d{1,19})$")


def letter_id(d: DeadLetter) -> str:
    """``<stage>-<partition>-<offset>``: where the record is, which is all an action needs to name it."""
    return f"{STAGE_OF_TOPIC.get(d.topic, d.stage)}-{d.partition}-{d.offset}"


class DeadLetterIndex:
    """Every dead letter of ``topics`` on the cluster ``kafka`` (client settings), kept current."""

    def __init__(self, kafka: Mapping[str, Any], topics: Sequence[str], *, idle: float = 2.0) -> None:
        self.kafka, self.topics, self.idle = dict(kafka), list(topics), idle
        self.ready = threading.Event()
        self._letters: list[DeadLetter] = []
        self._by_position: dict[tuple[str, int, int], DeadLetter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="emd-console-dlt", daemon=True)

    def start(self) -> DeadLetterIndex:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def add(self, letters: Sequence[DeadLetter]) -> None:
        with self._lock:
            self._letters.extend(letters)
            for d in letters:
                self._by_position[(d.topic, d.partition, d.offset)] = d

    def by_id(self, text: str) -> DeadLetter | None:
        """The dead letter ``letter_id`` names, when ``text`` is one and the index holds it; else None."""
        m = _LETTER_ID.match(text or "")
        if m is None:
            return None
        with self._lock:
            return self._by_position.get((TOPIC_OF_STAGE[m.group(1)], int(m.group(2)), int(m.group(3))))

    def query(self, filters: Filters | None = None, *, limit: int | None = None) -> list[DeadLetter]:
        with self._lock:
            letters = list(self._letters)
        return newest_first(letters, filters, limit=limit)

    def _follow(self) -> None:
        import time

        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(
                    **self.kafka,
                    group_id=None,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    client_id="emd-console",
                )
            except KafkaError as exc:
                log.warning("console cannot reach the cluster, retrying", error=str(exc))
                self._stop.wait(5)
                continue
            try:
                consumer.subscribe(self.topics)
                quiet_since: float | None = None
                while not self._stop.is_set():
                    batch = consumer.poll(timeout_ms=500)
                    got = [
                        DeadLetter.of(
                            m.topic,
                            m.partition,
                            m.offset,
                            m.key,
                            m.value,
                            m.headers or (),
                            timestamp_ms=m.timestamp,
                        )
                        for records in batch.values()
                        for m in records
                    ]
                    if got:
                        self.add(got)
                        quiet_since = time.monotonic()
                    elif consumer.assignment() and quiet_since is None:
                        quiet_since = time.monotonic()
                    if (
                        quiet_since is not None
                        and not self.ready.is_set()
                        and time.monotonic() - quiet_since >= self.idle
                    ):
                        self.ready.set()
                return
            except KafkaError as exc:
                log.warning("console lost the cluster, reading again", error=str(exc))
                with self._lock:
                    self._letters.clear()  # read again from the beginning: no duplicates, no gaps
                    self._by_position.clear()
            finally:
                consumer.close()
