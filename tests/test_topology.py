"""Topology: every topic in one module, created idempotently, and documented in docs/topics.md."""

from __future__ import annotations

import uuid
from pathlib import Path

from kafka import KafkaAdminClient

from services.messaging import topology
from services.messaging.topology import ALL_TOPICS, Topic, ensure_topics

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
        "emd.document.created.dlt", "emd.document.signed.dlt", "emd.document.sent.dlt"]


def test_topics_are_created_once_and_again_is_a_no_op(broker):
    """ensure_topics creates what is missing, and a second call creates nothing."""
    mine = (Topic(f"topo.{uuid.uuid4().hex[:6]}.a", "test"), Topic(f"topo.{uuid.uuid4().hex[:6]}.b", "test"))
    assert sorted(ensure_topics(broker.bootstrap_servers, partitions=3, topics=mine)) == sorted(t.name for t in mine)
    assert ensure_topics(broker.bootstrap_servers, partitions=3, topics=mine) == []
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        assert {t.name for t in mine} <= set(admin.list_topics())
    finally:
        admin.close()
