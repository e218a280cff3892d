"""The МИС library raises when the broker dies during a publish, and works again once it is back."""

from __future__ import annotations

import pytest

from lab.broker import LocalBroker
from lab.dev.samples import REPOSITORY_SAMPLES
from producer.client import DocumentPublisher, PublishError
from producer.topology import created_topic, ensure_topics
from services.documents.store import FilesystemStore
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOC = REPOSITORY_SAMPLES / "ConsultRedaction4.xml"
CREATED = created_topic("test-mis")


def test_killed_broker_makes_publish_raise_and_a_restart_recovers(tmp_path):
    """With the broker killed, publish raises PublishError (nothing silently dropped); after a restart it succeeds."""
    data = DOC.read_bytes()
    store = FilesystemStore(tmp_path / "docs")
    broker = LocalBroker().start()
    port = broker.port
    try:
        ensure_topics(broker.bootstrap_servers, partitions=2, topics=(CREATED,))
        publisher = DocumentPublisher(
            broker.bootstrap_servers, mis_id="test-mis", store=store, system_id="test", timeout=8
        )
        first = publisher.publish(data)
        broker.kill()
        with pytest.raises(PublishError):
            publisher.publish(data)
        publisher.close()

        broker = LocalBroker(port=port).start()  # memory storage: a fresh, empty broker on the same address
        ensure_topics(broker.bootstrap_servers, partitions=2, topics=(CREATED,))
        with DocumentPublisher(
            broker.bootstrap_servers, mis_id="test-mis", store=store, system_id="test", timeout=15
        ) as again:
            second = again.publish(data)
        records = read_all(broker.bootstrap_servers, CREATED.name, expect=1, timeout=30)
    finally:
        broker.stop()
    assert first.local_uid == second.local_uid
    assert [r.key.decode() for r in records] == [second.local_uid]
