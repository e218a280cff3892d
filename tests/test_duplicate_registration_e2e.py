"""A resend of a document ИПС already took (answer lost, first callback lost) ends acknowledged, not rejected: the
status worker reconciles NOT_UNIQUE_PROVIDED_ID by asking the emulator's registry. Real processes, real broker."""

from __future__ import annotations

import pytest

from producer import cda
from producer.xmlsafe import parse_xml
from tests.pipeline_lab import (
    acknowledged_emdr_ids,
    dead_letter_keys,
    pipeline_lab,
    registered_counts,
    settle,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_lost_answer_and_lost_callback_then_not_unique_is_acknowledged(tmp_path):
    """The first attempt is registered but its answer (connection reset) and callback are lost; the resend gets
    NOT_UNIQUE_PROVIDED_ID: the document is acknowledged with the first registration's emdrId, never dead-lettered."""
    with pipeline_lab(tmp_path, count=3) as lab:
        uid = cda.extract(parse_xml(lab.documents[0][1])).local_uid
        lab.pipeline.add_rules(
            [
                {
                    "fault": "reset",
                    "operation": "registerDocument",
                    "local_uid": uid,
                    "nth": 1,
                    "process": True,
                },
                {"fault": "callback_lost", "operation": "registerDocument", "local_uid": uid, "nth": 1},
            ]
        )
        uids = lab.publish()
        assert uid in uids
        lab.wait(timeout=300)
        settle(lab)

        attempts = [r for r in lab.requests() if r.get("local_uid") == uid]
        assert len(attempts) >= 2, attempts  # the reset made the sender resend
        not_unique = [r for r in attempts if "NOT_UNIQUE_PROVIDED_ID" in (r.get("codes") or [])]
        assert not_unique, attempts  # РЭМД saw the resend as a duplicate
        assert dead_letter_keys(lab) == set()
        assert registered_counts(lab, uids) == dict.fromkeys(uids, 1)
        registry_emdr = {r["emdr_id"] for r in lab.registry() if r["local_uid"] == uid}
        assert acknowledged_emdr_ids(lab)[uid] == registry_emdr
        assert any(
            e.get("event") == "registered (duplicate registration reconciled)" and e.get("local_uid") == uid
            for e in lab.log_events("status")
        )
