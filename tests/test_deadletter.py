"""The dead-letter and retry record format (services.messaging.deadletter), without a broker."""

from __future__ import annotations

import time

from services.messaging import deadletter as dl


def _failure(**kw) -> dl.Failure:
    return dl.Failure(**{"stage": "sender", "reason": "X", "message": "m", "exception_fqcn": "E", **kw})


def _headers(original: dict[str, bytes], **kw) -> dict[str, str]:
    where = {
        "topic": "emd.document.signed",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1,
        "consumer_group": "g",
    }
    failure = kw.pop("failure", None) or _failure()
    return {
        k: v.decode()
        for k, v in dl.dead_letter_headers(original_headers=original, failure=failure, **{**where, **kw})
    }


def test_a_dead_letter_keeps_the_original_headers_and_says_where_and_why():
    """The original headers stay; the failure headers name the topic, partition, offset, group, stage, reason and
    the document, and leave out what the failure does not know."""
    h = _headers(
        {"emd-trace-id": b"t-1"}, failure=_failure(local_uid="doc-1", remd_code="NO_SNILS", category="data")
    )
    assert h["emd-trace-id"] == "t-1"
    assert (h[dl.ORIGINAL_TOPIC], h[dl.ORIGINAL_PARTITION], h[dl.ORIGINAL_OFFSET]) == (
        "emd.document.signed",
        "3",
        "42",
    )
    assert (h[dl.ORIGINAL_CONSUMER_GROUP], h[dl.STAGE], h[dl.REASON]) == ("g", "sender", "X")
    assert (h[dl.LOCAL_UID], h[dl.REMD_CODE], h[dl.CATEGORY]) == ("doc-1", "NO_SNILS", "data")
    assert dl.HINT not in h and dl.MESSAGE_IDS not in h and h[dl.FIRST_FAILURE] == h[dl.LAST_FAILURE]


def test_dead_lettering_again_replaces_failure_headers():
    """A record dead-lettered a second time carries one set of failure headers, its first failure time and all ids."""
    first = dl.dead_letter_headers(
        original_headers={"emd-trace-id": b"t"},
        topic="a",
        partition=0,
        offset=5,
        timestamp_ms=1,
        consumer_group="g",
        failure=dl.Failure(stage="sender", reason="X", message="m", exception_fqcn="E", message_ids=("m-1",)),
    )
    second = dl.dead_letter_headers(
        original_headers=dict(first),
        topic="a",
        partition=0,
        offset=9,
        timestamp_ms=2,
        consumer_group="g",
        failure=dl.Failure(stage="sender", reason="Y", message="n", exception_fqcn="E", message_ids=("m-2",)),
    )
    names = [k for k, _ in second]
    assert len(names) == len(set(names))
    h = {k: v.decode() for k, v in second}
    assert h[dl.REASON] == "Y" and h[dl.MESSAGE_IDS] == "m-1,m-2"
    assert h[dl.FIRST_FAILURE] == dict(first)[dl.FIRST_FAILURE].decode()


def test_a_record_from_a_retry_tier_is_dead_lettered_under_its_real_origin():
    """A record that went through retry tiers names the topic, partition and offset it first came from."""
    retried = dl.retry_headers(
        {}, topic="emd.document.signed", partition=1, offset=7, delay=60, reason="TIMEOUT"
    )
    h = _headers(retried, topic="emd.document.signed.retry-1", partition=0, offset=99)
    assert (h[dl.ORIGINAL_TOPIC], h[dl.ORIGINAL_PARTITION], h[dl.ORIGINAL_OFFSET]) == (
        "emd.document.signed",
        "1",
        "7",
    )


def test_long_failure_texts_are_cut_to_fit_a_header():
    """The exception and РЭМД messages are cut at MAX_MESSAGE_CHARS: a header, not a log file."""
    h = _headers({}, failure=_failure(message="x" * 5000, remd_message="у" * 5000))
    assert len(h[dl.EXCEPTION_MESSAGE]) == len(h[dl.REMD_MESSAGE]) == dl.MAX_MESSAGE_CHARS


def test_retry_headers_keep_the_first_origin_and_set_due_reason_attempt_and_ids():
    """Each tier keeps the origin the first tier recorded, and sets when the record is due, why, its attempt count
    and every MessageID so far."""
    before = time.time()
    first = dl.retry_headers({"emd-trace-id": "t"}, topic="in", partition=2, offset=5, delay=30, reason="A")
    second = dl.retry_headers(
        first,
        topic="in.retry-1",
        partition=0,
        offset=1,
        delay=120,
        reason="B",
        attempt=3,
        message_ids=("m-1", "m-2"),
    )
    after = time.time()
    h = {k: v.decode() for k, v in second.items()}
    assert (h[dl.RETRY_ORIGINAL_TOPIC], h[dl.RETRY_ORIGINAL_PARTITION], h[dl.RETRY_ORIGINAL_OFFSET]) == (
        "in",
        "2",
        "5",
    )
    assert (h[dl.RETRY_REASON], h[dl.ATTEMPTS], h[dl.MESSAGE_IDS], h["emd-trace-id"]) == (
        "B",
        "3",
        "m-1,m-2",
        "t",
    )
    assert (before + 120) * 1000 - 1 <= int(h[dl.RETRY_DUE]) <= (after + 120) * 1000


def test_message_ids_are_split_and_merged_in_order_without_repeats():
    """MessageID lists are read from a header with blanks dropped, and merged oldest first, each once."""
    assert dl.split_ids(b" m-1, ,m-2,") == ["m-1", "m-2"] and dl.split_ids(None) == []
    assert dl.merge_ids(["m-1", "m-2"], ["m-2", "", "m-3"]) == ["m-1", "m-2", "m-3"]


def test_describe_shows_only_the_failure_headers():
    """describe() gives a dead letter's failure headers, MessageIDs and counters, not the record's own headers."""
    headers = dict(
        dl.dead_letter_headers(
            original_headers={"emd-trace-id": b"t", dl.REPLAY_COUNT: b"1"},
            topic="a",
            partition=0,
            offset=5,
            timestamp_ms=1,
            consumer_group="g",
            failure=_failure(message_ids=("m-1",)),
        )
    )
    shown = dl.describe(headers)
    assert "emd-trace-id" not in shown and shown[dl.REPLAY_COUNT] == "1" and shown[dl.MESSAGE_IDS] == "m-1"
    assert shown[dl.REASON] == "X" and all(
        k.startswith(dl.FAILURE_PREFIXES) or k in (dl.MESSAGE_IDS, dl.REPLAY_COUNT) for k in shown
    )
