"""services.desk.unhandled: dead letters nobody has handled, and the age of the oldest, from the real topics."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from kafka import KafkaProducer

from producer import topology
from services.desk.unhandled import (
    UNHANDLED,
    UNHANDLED_OLDEST,
    DeadLetterWatch,
    Letter,
    UnhandledDeadLetters,
    export,
)
from services.messaging import deadletter as dl

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
M1 = "11111111-1111-4111-8111-111111111111"
ORG = "1.2.643.1"
OTHER = "1.2.643.2"


def _ago(**delta) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def test_what_is_unhandled_and_how_old(store):
    """A signer dead letter of a document never signed since, a sender one whose document still has only its old
    attempt, and a failed one are unhandled; the oldest's age is per stage and category."""
    store.register("sent-once", organization=ORG, kind="119", signed_event=b"{}")
    store.register("rejected", organization=ORG, kind="119", signed_event=b"{}")
    store.mark_failed("rejected", organization=ORG, reason="REMD_REJECTED")
    view = UnhandledDeadLetters()
    view.add(
        [
            Letter("never-signed", ORG, "signer", "data", _ago(days=3)),
            Letter(
                "sent-once", ORG, "sender", "transient", dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            ),
            Letter("rejected", ORG, "status", "data", dt.datetime.now(dt.UTC) - dt.timedelta(days=1)),
        ]
    )
    view.settle(_lookup(store), NOW)
    assert {"never-signed", "sent-once", "rejected"} == {uid for _, uid in view.letters}
    summary = view.summary(NOW)
    assert (1, 3 * 86400.0) == summary[("signer", "data")]


def test_a_replayed_or_resent_document_is_handled_and_a_newer_dead_letter_replaces_the_older(store):
    """The document recorded again after its dead letter (a replay, a corrected resend) is handled; a second dead
    letter of one document counts once, at its own time; one older than the topics' retention is gone; another
    organisation's document under the same localUid moving on handles nothing of this one's."""
    failed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    view = UnhandledDeadLetters(retention=dt.timedelta(days=30))
    view.add(
        [
            Letter("replayed", ORG, "sender", "transient", failed_at),
            Letter("replayed", OTHER, "sender", "transient", failed_at),
            Letter("twice", ORG, "signer", "data", _ago(days=10)),
            Letter("twice", ORG, "signer", "data", _ago(days=2)),
            Letter("expired", ORG, "signer", "data", _ago(days=31)),
        ]
    )
    store.register("replayed", organization=ORG, kind="119", signed_event=b"{}")
    # the replay's attempt, after the dead letter
    store.record_attempt("replayed", M1, organization=ORG, endpoint="https://ips")
    view.settle(_lookup(store), NOW)
    assert {(ORG, "twice"), (OTHER, "replayed")} == set(view.letters)
    assert (1, 2 * 86400.0) == view.summary(NOW)[("signer", "data")]


def _lookup(store):
    return lambda org, uid: store.get(uid, organization=org)


def test_the_gauges_are_exactly_the_summary():
    """Exporting sets one series per stage and category and removes those no longer in the summary."""
    export({("signer", "data"): (2, 600.0), ("sender", "configuration"): (1, 60.0)})
    export({("signer", "data"): (1, 900.0)})
    assert 1 == UNHANDLED.labels("signer", "data")._value.get()
    assert 900 == UNHANDLED_OLDEST.labels("signer", "data")._value.get()
    assert [("signer", "data")] == [tuple(s.labels.values()) for s in UNHANDLED.collect()[0].samples]
    export({})
    assert [] == UNHANDLED.collect()[0].samples


def _dead_letter(
    producer: KafkaProducer, topic: str, uid: str, *, stage: str, category: str, at: dt.datetime
) -> None:
    headers = {
        dl.STAGE: stage,
        dl.CATEGORY: category,
        dl.LOCAL_UID: uid,
        dl.ORGANIZATION: ORG,
        dl.LAST_FAILURE: at.isoformat().replace("+00:00", "Z"),
        dl.REASON: "TEST",
    }
    producer.send(topic, key=uid.encode(), value=b"{}", headers=[(k, v.encode()) for k, v in headers.items()])
    producer.flush()


@pytest.mark.integration
def test_the_watch_reads_the_topics_incrementally_and_follows_a_replay(broker, store):
    """On the real topics: the watch finds new dead letters (only what is new on the second read), and a document
    replayed since drops out of the unhandled ones."""
    topology.ensure_topics(broker.bootstrap_servers, topics=topology.DEAD_LETTER_TOPICS)
    run = uuid.uuid4().hex[:8]
    refused, rejected = f"refused-{run}", f"rejected-{run}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    watch = DeadLetterWatch({"bootstrap_servers": broker.bootstrap_servers}, store=store)
    try:
        a_week_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        _dead_letter(
            producer, topology.CREATED_DLT.name, refused, stage="signer", category="data", at=a_week_ago
        )
        watch.refresh()
        assert (ORG, refused) in watch.view.letters
        assert UNHANDLED_OLDEST.labels("signer", "data")._value.get() >= 7 * 86400

        store.register(rejected, organization=ORG, kind="119", signed_event=b"{}")
        store.mark_failed(rejected, organization=ORG, reason="REMD_REJECTED")
        _dead_letter(
            producer,
            topology.SENT_DLT.name,
            rejected,
            stage="acknowledger",
            category="data",
            at=dt.datetime.now(dt.UTC),
        )
        assert 1 == sum(1 for letter in watch._new_letters() if letter.local_uid == rejected)
        assert [] == [letter for letter in watch._new_letters() if letter.local_uid in (refused, rejected)]

        # the replay reached the sender
        store.record_attempt(rejected, str(uuid.uuid4()), organization=ORG, endpoint="https://ips")
        watch.view.add(
            [Letter(rejected, ORG, "status", "data", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))]
        )
        watch.refresh()
        assert (ORG, refused) in watch.view.letters and (ORG, rejected) not in watch.view.letters
        watch.forget()
        assert [] == UNHANDLED.collect()[0].samples
    finally:
        watch.close()
        producer.close()
