"""`emd demo --scenario ips-variants --documents 200`: the whole pipeline against ИПС's real message shapes.

The same children ``emd demo`` starts (``tests/pipeline_lab.py``), on the ``ips-variants`` emulator scenario:
every registration's getDocumentFile and registerDocumentResult come in another shape (SOAP 1.1/1.2,
unprefixed WS-Addressing, both anonymous URIs, four MessageID spellings, kind forms, registrationDate(Time),
warnings), and each registered document is asked for again later by its emdrId. 200 documents is the
acceptance figure; nothing else is added (the ok scenario's timings, no faults), so it costs what 200
documents cost.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from lab.emulator.variants import shape_for
from producer import events
from tests.pipeline_lab import (
    STATUS_TOPIC,
    acknowledged_counts,
    dead_letter_keys,
    pipeline_lab,
    registered_counts,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCUMENTS = 200


def test_ips_variants_200_documents_acknowledged_none_lost_none_registered_twice(tmp_path):
    """200 documents through every ИПС message shape end acknowledged once each, none lost or dead-lettered, each
    registered exactly once; every later file request by emdrId got back exactly the registered bytes, and the
    registrations РЭМД warned about reached the МИС with their warnings."""
    with pipeline_lab(tmp_path, count=DOCUMENTS, scenario="ips-variants") as lab:
        uids = lab.publish()
        snap = lab.wait(timeout=400)
        assert (snap.per_stage["acknowledged"], snap.dead_lettered) == (DOCUMENTS, 0)
        assert dead_letter_keys(lab) == set()
        assert registered_counts(lab, uids) == dict.fromkeys(uids, 1)
        assert set(acknowledged_counts(lab)) == set(uids)

        deadline = time.monotonic() + 120
        while any(r["later_pull"] == "pending" for r in lab.requests()) and time.monotonic() < deadline:
            time.sleep(1.0)
        pulls = [r["later_pull"] for r in lab.requests()]
        assert pulls == ["ok"] * DOCUMENTS, Counter(pulls)  # e.g. {'ok': 190, 'pending': 10}

        warned = {r["local_uid"] for r in lab.requests() if shape_for(r["seq"]).warnings}
        statuses = [events.decode(r.value, events.STATUS)["data"] for r in lab.topic(STATUS_TOPIC)]
        with_warnings = {s["localUid"] for s in statuses if s["status"] == "registered" and s.get("warnings")}
        assert warned and with_warnings == warned
