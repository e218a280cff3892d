"""Topology: every topic in one module, created idempotently, and documented in docs/topics.md."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from producer import topology
from producer.errors import ConfigurationError
from producer.topology import PIPELINE_TOPICS, Topic, ensure_topics

ROOT = Path(__file__).resolve().parents[1]


def test_every_topic_is_documented():
    """docs/topics.md names every topic the code declares (retry tiers and each МИС's two by their pattern)."""
    doc = (ROOT / "docs" / "topics.md").read_text()
    missing = [t.name for t in PIPELINE_TOPICS if f"`{t.name}`" not in doc and ".retry." not in t.name]
    assert missing == []
    assert "`emd.document.signed.retry.0`" in doc and f".retry.{topology.SENDER_RETRY_TIERS - 1}`" in doc
    assert "`emd.document.created.<misId>`" in doc and "`emd.document.status.<misId>`" in doc


def test_each_mis_has_its_own_created_and_status_topic():
    """A МИС's topics carry its id; the signer reads the id back from the created topic, and from nothing else."""
    assert [t.name for t in topology.mis_topics(["clinic-a"])] == [
        "emd.document.created.clinic-a",
        "emd.document.status.clinic-a",
    ]
    assert topology.mis_of_created_topic("emd.document.created.clinic-a") == "clinic-a"
    for other in ("emd.document.created.dlt", "emd.document.status.clinic-a", "emd.document.created", "x"):
        assert topology.mis_of_created_topic(other) is None, other


@pytest.mark.parametrize("bad", ["dlt", "retry", "Clinic", "a.b", "-a", "", "a" * 65, "а-кириллица"])
def test_a_mis_id_that_could_name_another_topic_is_refused(bad):
    """dlt and retry (the dead-letter and retry topics), upper case, dots and over-long ids are not misIds."""
    with pytest.raises(ConfigurationError):
        topology.created_topic(bad)


def test_a_mis_may_write_only_its_created_topic_and_read_only_its_status_topic():
    """In access(), each МИС principal has exactly its two topics, and its groups cover no other МИС's."""
    access = topology.access(["a", "ab"])
    assert [t.name for t in access["mis-a"].writes] == ["emd.document.created.a"]
    assert [t.name for t in access["mis-a"].reads] == ["emd.document.status.a"]
    prefixes = [g.rstrip("*") for g in access["mis-a"].groups if g.endswith("*")]
    assert prefixes and not any(g.startswith(p) for p in prefixes for g in access["mis-ab"].groups)
    assert {t.name for t in access["signer"].reads} == {"emd.document.created.a", "emd.document.created.ab"}


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
    configs = [topology.topic_config(t, min_insync_replicas=2) for t in topology.all_topics(["a"])]
    assert {"2"} == {c["min.insync.replicas"] for c in configs}
    assert (
        str(topology.ACKNOWLEDGED.retention_ms)
        == topology.topic_config(topology.ACKNOWLEDGED)["retention.ms"]
    )


@pytest.mark.integration
def test_min_insync_replicas_above_the_replication_factor_is_refused(broker):
    """No write could succeed with more in-sync replicas required than exist, so creating topics refuses it."""
    with pytest.raises(ConfigurationError, match="KAFKA_MIN_INSYNC_REPLICAS"):
        ensure_topics(
            broker.bootstrap_servers,
            replication_factor=1,
            min_insync_replicas=2,
            topics=(Topic("topo.never", "test"),),
        )


@pytest.mark.integration
def test_emd_topics_creates_each_mis_topics_from_the_organisations_file_or_the_command_line(
    broker, tmp_path, monkeypatch, capsys
):
    """`emd topics` creates the created and status topics of the МИС of the organisations file, or of those given
    with --mis, beside the pipeline's; a misId that would name another topic is refused."""
    from lab.dev.config import write_dev_config
    from services.cli import main as emd

    run = uuid.uuid4().hex[:6]
    monkeypatch.setenv("EMD_ORGANIZATIONS", str(write_dev_config(tmp_path, mis_id=f"file-{run}")))
    assert emd(["topics", "--bootstrap", broker.bootstrap_servers]) == 0
    assert emd(["topics", "--bootstrap", broker.bootstrap_servers, "--mis", f"cli-{run}"]) == 0
    out = capsys.readouterr().out
    assert f"emd.document.created.file-{run}" in out and f"emd.document.status.cli-{run}" in out
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        names = set(admin.list_topics())
    finally:
        admin.close()
    assert {t.name for t in topology.mis_topics([f"file-{run}", f"cli-{run}"])} <= names
    assert emd(["topics", "--bootstrap", broker.bootstrap_servers, "--mis", "retry"]) == 2
    assert "misId 'retry'" in capsys.readouterr().err
