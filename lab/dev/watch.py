"""Follow documents through the pipeline by reading its topics: the live view of `emd run` and `emd demo`.

A background thread reads every stage topic and dead-letter topic from the beginning (partitions assigned
directly: no consumer group, nothing committed, nothing disturbed) and keeps, per localUid, the furthest
stage reached. Reading the topics themselves, rather than asking the workers, means the view shows what
really reached Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition

from lab.dev.config import DEV_MIS_ID
from producer import topology
from services.desk import deadletters as desk
from services.messaging import deadletter as dl

#: stage reached, in pipeline order; a dead letter is final whatever came before
STAGES = ("created", "signed", "sent", "acknowledged")
_TOPIC_STAGE = {
    topology.created_topic(
        DEV_MIS_ID
    ).name: "created",  # the development МИС, which every dev run publishes as
    topology.SIGNED.name: "signed",
    topology.SENT.name: "sent",
    topology.ACKNOWLEDGED.name: "acknowledged",
}
_DLT = {t.name for t in topology.DEAD_LETTER_TOPICS}


@dataclass
class DeadLetter:
    local_uid: str
    stage: str
    reason: str
    message: str
    message_ids: list[str]
    remd_code: str | None
    organization: str | None = None


@dataclass
class Snapshot:
    per_stage: dict[str, int]
    dead_lettered: int
    final: int
    total: int
    rate: float
    errors: list[DeadLetter] = field(default_factory=list)  #: the latest few, for a live view
    #: every dead letter of the documents asked for
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: documents asked for that are on no topic at all: published (the broker acknowledged them) and gone
    unseen: int = 0

    @property
    def unfinished(self) -> int:
        """Documents on their way, not final yet: seen on a topic, neither at the final stage nor dead-lettered."""
        return self.total - self.final - self.unseen


class PipelineWatcher:
    """Reads the pipeline topics in a thread; ``snapshot()`` tells where every document is.

    :param bootstrap_servers: the cluster to read.
    :param final_stage: the stage that counts as done (``acknowledged`` for the whole pipeline).
    """

    def __init__(self, bootstrap_servers: str, *, final_stage: str = "acknowledged") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.final_stage = final_stage
        self.stage_of: dict[str, str] = {}
        self.dead: dict[str, DeadLetter] = {}
        self.recent: deque[DeadLetter] = deque(maxlen=5)
        #: record timestamps (ms) of each document's first created record and of its first final-stage record:
        #: created → final latency from the topics themselves (``emd bench``)
        self.created_ms: dict[str, int] = {}
        self.final_ms: dict[str, int] = {}
        self._done_times: deque[float] = deque(maxlen=10000)
        #: every dead-letter record read, as support reads them (``emd run`` keeps them when its broker goes)
        self.dead_records: list[desk.DeadLetter] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-watch", daemon=True)

    def start(self) -> PipelineWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            topics = list(_TOPIC_STAGE) + sorted(_DLT)
            tps = []
            for name in topics:
                parts = None
                while parts is None and not self._stop.is_set():
                    parts = consumer.partitions_for_topic(name)
                    if parts is None:
                        time.sleep(0.2)
                tps += [TopicPartition(name, p) for p in sorted(parts or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                for tp, records in consumer.poll(timeout_ms=300).items():
                    for r in records:
                        self._see(tp.topic, r)
        finally:
            consumer.close()

    def _see(self, topic: str, record) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else "?"
        with self._lock:
            if topic in _DLT:
                self.dead_records.append(
                    desk.DeadLetter.of(
                        topic,
                        record.partition,
                        record.offset,
                        record.key,
                        record.value,
                        record.headers or (),
                        timestamp_ms=record.timestamp,
                    )
                )
                h = {k: v for k, v in record.headers or ()}
                dead = DeadLetter(
                    local_uid=key,
                    stage=(h.get(dl.STAGE) or b"?").decode(),
                    reason=(h.get(dl.REASON) or b"?").decode(),
                    message=(h.get(dl.EXCEPTION_MESSAGE) or b"").decode("utf-8", "replace"),
                    message_ids=dl.split_ids(h.get(dl.MESSAGE_IDS)),
                    remd_code=(h.get(dl.REMD_CODE) or b"").decode() or None,
                    organization=(h.get(dl.ORGANIZATION) or b"").decode() or None,
                )
                if key not in self.dead and self.stage_of.get(key) != self.final_stage:
                    self._done_times.append(time.monotonic())
                self.dead[key] = dead
                self.recent.append(dead)
                return
            stage = _TOPIC_STAGE[topic]
            if stage == "created":
                self.created_ms.setdefault(key, record.timestamp)
            if stage == self.final_stage:
                self.final_ms.setdefault(key, record.timestamp)
            current = self.stage_of.get(key)
            if current is None or STAGES.index(stage) > STAGES.index(current):
                self.stage_of[key] = stage
                if stage == self.final_stage and key not in self.dead:
                    self._done_times.append(time.monotonic())

    def dead_letter_records(self) -> list[desk.DeadLetter]:
        """Every dead-letter record read so far, in the order read."""
        with self._lock:
            return list(self.dead_records)

    def is_final(self, local_uid: str) -> bool:
        """Dead-lettered, or at (or past) the final stage."""
        with self._lock:
            stage = self.stage_of.get(local_uid)
            return local_uid in self.dead or (
                stage is not None and STAGES.index(stage) >= STAGES.index(self.final_stage)
            )

    def snapshot(self, expected: set[str] | None = None) -> Snapshot:
        with self._lock:
            keys = expected if expected is not None else set(self.stage_of) | set(self.dead)
            per_stage = dict.fromkeys(STAGES, 0)
            for k in keys:
                s = self.stage_of.get(k)
                if s and k not in self.dead:
                    per_stage[s] += 1
            dead_keys = sorted(
                keys & self.dead.keys()
            )  # not sorted(keys): a 100k backlog is watched twice a second
            dead = len(dead_keys)
            # a document past the final stage (acknowledged while waiting for sent) is final too
            final = dead + sum(per_stage[s] for s in STAGES[STAGES.index(self.final_stage) :])
            now = time.monotonic()
            rate = sum(1 for t in self._done_times if now - t <= 10) / 10
            # neither at a stage nor dead-lettered: on no topic at all
            unseen = len(keys) - sum(per_stage.values()) - dead
            return Snapshot(
                per_stage=per_stage,
                dead_lettered=dead,
                final=final,
                total=len(keys),
                rate=rate,
                errors=list(self.recent),
                dead_letters=[self.dead[k] for k in dead_keys],
                unseen=unseen,
            )

    def wait_for(self, expected: set[str], *, timeout: float, on_tick=None, tick: float = 1.0) -> Snapshot:
        """Block until every expected localUid is final (or ``timeout``), calling ``on_tick(snapshot)``."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot(expected)
            if on_tick:
                on_tick(snap)
            if snap.final >= len(expected) or time.monotonic() >= deadline:
                return snap
            time.sleep(tick)
