"""lab.dev.watch: how the live view of `emd run` and `emd demo` counts documents, fed records directly."""

from __future__ import annotations

from types import SimpleNamespace

from lab.dev.config import DEV_MIS_ID
from lab.dev.watch import PipelineWatcher
from producer import topology
from services.messaging import deadletter as dl

CREATED = topology.created_topic(DEV_MIS_ID).name


def _record(key: str, offset: int = 0, headers=()):
    return SimpleNamespace(
        key=key.encode(), value=b"{}", headers=list(headers), partition=0, offset=offset, timestamp=1000
    )


def test_unfinished_documents_are_told_from_lost_ones():
    """Of five published documents: one acknowledged, one dead-lettered, two on their way (created, sent) are
    unfinished, and the one on no topic at all is the only one counted lost; the dead letter is kept as read."""
    watcher = PipelineWatcher("unused:9092")
    watcher._see(CREATED, _record("done"))
    watcher._see(topology.ACKNOWLEDGED.name, _record("done"))
    watcher._see(CREATED, _record("waiting"))
    watcher._see(topology.SENT.name, _record("in-flight"))
    headers = [(dl.STAGE, b"sender"), (dl.REASON, b"REMD_REJECTED")]
    watcher._see(topology.SIGNED_DLT.name, _record("failed", offset=3, headers=headers))
    snap = watcher.snapshot({"done", "waiting", "in-flight", "failed", "gone"})
    assert (snap.final, snap.dead_lettered, snap.unfinished, snap.unseen, snap.total) == (2, 1, 2, 1, 5)
    [kept] = watcher.dead_letter_records()
    assert (kept.topic, kept.offset, kept.key, kept.reason) == (
        topology.SIGNED_DLT.name,
        3,
        "failed",
        "REMD_REJECTED",
    )
