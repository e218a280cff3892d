"""emd dlq: filters, the replay loop guard and the headers a replayed record carries."""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys

from services import deadletter as dl
from services.commands.dlq_cmd import entry, matches, replay_record


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
