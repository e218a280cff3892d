"""Consumer lag computed by the worker: the arithmetic, and a stage reporting it on the real broker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from producer.topology import Topic, ensure_topics
from services.config import Settings
from services.messaging.app import App
from services.messaging.lag import partition_lag
from services.messaging.records import Output, Record
from services.messaging.runtime import Stage
from services.metrics import REGISTRY
from tests.stage_helpers import running

pytestmark = pytest.mark.integration


class TestPartitionLag:
    def test_nothing_fetched_yet_is_no_lag(self):
        """Before the first fetch the end is unknown, so nothing is reported behind."""
        assert (0, 0.0) == partition_lag(end=None, oldest=None, done_position=None, now_ms=0)

    def test_the_oldest_unprocessed_record_sets_both_numbers(self):
        """Records behind count from the oldest unprocessed offset; seconds are that record's age."""
        assert (7, 30.0) == partition_lag(end=10, oldest=(3, 70_000), done_position=3, now_ms=100_000)

    def test_caught_up_is_zero(self):
        """Everything up to the end processed: no lag in records or seconds."""
        assert (0, 0.0) == partition_lag(end=10, oldest=None, done_position=10, now_ms=100_000)

    def test_fetched_but_not_handed_out_counts_in_records_only(self):
        """Records past the done position that no handler holds yet count in records, with no age."""
        assert (4, 0.0) == partition_lag(end=10, oldest=None, done_position=6, now_ms=100_000)


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_stage_reports_its_lag_while_behind_and_zero_once_caught_up(broker, tmp_path):
    """A stage whose handler is held reports records behind and a growing age, then 0 once it catches up."""
    topic = f"lag.{uuid.uuid4().hex[:8]}"
    ensure_topics(
        broker.bootstrap_servers, partitions=1, topics=(Topic(topic, "t"), Topic(topic + ".dlt", "t"))
    )
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for n in range(5):
        producer.send(topic, key=f"k{n}".encode(), value=b"{}")
    producer.close()
    release = threading.Event()

    async def handle(record: Record) -> list[Output]:
        while not release.is_set():
            await asyncio.sleep(0.05)
        return []

    settings = Settings.from_env(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        data_dir=tmp_path,
        kafka_enable_idempotence=False,
        shutdown_grace_seconds=5.0,
    )
    name = f"lagtest-{topic.rpartition('.')[2]}"  # the test's own consumer group, emd-<name>
    stage = Stage(
        name=name,
        input_topic=topic,
        handler=handle,
        dead_letter_topic=topic + ".dlt",
        settings=settings,
        lag_interval=0.2,
    )
    with running(App(name, settings, [stage], serve_metrics=False)):
        deadline = time.monotonic() + 60
        while (_sample("emd_consumer_lag_records", stage=name, topic=topic) or 0) < 5:
            assert time.monotonic() < deadline, "the stage never reported its lag"
            time.sleep(0.2)
        first_age = _sample("emd_consumer_lag_seconds", stage=name, topic=topic)
        while _sample("emd_consumer_lag_seconds", stage=name, topic=topic) <= first_age:
            assert time.monotonic() < deadline, "the age of the oldest record did not grow"
            time.sleep(0.2)
        assert stage.ready()[0]
        release.set()
        while _sample("emd_consumer_lag_records", stage=name, topic=topic) != 0:
            assert time.monotonic() < deadline, "the lag did not come back to 0"
            time.sleep(0.2)
        assert 0 == _sample("emd_consumer_lag_seconds", stage=name, topic=topic)
        # the lag counts records done; their commit follows within the commit interval
        while not _sample("emd_commits_total", stage=name):
            assert time.monotonic() < deadline, "the done records were never committed"
            time.sleep(0.2)
