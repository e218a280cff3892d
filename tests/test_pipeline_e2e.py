"""The whole pipeline as real processes: broker, emulator over HTTP, signer, sender, status, callback service."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.pipeline_lab import pipeline_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_document_is_acknowledged_and_registered_once(tmp_path):
    """On the ok scenario every published document ends acknowledged, and РЭМД registered each exactly once."""
    with pipeline_lab(tmp_path, count=12) as lab:
        uids = lab.publish()
        snap = lab.wait(timeout=240)
        assert snap.per_stage["acknowledged"] == 12 and snap.dead_lettered == 0
        registered = Counter(r["local_uid"] for r in lab.registry())
        assert {u: registered[u] for u in uids} == dict.fromkeys(uids, 1)
        acknowledged = {r.key.decode() for r in lab.topic("emd.document.acknowledged")}
        assert acknowledged == set(uids)
