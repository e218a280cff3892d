"""Issue #4, many clinics end to end: one organisation's failure never stalls the other organisations' documents.

Real processes on a broker of their own (``tests/pipeline_lab.py``); one clinic is broken in the organisations
file before the workers start (``pipeline_lab(configure=...)``): its РЭМД endpoint is a port nobody listens on,
or its ИС certificate is one ИПС does not know. Documents of several clinics are published interleaved.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from itertools import zip_longest
from typing import Any

import pytest

from lab.broker import free_port
from lab.dev.local_pipeline import as_new_document, sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from producer import cda
from producer.xmlsafe import parse_xml
from services.messaging import deadletter as dl
from tests.pipeline_lab import Lab, acknowledged_counts, dead_letter_keys, pipeline_lab, registered_counts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKEN_DOCS, HEALTHY_CLINICS, DOCS_PER_HEALTHY = 8, 3, 4


def clinic_documents() -> tuple[str, list[tuple[str, bytes]], dict[str, str]]:
    """(broken clinic's OID, documents of a few clinics interleaved, localUid → OID).

    The clinic with the most samples is the broken one (``BROKEN_DOCS`` documents), the next ones are healthy
    (``DOCS_PER_HEALTHY`` each); few clinics keep the development configuration quick to write.
    """
    samples, _ = sample_documents(REPOSITORY_SAMPLES, None)
    by_org: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for name, data in samples:
        by_org[cda.extract(parse_xml(data)).organization_oid].append((name, data))
    ranked = sorted(by_org, key=lambda o: (-len(by_org[o]), o))
    broken, healthy = ranked[0], ranked[1 : 1 + HEALTHY_CLINICS]
    lanes = [[(n, as_new_document(d)) for n, d in _cycle(by_org[broken], BROKEN_DOCS)]]
    lanes += [[(n, as_new_document(d)) for n, d in _cycle(by_org[o], DOCS_PER_HEALTHY)] for o in healthy]
    docs = [doc for row in zip_longest(*lanes) for doc in row if doc is not None]
    owner = {cda.extract(parse_xml(d)).local_uid: cda.extract(parse_xml(d)).organization_oid for _, d in docs}
    return broken, docs, owner


def _cycle(items: list[Any], count: int) -> list[Any]:
    return [items[n % len(items)] for n in range(count)]


def org_entry(config: dict[str, Any], oid: str) -> dict[str, Any]:
    return next(o for o in config["organizations"] if o["oid"] == oid)


def split(lab: Lab, uids: list[str], owner: dict[str, str], broken: str) -> tuple[list[str], list[str]]:
    assert set(uids) == set(owner), "the producer published other localUids than the documents carry"
    return [u for u in uids if owner[u] == broken], [u for u in uids if owner[u] != broken]


def sender_events(lab: Lab, event: str) -> list[dict[str, Any]]:
    return [e for e in lab.log_events("sender") if e.get("event") == event]


def wait_for_event(lab: Lab, event: str, *, timeout: float = 180.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sender_events(lab, event)
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"the sender never logged {event!r} in {timeout:.0f} s\n{lab.tails()}")


def test_one_clinics_dead_endpoint_opens_its_circuit_only_and_the_other_clinics_are_acknowledged(tmp_path):
    """A clinic whose РЭМД endpoint is down has its circuit opened and its documents held (not dead-lettered),
    every other clinic's document is acknowledged and registered once, and after the endpoint is fixed and the
    sender restarted the held documents go through too."""
    broken, docs, owner = clinic_documents()
    dead_endpoint = f"http://127.0.0.1:{free_port()}/ips"

    def break_endpoint(config: dict[str, Any]) -> None:
        org_entry(config, broken)["remd"]["endpoint"] = dead_endpoint

    with pipeline_lab(tmp_path, docs=docs, configure=break_endpoint) as lab:
        uids = lab.publish()
        broken_uids, healthy_uids = split(lab, uids, owner, broken)
        assert len(broken_uids) == BROKEN_DOCS and len(healthy_uids) == HEALTHY_CLINICS * DOCS_PER_HEALTHY

        lab.wait(healthy_uids, timeout=300)
        opened = wait_for_event(lab, "circuit opened")
        time.sleep(5)  # a few more cool-downs and failed probes: the dead clinic's documents must still wait

        acknowledged = acknowledged_counts(lab)
        assert {u: acknowledged.get(u, 0) for u in healthy_uids} == dict.fromkeys(healthy_uids, 1)
        assert registered_counts(lab, healthy_uids) == dict.fromkeys(healthy_uids, 1)
        assert not dead_letter_keys(lab) & set(uids), "a document was dead-lettered"
        assert all(lab.watcher.stage_of.get(u) == "signed" for u in broken_uids), {
            u: lab.watcher.stage_of.get(u) for u in broken_uids
        }
        assert not [r for r in lab.requests() if r.get("organization") == broken]
        waiting = sender_events(lab, "circuit open: parked") + sender_events(
            lab, "endpoint unavailable, holding the record"
        )
        assert waiting, "the dead clinic's documents were neither held nor parked"
        assert {e["local_uid"] for e in waiting} <= set(broken_uids), (
            "a healthy clinic's document was held up"
        )
        assert {e["endpoint"] for e in sender_events(lab, "circuit opened")} == {dead_endpoint}, opened

        # the endpoint fixed in the organisations file; workers read it at start, so the sender restarts
        orgs_file = lab.pipeline.config_dir / "organizations.json"
        config = json.loads(orgs_file.read_text())
        org_entry(config, broken)["remd"]["endpoint"] = f"{lab.pipeline.emulator_url}/ips"
        orgs_file.write_text(json.dumps(config, ensure_ascii=False, indent=2))
        lab.pipeline.kill("sender")
        lab.pipeline.restart("sender")

        snap = lab.wait(timeout=300)
        assert snap.dead_lettered == 0 and snap.per_stage["acknowledged"] == len(uids)
        assert registered_counts(lab, uids) == dict.fromkeys(uids, 1)
        acknowledged = acknowledged_counts(lab)
        assert set(acknowledged) == set(uids)


def test_one_clinics_rejected_certificate_dead_letters_its_documents_only(tmp_path):
    """A clinic signing with an ИС certificate ИПС does not know gets each document dead-lettered by the sender
    with the category configuration and the AuthorizationFault, the shared endpoint's circuit stays closed, and
    every other clinic's document is acknowledged and registered once."""
    broken, docs, owner = clinic_documents()
    foreign: dict[str, str] = {}

    def foreign_certificate(config: dict[str, Any]) -> None:
        # write_dev_config gave each clinic an ИС key of its own; LocalPipeline made them all share the first
        # one (the only one ИПС knows). The broken clinic goes back to its own key under the same clientEntityId.
        n = [o["oid"] for o in config["organizations"]].index(broken) + 1
        assert n > 1, "the broken clinic must not own the registered ИС key"
        remd = org_entry(config, broken)["remd"]
        remd.update(system_key=f"org{n}-system.key", system_certificate=f"org{n}-system.pem")
        foreign.update(client_entity_id=remd["client_entity_id"])

    with pipeline_lab(tmp_path, docs=docs, configure=foreign_certificate) as lab:
        uids = lab.publish()
        broken_uids, healthy_uids = split(lab, uids, owner, broken)

        snap = lab.wait(timeout=300)
        assert snap.per_stage["acknowledged"] == len(healthy_uids) and snap.dead_lettered == len(broken_uids)

        acknowledged = acknowledged_counts(lab)
        assert {u: acknowledged.get(u, 0) for u in healthy_uids} == dict.fromkeys(healthy_uids, 1)
        assert not set(acknowledged) & set(broken_uids)
        assert registered_counts(lab, uids) == {u: int(owner[u] != broken) for u in uids}

        letters = {
            r.key.decode(): {k: v.decode() for k, v in r.headers}
            for r in lab.topic("emd.document.signed.dlt", idle=1.0)
        }
        assert set(letters) == set(broken_uids)
        assert dead_letter_keys(lab) == set(broken_uids)
        for uid, h in letters.items():
            assert h[dl.STAGE] == "sender" and h[dl.CATEGORY] == "configuration", h
            assert h[dl.REASON] == "SOAP_FAULT" and h[dl.REMD_CODE] == "AuthorizationFault", h
            assert foreign["client_entity_id"] in h[dl.REMD_MESSAGE], h
            assert h[dl.ORGANIZATION] == broken and h[dl.LOCAL_UID] == uid
            assert h[dl.MESSAGE_IDS], h  # the MessageID to give СТП ЕГИСЗ
        faults = [r for r in lab.requests() if "AuthorizationFault" in (r.get("sync_codes") or [])]
        assert len(faults) == len(broken_uids)
        assert not sender_events(lab, "circuit opened"), (
            "an authorisation fault opened the shared endpoint's circuit"
        )
