"""Acknowledgment end to end (issue #5): callbacks lost, duplicated, early, late, stale, forged; crashes of the
status worker and of the callback service. Real broker, the emulator over HTTP, every worker a process."""

from __future__ import annotations

from collections import Counter

from tests.pipeline_lab import (
    acknowledged_counts,
    dead_letter_keys,
    pipeline_lab,
    registered_counts,
    settle,
)

#: a lost callback is recovered by polling searchRegistryItem after this long (seconds)
ACK_FAST = {"EMD_ACK_TIMEOUT_SECONDS": "10", "EMD_ACK_SCAN_INTERVAL_SECONDS": "1"}


def test_callback_chaos_every_document_acknowledged_once(tmp_path):
    """Under callback-chaos (lost, duplicated, early, late, stale callbacks) every document is acknowledged exactly
    once, none dead-lettered, and РЭМД registered each exactly once."""
    with pipeline_lab(tmp_path, count=100, scenario="callback-chaos", env=ACK_FAST) as lab:
        uids = lab.publish()
        snap = lab.wait(timeout=600)
        settle(lab)
        requests = lab.requests()

        # the chaos really happened: each kind of fault on some registrations, visible in the callback log
        faults = Counter(k for r in requests for k in r["faults"])
        deliveries = Counter(c["kind"] for r in requests for c in r["callbacks"] if c.get("delivered"))
        lost = [r for r in requests if any(c["kind"] == "lost" for c in r["callbacks"])]
        assert all(faults[k] > 0 for k in ("callback_lost", "callback_duplicate", "callback_early", "callback_late",
                                           "callback_out_of_order")), faults
        assert lost and deliveries["duplicate"] > 0 and deliveries["stale"] > 0, deliveries
        assert lab.requests("searchRegistryItem"), "no lost callback was recovered by polling РЭМД"
        assert any(e.get("event") == "registered (found by polling)" for e in lab.log_events("status"))

        assert snap.per_stage["acknowledged"] == 100 and snap.dead_lettered == 0
        assert dead_letter_keys(lab) == set()
        assert acknowledged_counts(lab) == dict.fromkeys(uids, 1)
        assert registered_counts(lab, uids) == dict.fromkeys(uids, 1)
