"""getRegistryItem answered asynchronously, end to end: the status worker's question goes to the emulator over HTTP,
its answer comes back as a getRegistryItemResult through the callback service and the broker, and decides. Real
processes, real broker."""

from __future__ import annotations

import re

import pytest

from producer import events
from services import lifecycle as lc
from tests.pipeline_lab import acknowledged_counts, dead_letter_keys, pipeline_lab, settle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: no registerDocumentResult arrives, so each document reaches its deadline after this long (seconds)
ACK_FAST = {"EMD_ACK_TIMEOUT_SECONDS": "15", "EMD_ACK_SCAN_INTERVAL_SECONDS": "1"}


def test_a_lost_callback_is_recovered_by_the_asynchronous_get_registry_item_answer(tmp_path):
    """Every registerDocumentResult lost: at the deadline the status worker finds each document by searchRegistryItem
    and asks for its record with getRegistryItem, which ИПС only acknowledges; the record comes back as a
    getRegistryItemResult through the callback service, correlated by the request's MessageID, and acknowledges
    the document once with РЭМД's registration time to the microsecond and its storeTillDate."""
    with pipeline_lab(tmp_path, count=3, env=ACK_FAST) as lab:
        lab.pipeline.add_rules([{"fault": "callback_lost", "operation": "registerDocument"}])
        uids = lab.publish()
        lab.wait(timeout=300)
        settle(lab)

        assert all(any(c["kind"] == "lost" for c in r["callbacks"]) for r in lab.requests())
        questions = lab.requests("getRegistryItem")
        assert {q["local_uid"] for q in questions} == set(uids), questions
        assert all(q["outcome"] == "answered" and q["callbacks"][-1]["delivered"] for q in questions)
        persisted = [
            e
            for e in lab.log_events("callbacks")
            if e.get("event") == "callback persisted" and e.get("operation") == "getRegistryItemResult"
        ]
        assert {e["relates_to"] for e in persisted} >= {q["message_id"] for q in questions}

        assert acknowledged_counts(lab) == dict.fromkeys(uids, 1) and dead_letter_keys(lab) == set()
        registry = {r["local_uid"]: r for r in lab.registry()}
        for record in lab.topic("emd.document.acknowledged"):
            registration = events.decode(record.value, events.ACKNOWLEDGED)["data"]["registration"]
            entry = registry[record.key.decode()]
            assert registration["emdrId"] == entry["emdr_id"]
            assert re.fullmatch(r".*T\d\d:\d\d:\d\d\.\d{6}Z", registration["registrationTime"])
            assert registration["storeTillDate"] == f"{entry['store_till_date']}+03:00"
        registered = {
            e["local_uid"]: e
            for e in lab.log_events("status")
            if e.get("event") == "registered (found by polling)"
        }
        assert set(registered) == set(uids)

        store = lc.open_store(lab.pipeline.data_dir)
        try:
            for uid in uids:
                [doc] = store.documents_of(uid)
                questions = store.registry_requests(uid, organization=doc.organization)
                [asked] = [q for q in questions if q.outcome is not None]
                assert asked.purpose == "deadline" and asked.outcome == "registered"
                assert asked.decided_by.startswith("callback ")
                assert registered[uid]["registry_message_id"] == asked.message_id
                assert doc.store_till_date.endswith("+03:00")
        finally:
            store.close()
