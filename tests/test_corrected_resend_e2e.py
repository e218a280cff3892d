"""A document refused, corrected, and sent again under its localUid, through the whole pipeline and the emulator.

РЭМД registers nothing it refuses and refuses only a localUid it has registered (NOT_UNIQUE_PROVIDED_ID): a
document it refused, in its synchronous answer or in the callback, may come back corrected under the same localUid
(docs/dead-letters.md, "A corrected document"). The sender then takes the corrected content, and the callback
service serves its bytes to РЭМД's file request, so the emulator registers exactly what was corrected.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest

from lab.dev.local_pipeline import as_new_document
from producer import events
from producer.topology import SENT_DLT, SIGNED_DLT
from services.messaging import deadletter as dl
from tests.pipeline_lab import STATUS_TOPIC, documents, pipeline_lab

SET_ID = b'<setId root="'


def _corrected(document: bytes) -> bytes:
    """The same document with another document number (setId/@extension): other bytes, as a МИС's correction."""
    start = document.index(b'extension="', document.index(SET_ID)) + len(b'extension="')
    end = document.index(b'"', start)
    return document[:start] + b"corrected-" + document[start:end] + document[end:]


def _statuses(lab, uid: str) -> list[str]:
    return [
        events.decode(r.value, expected_type=events.STATUS)["data"]["status"]
        for r in lab.topic(STATUS_TOPIC, idle=1.0)
        if r.key and r.key.decode() == uid
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_a_refused_document_once_corrected_is_registered_under_its_local_uid(tmp_path):
    """One document refused in РЭМД's synchronous answer and one refused in its callback are each dead-lettered
    and told `rejected`; published again, corrected, under the same localUids, both are registered, with the
    corrected bytes, once each."""
    base = documents(2)
    sync_uid, callback_uid = uuid.uuid4().hex[:20], uuid.uuid4().hex[:20]
    first = [
        (name, as_new_document(data, local_uid=uid))
        for (name, data), uid in zip(base, (sync_uid, callback_uid), strict=True)
    ]
    with pipeline_lab(tmp_path, docs=first) as lab:
        lab.pipeline.add_rules(
            [
                {"fault": "refuse", "local_uid": sync_uid, "code": "PATIENT_MPI_MISMATCH", "times": 1},
                {"fault": "reject", "local_uid": callback_uid, "code": "PERSON_NOT_FOUND", "times": 1},
            ]
        )
        lab.publish()
        lab.wait(timeout=300)
        dead = {t: {r.key.decode() for r in lab.topic(t.name, idle=1.0)} for t in (SIGNED_DLT, SENT_DLT)}
        assert (dead[SIGNED_DLT], dead[SENT_DLT]) == ({sync_uid}, {callback_uid}), lab.tails()
        assert lab.registry() == []

        corrected = [(name, _corrected(data)) for name, data in first]
        lab.publish(corrected)
        deadline = time.monotonic() + 300
        registered: dict[str, dict] = {}
        while time.monotonic() < deadline and len(registered) < 2:
            registered = {r["local_uid"]: r for r in lab.registry()}
            time.sleep(1.0)
        assert set(registered) == {sync_uid, callback_uid}, lab.tails()
        for (_, data), uid in zip(corrected, (sync_uid, callback_uid), strict=True):
            assert registered[uid]["digest"] == hashlib.sha256(data).hexdigest(), uid
        assert len(lab.registry()) == 2  # once each
        for uid in (sync_uid, callback_uid):
            deadline = time.monotonic() + 120
            while "registered" not in _statuses(lab, uid) and time.monotonic() < deadline:
                time.sleep(1.0)
            told = _statuses(lab, uid)
            assert "rejected" in told and told[-1] == "registered", (uid, told)
        # the dead letters of the first attempts stay, with their MessageIDs, for support
        for record in lab.topic(SIGNED_DLT.name) + lab.topic(SENT_DLT.name):
            assert dl.split_ids(dict((k, v.decode()) for k, v in record.headers)[dl.MESSAGE_IDS])
