"""End-to-end test bench: a broker of its own, the emulator and every worker as real processes.

Each ``pipeline_lab(...)`` starts a fresh local broker (the pipeline's topic names are fixed, so a test that
runs whole workers must not share a broker with other tests), creates the topics, starts a
:class:`~lab.dev.local_pipeline.LocalPipeline` on it, and follows the documents with a
:class:`~lab.dev.watch.PipelineWatcher` that reads the topics themselves. Children are real
``emd`` processes, so a test can ``kill -9`` one and restart it.

Timings are short (retry base 1 s, breaker cool-down 2 s, RATE_LIMIT pause 3 s, read timeout 5 s) so faults resolve within a
test; they are settings, not assertions: nothing here asserts on speed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.broker import LocalBroker
from lab.dev.config import DEV_MIS_ID
from lab.dev.local_pipeline import COMPONENTS, LocalPipeline, sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from lab.dev.watch import PipelineWatcher, Snapshot
from producer.topology import ensure_topics, status_topic
from tests.kafka_helpers import read_all

#: where the development МИС, as which every lab run publishes, reads its documents' outcomes
STATUS_TOPIC = status_topic(DEV_MIS_ID).name

#: settings that make transient faults resolve within seconds (a test run, not production)
FAST = {
    "EMD_SENDER_RETRY_BASE_SECONDS": "1",
    "EMD_SENDER_RETRY_MAX_SECONDS": "4",
    "EMD_SENDER_MAX_ATTEMPTS": "30",
    "EMD_SENDER_READ_TIMEOUT": "5",
    "EMD_SENDER_CONNECT_TIMEOUT": "2",
    "EMD_SENDER_BREAKER_COOL_DOWN": "2",
    "EMD_SENDER_RATE_LIMIT_DEFER_SECONDS": "3",
    "EMD_LOG_LEVEL": "info",
}


@dataclass
class Lab:
    pipeline: LocalPipeline
    watcher: PipelineWatcher
    documents: list[tuple[str, bytes]]
    bootstrap_servers: str
    published: list[str] = field(default_factory=list)

    def publish(self, documents: Sequence[tuple[str, bytes]] | None = None) -> list[str]:
        uids = self.pipeline.publish(documents)
        self.published += uids
        return uids

    def wait(
        self, uids: Sequence[str] | None = None, *, timeout: float = 300.0, until: str | None = None
    ) -> Snapshot:
        """Wait until each document is final (the watcher's final stage or a dead letter).

        Fails with every child's log tail when the time runs out, so a stuck run explains itself.
        """
        expected = set(self.published if uids is None else uids)
        if until is not None:
            self.watcher.final_stage = until
        snap = self.watcher.wait_for(expected, timeout=timeout, tick=0.5)
        if snap.final < len(expected):
            stuck = sorted(u for u in expected if not self.watcher.is_final(u))
            raise AssertionError(
                f"{len(stuck)} of {len(expected)} documents not final after {timeout:.0f} s "
                f"(e.g. {stuck[:3]}, stages {[self.watcher.stage_of.get(u) for u in stuck[:3]]})\n"
                + self.tails()
            )
        return snap

    def tails(self, lines: int = 15) -> str:
        sup = self.pipeline.supervisor
        return "\n".join(
            f"--- {name} ({'alive' if c.alive else 'dead'}) ---\n{sup.tail(name, lines)}"
            for name, c in sup.children.items()
        )

    def requests(self, operation: str = "registerDocument") -> list[dict[str, Any]]:
        """The emulator's request log for one operation."""
        return self.pipeline.emulator("requests", operation=operation)

    def registry(self) -> list[dict[str, Any]]:
        return self.pipeline.emulator("registry")

    def topic(self, name: str, *, idle: float = 2.0) -> list[Any]:
        """Every record of a topic, read from the beginning (no group, nothing committed)."""
        return read_all(self.bootstrap_servers, name, idle=idle)

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of child ``name`` (EMD_LOG_FORMAT=json)."""
        path = self.pipeline.supervisor.children[name].log_path
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def documents(count: int) -> list[tuple[str, bytes]]:
    """``count`` documents from the Ministry samples a clinic could register today, each with a fresh localUid."""
    docs, _ = sample_documents(REPOSITORY_SAMPLES, count)
    return docs


@contextmanager
def pipeline_lab(
    tmp_path: Path,
    *,
    count: int = 10,
    docs: list[tuple[str, bytes]] | None = None,
    scenario: str = "ok",
    emulator_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    components: Sequence[str] = COMPONENTS,
    partitions: int = 3,
    final_stage: str = "acknowledged",
    configure: Callable[[dict[str, Any]], None] | None = None,
    n3_clinics: int = 0,
) -> Iterator[Lab]:
    """A running pipeline on a broker of its own; ``Lab.publish()`` then ``Lab.wait()``.

    ``configure``: edits the organisations configuration before the children start
    (:class:`~lab.dev.local_pipeline.LocalPipeline`'s ``configure``).
    """
    docs = documents(count) if docs is None else docs
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=partitions, mis_ids=(DEV_MIS_ID,))
        pipeline = LocalPipeline(
            workdir=tmp_path / "run",
            bootstrap_servers=broker.bootstrap_servers,
            documents=docs,
            kafka_env=broker.client_env(),
            scenario=scenario,
            emulator_args=emulator_args,
            env={**FAST, **(env or {})},
            components=components,
            configure=configure,
            n3_clinics=n3_clinics,
        )
        with pipeline:
            watcher = PipelineWatcher(broker.bootstrap_servers, final_stage=final_stage).start()
            try:
                yield Lab(
                    pipeline=pipeline,
                    watcher=watcher,
                    documents=docs,
                    bootstrap_servers=broker.bootstrap_servers,
                )
            finally:
                watcher.stop()


# --- acknowledgment helpers (tests/test_acknowledgment_e2e.py) --------------------------------------------------
def settle(lab: Lab, *, timeout: float = 180.0, quiet: float = 5.0) -> None:
    """Wait until the emulator has finished every registration (late and stale callbacks included), then ``quiet``
    seconds more so the status worker has handled what it was sent: a test then reads the final topics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [
            r for r in lab.requests() if r["outcome"] in ("accepted", "received") and not r["finished_at"]
        ]
        if not pending:
            break
        time.sleep(1.0)
    time.sleep(quiet)


def acknowledged_counts(lab: Lab) -> dict[str, int]:
    """localUid → how many records it has on emd.document.acknowledged."""
    return dict(Counter(r.key.decode() for r in lab.topic("emd.document.acknowledged")))


def dead_letter_keys(lab: Lab) -> set[str]:
    """localUids on any dead-letter topic of the pipeline."""
    from producer.topology import DEAD_LETTER_TOPICS

    return {r.key.decode() for t in DEAD_LETTER_TOPICS for r in lab.topic(t.name, idle=1.0) if r.key}


def registered_counts(lab: Lab, uids: Sequence[str]) -> dict[str, int]:
    """localUid → how many times the emulator's registry holds it (0 for a document it never registered)."""
    seen = Counter(r["local_uid"] for r in lab.registry())
    return {u: seen[u] for u in uids}


def wait_progress(lab: Lab, *, acknowledged: int, timeout: float = 300.0) -> int:
    """Wait until at least ``acknowledged`` published documents are acknowledged; how many are (for a crash test
    that must strike mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = lab.watcher.snapshot(set(lab.published)).per_stage["acknowledged"]
        if done >= acknowledged:
            return done
        time.sleep(0.2)
    raise AssertionError(
        f"fewer than {acknowledged} documents acknowledged after {timeout:.0f} s\n{lab.tails()}"
    )


def acknowledged_emdr_ids(lab: Lab) -> dict[str, set[str]]:
    """localUid → every emdrId its acknowledged records carry (one per document, however many records)."""
    from producer import events

    out: dict[str, set[str]] = {}
    for r in lab.topic("emd.document.acknowledged"):
        out.setdefault(r.key.decode(), set()).add(
            events.decode(r.value, events.ACKNOWLEDGED)["data"]["registration"]["emdrId"]
        )
    return out
