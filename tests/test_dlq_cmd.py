"""emd dlq: filters, the replay loop guard and the headers a replayed record carries."""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys

from services.commands.dlq_cmd import entry, matches, replay_record
from services.messaging import deadletter as dl


def _entry(**headers):
    base = {dl.ORIGINAL_TOPIC: "emd.document.signed", dl.REASON: "REMD_REJECTED", dl.LOCAL_UID: "u1",
            dl.LAST_FAILURE: "2026-11-20T10:00:00Z", dl.MESSAGE_IDS: "a,b", dl.ATTEMPTS: "3",
            dl.RETRY_DUE: "1", "emd-trace-id": "t"}
    base.update(headers)
    return entry("emd.document.signed.dlt", 0, 5, b"u1", b"{}", {k: v.encode() for k, v in base.items()})


def _args(**kw):
    return argparse.Namespace(**{"reason": None, "local_uid": None, "since": None, **kw})


def test_filters_by_reason_uid_and_since():
    """list/export/replay filters match reason, localUid and the last-failure time."""
    e = _entry()
    assert matches(e, _args()) and matches(e, _args(reason="REMD_REJECTED", local_uid="u1"))
    assert not matches(e, _args(reason="OTHER")) and not matches(e, _args(local_uid="u2"))
    assert not matches(e, _args(since=dt.datetime(2026, 11, 21, tzinfo=dt.UTC)))
    assert e["messageIds"] == ["a", "b"]


def test_replay_strips_failure_headers_and_counts():
    """A replayed record goes to its original topic without failure/retry headers, keeping MessageIDs, count+1."""
    topic, headers = replay_record(_entry(), limit=3)
    h = dict(headers)
    assert topic == "emd.document.signed"
    assert h[dl.REPLAY_COUNT] == b"1" and h[dl.MESSAGE_IDS] == b"a,b" and h["emd-trace-id"] == b"t"
    assert not any(k.startswith(("kafka_dlt-", "emd-dlt-")) for k in h)
    assert dl.ATTEMPTS not in h and dl.RETRY_DUE not in h


def test_replay_refused_beyond_the_limit():
    """A record replayed `limit` times already is refused (loop guard)."""
    assert "already replayed 3 times" in replay_record(_entry(**{dl.REPLAY_COUNT: "3"}), limit=3)
    assert replay_record(_entry(**{dl.REPLAY_COUNT: "2"}), limit=3)[1][-1] == (dl.REPLAY_COUNT, b"3")


def test_cli_help_and_bad_input():
    """`emd dlq --help` works and a bad --since exits 2 with a message."""
    ok = subprocess.run([sys.executable, "-m", "services.cli", "dlq", "replay", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--dry-run" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "services.cli", "dlq", "list", "--since", "yesterday"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "ISO" in bad.stderr


def test_replay_goes_to_the_stage_that_takes_the_event_type():
    """A status-stage dead letter of a signed event (origin emd.document.sent) is replayed to the sender's topic."""
    e = _entry(**{dl.ORIGINAL_TOPIC: "emd.document.sent", "emd-event-type": "emd.document.signed"})
    assert replay_record(e, limit=3)[0] == "emd.document.signed"
    same = _entry(**{dl.ORIGINAL_TOPIC: "emd.document.created", "emd-event-type": "emd.document.created"})
    assert replay_record(same, limit=3)[0] == "emd.document.created"
    foreign = _entry(**{dl.ORIGINAL_TOPIC: "emd.remd.callbacks"})
    assert replay_record(foreign, limit=3)[0] == "emd.remd.callbacks"


def test_export_line_carries_the_dead_letter_time():
    """An exported dead letter says when it was dead-lettered (the record timestamp, ms)."""
    e = entry("emd.document.signed.dlt", 0, 5, b"u1", b"{}", {}, timestamp_ms=1234)
    assert e["timestamp"] == 1234 and e["messageIds"] == []


def test_replay_max_and_limit_must_be_positive_numbers():
    """`--max 0` and `--limit x` are refused by the parser with exit 2 and the option named."""
    for bad in (["--max", "0"], ["--limit", "x"]):
        r = subprocess.run([sys.executable, "-m", "services.cli", "dlq", "replay", *bad], capture_output=True, text=True)
        assert r.returncode == 2 and bad[0] in r.stderr


def test_one_replay_run_leaves_dead_letters_newer_than_itself_for_the_next_run(tmp_path):
    """A dead letter written after the replay began is neither replayed nor committed past: the next run takes it."""
    import os
    import time

    from kafka import KafkaProducer

    from services.messaging.broker import LocalBroker
    from services.messaging.topology import ensure_topics
    from tests.kafka_helpers import read_all

    with LocalBroker(log_path=tmp_path / "broker.log") as broker:  # its own: the pipeline topic names are fixed
        ensure_topics(broker.bootstrap_servers, partitions=1)
        now = int(time.time() * 1000)
        later = now + 15_000
        p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        for uid, ts in (("old", now - 1000), ("new", later)):
            headers = [(dl.ORIGINAL_TOPIC, b"emd.document.signed"), (dl.REASON, b"X"), (dl.LOCAL_UID, uid.encode())]
            p.send("emd.document.signed.dlt", key=uid.encode(), value=b"{}", headers=headers, timestamp_ms=ts)
        p.flush()
        p.close()
        env = {**os.environ, **broker.client_env()}

        def replay() -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "services.cli", "dlq", "replay", "--stage", "sender"],
                                  capture_output=True, text=True, env=env, timeout=180)

        first = replay()
        assert first.returncode == 0 and "1 replayed" in first.stderr and "replay old" in first.stdout, first.stderr
        while time.time() * 1000 <= later:  # the "new" dead letter is now in the past
            time.sleep(0.5)
        second = replay()
        assert second.returncode == 0 and "1 replayed" in second.stderr and "replay new" in second.stdout, second.stderr
        replayed = read_all(broker.bootstrap_servers, "emd.document.signed", expect=2)
    assert sorted(r.key for r in replayed) == [b"new", b"old"]
    assert all(dict(r.headers)[dl.REPLAY_COUNT] == b"1" for r in replayed)
