"""Reading topics in tests: always from the beginning, never trusting end offsets.

The local broker's ListOffsets "latest" is wrong after batched produce (docs/broker.md#what-it-does-not-do),
so ``read_all`` assigns every partition itself (no consumer group, no join delay), reads from offset 0, and
stops once the topic has been quiet for ``idle`` seconds (or ``expect`` records arrived and it stayed quiet).
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


def read_all(
    bootstrap: str,
    topic: str,
    *,
    idle: float = 1.5,
    timeout: float = 60.0,
    expect: int | None = None,
    **client_options,
) -> list:
    """Every record of ``topic`` from offset 0, as kafka-python ``ConsumerRecord`` objects
    (``client_options``: more KafkaConsumer settings, e.g. TLS)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        **client_options,
    )
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for tp in tps:  # where to start, resolved before the quiet clock starts: a slow answer is not quiet
            consumer.position(tp, timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)))
        records: list = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            got = [r for recs in batch.values() for r in recs]
            if got:
                records.extend(got)
                last = time.monotonic()
            quiet = time.monotonic() - last
            if expect is not None and len(records) < expect:
                continue  # wait (up to timeout) for what the test expects
            if quiet >= idle:
                break
        return records
    finally:
        consumer.close()


def count(bootstrap: str, topic: str, **kw) -> int:
    return len(read_all(bootstrap, topic, **kw))


def wait_until(condition, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; whether it became true (a test then
    asserts the outcome, never the time it took)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
