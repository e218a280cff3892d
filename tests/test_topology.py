"""Topology: every topic in one module, created idempotently, and documented in docs/topics.md."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from producer import topology
from producer.topology import ALL_TOPICS, Topic, ensure_topics

ROOT = Path(__file__).resolve().parents[1]


def test_every_topic_is_documented():
    """docs/topics.md names every topic the code declares (retry tiers by their pattern)."""
    doc = (ROOT / "docs" / "topics.md").read_text()
    missing = [t.name for t in ALL_TOPICS if f"`{t.name}`" not in doc and ".retry." not in t.name]
    assert missing == []
    assert "`emd.document.signed.retry.0`" in doc and f".retry.{topology.SENDER_RETRY_TIERS - 1}`" in doc


def test_dead_letter_topics_follow_the_source_name():
    """Each dead-letter topic is its source topic's name plus .dlt."""
    assert [t.name for t in topology.DEAD_LETTER_TOPICS] == [
        "emd.document.created.dlt",
        "emd.document.signed.dlt",
        "emd.document.sent.dlt",
    ]


@pytest.mark.integration
def test_topics_are_created_once_and_again_is_a_no_op(broker):
    """ensure_topics creates what is missing, and a second call creates nothing."""
    mine = (Topic(f"topo.{uuid.uuid4().hex[:6]}.a", "test"), Topic(f"topo.{uuid.uuid4().hex[:6]}.b", "test"))
    assert sorted(ensure_topics(broker.bootstrap_servers, partitions=3, topics=mine)) == sorted(
        t.name for t in mine
    )
    assert ensure_topics(broker.bootstrap_servers, partitions=3, topics=mine) == []
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        assert {t.name for t in mine} <= set(admin.list_topics())
    finally:
        admin.close()


def test_topics_are_configured_with_min_insync_replicas():
    """Every topic's broker configuration carries min.insync.replicas, so acks=all survives a lost broker."""
    configs = [topology.topic_config(t, min_insync_replicas=2) for t in ALL_TOPICS]
    assert {"2"} == {c["min.insync.replicas"] for c in configs}
    assert (
        str(topology.ACKNOWLEDGED.retention_ms)
        == topology.topic_config(topology.ACKNOWLEDGED)["retention.ms"]
    )


@pytest.mark.integration
def test_min_insync_replicas_above_the_replication_factor_is_refused(broker):
    """No write could succeed with more in-sync replicas required than exist, so creating topics refuses it."""
    from producer.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="KAFKA_MIN_INSYNC_REPLICAS"):
        ensure_topics(
            broker.bootstrap_servers,
            replication_factor=1,
            min_insync_replicas=2,
            topics=(Topic("topo.never", "test"),),
        )
