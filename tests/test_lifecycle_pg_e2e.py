"""The whole pipeline as real processes with its lifecycle store in PostgreSQL (EMD_LIFECYCLE_STORE)."""

from __future__ import annotations

from collections import Counter

import pytest

from services import lifecycle as lc
from tests.pipeline_lab import pipeline_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pipeline_on_the_postgres_lifecycle_store_registers_every_document_once(tmp_path, postgres_url):
    """With EMD_LIFECYCLE_STORE=postgresql://… every document ends acknowledged once, registered in PostgreSQL, and no process falls back to SQLite."""
    with pipeline_lab(tmp_path, count=6, env={"EMD_LIFECYCLE_STORE": postgres_url}) as lab:
        uids = lab.publish()
        snap = lab.wait(timeout=240)
        assert snap.per_stage["acknowledged"] == 6 and snap.dead_lettered == 0
        registered = Counter(r["local_uid"] for r in lab.registry())
        assert {u: registered[u] for u in uids} == dict.fromkeys(uids, 1)
        emdr_ids = {r["local_uid"]: r["emdr_id"] for r in lab.registry()}
        assert not list(tmp_path.rglob("lifecycle.sqlite3"))
    store = lc.open_store(tmp_path, url=postgres_url)
    try:
        for uid in uids:
            (doc,) = store.documents_of(uid)
            assert doc.state == lc.REGISTERED and doc.emdr_id == emdr_ids[uid]
            assert doc.accepted_message_id in store.message_ids(uid, organization=doc.organization)
            assert store.find_by_emdr_id(doc.emdr_id).local_uid == uid
    finally:
        store.close()
