"""Consumer lag, computed by the worker itself: records not yet processed, and the age of the oldest.

A broker-side exporter sees committed offsets only; the worker knows more (which records are in flight and
when each was written), and Kafka's first signal of trouble is a stage falling behind. Per partition:

* the end is the high watermark of the last fetch response (``consumer.highwater``; under
  ``read_committed`` the last stable offset), never ListOffsets "latest", which the local broker gets
  wrong after a batched produce (the fetch high watermark is right);
* the first unprocessed record is the oldest record handed to the handler and not done yet, or a retry
  record waiting for its due time; when there is none, everything up to the done position is processed;
* lag in records is ``end - first unprocessed offset``; lag in seconds is the age of that record, 0 when
  the stage is caught up (records fetched but not yet handed out count in records, not in seconds).

``partition_lag`` is the arithmetic alone; ``report`` sums a stage's partitions per topic into
``emd_consumer_lag_records`` and ``emd_consumer_lag_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services import metrics


def partition_lag(
    *, end: int | None, oldest: tuple[int, int] | None, done_position: int | None, now_ms: int
) -> tuple[int, float]:
    """``(records, seconds)`` behind on one partition.

    :param end: the partition's high watermark (None: nothing fetched yet, so nothing known: ``(0, 0)``).
    :param oldest: ``(offset, timestamp_ms)`` of the first unprocessed record, if the worker holds one.
    :param done_position: one past the last offset fully processed (None: none since the assignment).
    :param now_ms: the current time in milliseconds.
    """
    if end is None:
        return 0, 0.0
    if oldest is not None:
        return max(0, end - oldest[0]), max(0.0, (now_ms - oldest[1]) / 1000)
    base = end if done_position is None else done_position
    return max(0, end - base), 0.0


def report(stage: str, topics: Iterable[str], lags: Mapping[tuple[str, int], tuple[int, float]]) -> None:
    """Set the stage's lag gauges: records summed, seconds the worst, per topic (0 for a topic with no partition)."""
    for topic in topics:
        mine = [lag for (t, _), lag in lags.items() if t == topic]
        metrics.LAG_RECORDS.labels(stage, topic).set(sum(r for r, _ in mine))
        metrics.LAG_SECONDS.labels(stage, topic).set(max((s for _, s in mine), default=0.0))
