"""`emd demo --n3-clinics 1`: one clinic through ИПС and one through N3.Health, side by side, as real processes.

The emulator's N3 face sits in front of the same registry as its ИПС face; the N3 clinic's documents are
registered through PixService AddPatient and EmkService AddMedRecord and found by polling the [G] status method
(no callback), the ИПС clinic's through registerDocument and its callback. One document of each clinic is refused by an emulator rule,
so each route produces a dead letter: each must carry its own route's request ids.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from lab.dev.local_pipeline import as_new_document, n3_refusal, sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from producer import cda
from producer.ids import normalize_message_id
from producer.topology import SENT_DLT, SIGNED_DLT
from producer.xmlsafe import parse_xml
from services.messaging import deadletter as dl
from tests.pipeline_lab import pipeline_lab, registered_counts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_CLINIC = 4


def two_clinics() -> tuple[str, str, list[tuple[str, bytes]], dict[str, str]]:
    """(the N3 clinic's OID — the lowest whose every document N3 can carry, as LocalPipeline picks it —, the ИПС
    clinic's — the next one —, their documents interleaved, localUid → OID)."""
    samples, _ = sample_documents(REPOSITORY_SAMPLES, None)
    by_org: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for name, data in samples:
        by_org[cda.extract(parse_xml(data)).organization_oid].append((name, data))
    ready = [o for o in sorted(by_org) if not any(n3_refusal(d) for _, d in by_org[o])]
    n3_org = ready[0]
    ips_org = next(o for o in sorted(by_org) if o > n3_org)
    docs = []
    for i in range(PER_CLINIC):
        for org in (n3_org, ips_org):
            name, data = by_org[org][i % len(by_org[org])]
            docs.append((name, as_new_document(data)))
    owner = {cda.extract(parse_xml(d)).local_uid: cda.extract(parse_xml(d)).organization_oid for _, d in docs}
    return n3_org, ips_org, docs, owner


def test_an_ips_clinic_and_an_n3_clinic_side_by_side_each_dead_letter_with_its_routes_request_ids(tmp_path):
    """Both clinics' documents are acknowledged and registered once (the N3 one's by polling), and the refused
    document of each route is dead-lettered with the request ids that route's service logged for it: ИПС's
    registerDocument MessageIDs, N3's AddMedRecord X-Request-IDs."""
    n3_org, ips_org, docs, owner = two_clinics()
    n3_refused = next(u for u, o in owner.items() if o == n3_org)
    ips_refused = next(u for u, o in owner.items() if o == ips_org)
    with pipeline_lab(tmp_path, docs=docs, n3_clinics=1) as lab:
        assert lab.pipeline.n3_organizations == [n3_org]
        lab.pipeline.add_rules(
            [
                {
                    "fault": "reject",
                    "operation": "n3:AddMedRecord",
                    "local_uid": n3_refused,
                    "code": "PERSON_NOT_FOUND",
                },
                {
                    "fault": "reject",
                    "operation": "registerDocument",
                    "local_uid": ips_refused,
                    "code": "PERSON_NOT_FOUND",
                },
            ]
        )
        uids = lab.publish()
        snap = lab.wait(timeout=300)
        assert (snap.per_stage["acknowledged"], snap.dead_lettered) == (len(uids) - 2, 2)
        accepted = [u for u in uids if u not in (n3_refused, ips_refused)]
        assert registered_counts(lab, accepted) == dict.fromkeys(accepted, 1)
        n3_cases = lab.requests("n3:AddMedRecord")
        assert {r["local_uid"] for r in n3_cases} == {u for u in uids if owner[u] == n3_org}
        assert not any(owner[r["local_uid"]] == n3_org for r in lab.requests("registerDocument"))

        def sent_ids(requests, uid):
            return {normalize_message_id(r["message_id"]) for r in requests if r["local_uid"] == uid}

        letters = {
            r.key.decode(): {k: v.decode() for k, v in r.headers}
            for topic in (SIGNED_DLT, SENT_DLT)
            for r in lab.topic(topic.name, idle=1.0)
        }
        assert set(letters) == {n3_refused, ips_refused}
        n3_ids = set(dl.split_ids(letters[n3_refused][dl.MESSAGE_IDS].encode()))
        ips_ids = set(dl.split_ids(letters[ips_refused][dl.MESSAGE_IDS].encode()))
        assert n3_ids and n3_ids == sent_ids(n3_cases, n3_refused)
        assert ips_ids and ips_ids == sent_ids(lab.requests("registerDocument"), ips_refused)
        assert (
            letters[n3_refused]["emd-dlt-remd-code"]
            == letters[ips_refused]["emd-dlt-remd-code"]
            == "PERSON_NOT_FOUND"
        )
