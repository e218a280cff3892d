"""Reading the dead-letter topics from the cluster (kafka-python: a command's short-lived, synchronous client).

``read(kafka, topics)`` yields ``(consumer, DeadLetter)`` for every record, from the beginning (or, with
``group``, from that group's committed offsets, which is how a replay resumes). Reading stops once the
topics were quiet for ``idle`` seconds, counted from the moment partitions are assigned: joining a group
takes seconds (the coordinator's join delay), and a timeout counted from the start would end the read
before anything was fetched. Never from end offsets: the local broker's "latest" is wrong after batched
produce (DEVELOPERS.md), so a read goes to the quiet end instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
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
