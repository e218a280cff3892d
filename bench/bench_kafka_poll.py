"""How librdkafka's consumer is best driven from asyncio: a thread of its own, or ``consume(…, 0)`` on a timer.

The runtime's librdkafka transport (``services/messaging/_transports/confluent.py``) gives each consumer a thread
that calls ``consume`` and hands records to the loop. The alternative is to call the non-blocking
``consume(n, 0)`` from the loop itself, every few milliseconds. This measures both on the local broker, as CPU
of this process (user + system, so the machine's other load does not count):

* a backlog of ``BENCH_POLL_RECORDS`` records of 10 KB (the size of a claim-check event) read to its end;
* an idle consumer for ``BENCH_POLL_IDLE`` seconds (what a caught-up worker pays between documents).

Reproduce: ``.venv/bin/python bench/bench_kafka_poll.py`` (starts a broker of its own).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECORDS = int(os.environ.get("BENCH_POLL_RECORDS", "20000"))
IDLE = float(os.environ.get("BENCH_POLL_IDLE", "10"))
TIMER = 0.005  # the timer variant's period: a record waits at most this long


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fill(bootstrap: str, topic: str) -> None:
    from kafka import KafkaProducer

    from producer.topology import Topic, ensure_topics

    ensure_topics(bootstrap, partitions=6, topics=(Topic(topic, "bench"),))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    value = b"x" * 10_000
    for i in range(RECORDS):
        producer.send(topic, key=f"doc-{i}".encode(), value=value)
    producer.flush()
    producer.close()


class _Listener:
    async def revoked(self, partitions: frozenset) -> None:
        return None

    async def assigned(self, partitions: frozenset) -> None:
        return None


async def thread_variant(bootstrap: str, topic: str) -> tuple[float, float]:
    """The transport as deployed: (CPU s for the backlog, CPU s idle)."""
    from services.config import Settings
    from services.messaging._transports.confluent import ConfluentTransport

    settings = Settings.from_env(kafka_bootstrap_servers=bootstrap)
    consumer = ConfluentTransport(settings).consumer(group_id=f"bench-{uuid.uuid4().hex[:6]}", client_id="b")
    await consumer.start([topic], _Listener())
    seen, start = 0, None
    while seen < RECORDS:
        batch = await consumer.fetch(timeout=0.2, max_records=16)
        if batch and start is None:
            start = cpu()
        seen += sum(len(rs) for rs in batch.values())
    backlog = cpu() - (start or cpu())
    before = cpu()
    deadline = time.monotonic() + IDLE
    while time.monotonic() < deadline:
        await consumer.fetch(timeout=0.2, max_records=16)
    idle = cpu() - before
    await consumer.stop()
    return backlog, idle


async def timer_variant(bootstrap: str, topic: str) -> tuple[float, float]:
    """``consume(n, 0)`` from the loop every ``TIMER`` s (no await possible in its rebalance callbacks)."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 2000,
            "queued.max.messages.kbytes": 16384,
        }
    )
    consumer.subscribe([topic])
    seen, start = 0, None
    while seen < RECORDS:
        messages = [m for m in consumer.consume(16, 0) if m.error() is None]
        if messages and start is None:
            start = cpu()
        seen += len(messages)
        if not messages:
            await asyncio.sleep(TIMER)
        else:
            await asyncio.sleep(0)
    backlog = cpu() - (start or cpu())
    before = cpu()
    deadline = time.monotonic() + IDLE
    while time.monotonic() < deadline:
        consumer.consume(16, 0)
        await asyncio.sleep(TIMER)
    idle = cpu() - before
    consumer.close()
    return backlog, idle


def main() -> None:
    from lab.broker import LocalBroker

    with LocalBroker() as broker:
        rows = []
        for name, variant in (("thread (deployed)", thread_variant), ("timer, consume(n, 0)", timer_variant)):
            topic = f"bench.poll.{uuid.uuid4().hex[:6]}"
            fill(broker.bootstrap_servers, topic)
            backlog, idle = asyncio.run(variant(broker.bootstrap_servers, topic))
            rows.append((name, backlog, idle))
    print(f"{RECORDS} records of 10 KB, 6 partitions; idle for {IDLE:.0f} s; CPU of this process")
    print("| driving librdkafka's consumer | µs CPU per record (backlog) | ms CPU per idle second |")
    print("|---|---|---|")
    for name, backlog, idle in rows:
        print(f"| {name} | {backlog / RECORDS * 1e6:.1f} | {idle / IDLE * 1000:.2f} |")


if __name__ == "__main__":
    main()
