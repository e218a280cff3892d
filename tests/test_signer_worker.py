"""The signer stage on the real local broker: every accepted Ministry sample signed, every defect dead-lettered.

One run (module fixture): the lab configuration (``tests/signing_lab.py``), the 24 samples ``emd publish``
accepts plus one document per defect published to the development МИС's ``emd.document.created.local-mis`` (the
hostile XML ones by a raw producer, as a buggy МИС in another language would send them), and documents a МИС
publishes outside its grant, the app built by ``emd worker signer``'s ``build`` running in-process until every
record has an outcome. Records are told apart by trace id, so the
tests hold on a broker other tests also write to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from lab.dev.config import DEV_MIS_ID
from producer import events
from producer.client import DocumentPublisher
from producer.topology import CREATED_DLT, SIGNED, created_topic, ensure_topics, status_topic
from services.config import Settings
from services.documents.store import FilesystemStore, document_bytes
from services.messaging import deadletter as dl
from tests import openssl_gost as ossl
from tests import signing_lab as lab
from tests.kafka_helpers import read_all
from workers.signer.worker import build

pytestmark = pytest.mark.integration

TIMEOUT = 300.0
CREATED = created_topic(DEV_MIS_ID)
STATUS = status_topic(DEV_MIS_ID)
OTHER_STATUS = status_topic(lab.OTHER_MIS)


class _Published:
    def __init__(
        self,
        name: str,
        trace: str,
        uid: str,
        partition: int,
        offset: int,
        document: bytes,
        reason: str | None = None,
    ) -> None:
        self.name, self.trace, self.uid, self.partition, self.offset = name, trace, uid, partition, offset
        self.document, self.reason = document, reason


def _run_app(app) -> tuple[threading.Thread, list]:
    holder: list = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        holder.append(loop)
        try:
            loop.run_until_complete(app.run(signals=False))
        except BaseException as exc:  # surfaced by the fixture
            holder.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="signer-stage", daemon=True)
    thread.start()
    return thread, holder


def _by_trace(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        trace = events.read_headers(r.headers).get(events.HEADER_TRACE_ID)
        out.setdefault(trace, []).append(r)
    return out


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    bootstrap = broker.bootstrap_servers
    ensure_topics(bootstrap, partitions=3, mis_ids=(DEV_MIS_ID, lab.OTHER_MIS))
    root = tmp_path_factory.mktemp("signer")
    built = lab.build_lab(root / "config")
    store = FilesystemStore(root / "data" / "documents")
    tag = uuid.uuid4().hex[:8]
    good: list[_Published] = []
    bad: list[_Published] = []
    refused: list[_Published] = []  # outside the publishing МИС's grant
    breaches: list[_Published] = []  # the contract at the door broken (producer.contract)

    with DocumentPublisher(
        bootstrap, mis_id=DEV_MIS_ID, store=store, system_id=lab.SYSTEM_ID, timeout=30
    ) as pub:

        def publish(name: str, document: bytes, reason: str | None = None, meta: dict | None = None) -> None:
            trace = events.new_trace_id()
            done = pub.publish(document, trace_id=trace, meta=meta)
            (bad if reason else good).append(
                _Published(name, trace, done.local_uid, done.partition, done.offset, document, reason)
            )

        for path in lab.accepted_samples():
            publish(path.name, path.read_bytes())
        for defect, (oid, reason) in sorted(lab.DEFECT_ORGS.items()):
            publish(defect, lab.variant(oid, f"{defect}-{tag}"), reason)
        mis_ok = lab.variant(lab.MIS_OID, f"mis-ok-{tag}")
        publish(
            "mis_ok", mis_ok, meta={"signatures": {lab.AUTHOR: lab.mis_signature(built.mis_doctor, mis_ok)}}
        )
        doc = lab.variant(lab.MIS_OID, f"mis-other-bytes-{tag}")
        publish(
            "signature_over_other_bytes",
            doc,
            "DIGEST_MISMATCH",
            meta={"signatures": {lab.AUTHOR: lab.mis_signature(built.mis_doctor, doc + b"\n")}},
        )
        doc = lab.variant(lab.MIS_OID, f"mis-other-person-{tag}")
        publish(
            "doctor_not_the_author",
            doc,
            "SIGNER_SNILS_MISMATCH",
            meta={"signatures": {lab.AUTHOR: lab.mis_signature(built.other_doctor, doc)}},
        )
        publish("xsd_invalid", lab.xsd_invalid(lab.variant(uid=f"xsd-{tag}")), "XSD_INVALID")
        publish("too_large", lab.too_large(lab.variant(uid=f"large-{tag}")), "DOCUMENT_TOO_LARGE")

    # the attack: a МИС publishing for an organisation outside its grant, or as a systemId outside it
    for name, mis_id, system_id, oid in (
        ("other_clinic", lab.OTHER_MIS, lab.OTHER_SYSTEM_ID, lab.GOOD_OID),
        ("other_system_id", DEV_MIS_ID, "not-granted-01", lab.GOOD_OID),
    ):
        with DocumentPublisher(bootstrap, mis_id=mis_id, store=store, system_id=system_id) as pub:
            trace = events.new_trace_id()
            document = lab.variant(oid, f"{name}-{tag}")
            done = pub.publish(document, trace_id=trace)
            refused.append(
                _Published(name, trace, done.local_uid, done.partition, done.offset, document, mis_id)
            )

    # hostile XML: `emd publish` refuses it, so a raw producer sends the event a buggy МИС would
    raw = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for name, make, reason in (
            ("xxe", lab.xxe, "XXE_FORBIDDEN"),
            ("billion_laughs", lab.billion_laughs, "ENTITY_EXPANSION_FORBIDDEN"),
        ):
            base = lab.variant(uid=f"{name}-{tag}")
            event = lab.raw_event(base, make(base))
            meta = raw.send(
                CREATED.name,
                key=event["data"]["localUid"].encode(),
                value=events.encode(event),
                headers=events.headers_for(event),
            ).get(timeout=30)
            bad.append(
                _Published(
                    name,
                    event["traceId"],
                    event["data"]["localUid"],
                    meta.partition,
                    meta.offset,
                    base,
                    reason,
                )
            )
        # the contract at the door: a wrong key, a missing header, a kind not on its date, a position without
        # its version, each as a МИС in another language could send it
        for breach in lab.contract_breaches(tag):
            meta = raw.send(
                CREATED.name,
                key=breach.key.encode(),
                value=events.encode(breach.event),
                headers=[(k, v.encode()) for k, v in breach.headers.items()],
            ).get(timeout=30)
            breaches.append(
                _Published(
                    breach.name,
                    breach.event["traceId"],
                    breach.event["data"]["localUid"],
                    meta.partition,
                    meta.offset,
                    b"",
                    f"{breach.reason} {breach.field}",
                )
            )
    finally:
        raw.close()

    settings = Settings.from_env(
        {},
        kafka_bootstrap_servers=bootstrap,
        organizations_file=built.config_path,
        data_dir=root / "data",
        worker_concurrency=4,
        kafka_enable_idempotence=False,
        metrics_port=0,
    )  # Tansu refuses aiokafka's InitProducerId
    app = build(settings)
    thread, holder = _run_app(app)
    wanted_signed = {p.trace for p in good}
    wanted_dlt = {p.trace for p in bad + refused + breaches}
    deadline = time.monotonic() + TIMEOUT
    signed = dead = {}
    try:
        while time.monotonic() < deadline:
            signed = _by_trace(read_all(bootstrap, SIGNED.name, idle=0.5))
            dead = _by_trace(read_all(bootstrap, CREATED_DLT.name, idle=0.5))
            if wanted_signed <= set(signed) and wanted_dlt <= set(dead):
                break
            assert thread.is_alive(), f"the stage stopped: {holder[1:]}"
            time.sleep(1.0)
    finally:
        if holder:
            holder[0].call_soon_threadsafe(app.request_stop)
        thread.join(timeout=60)
    status = _by_trace(read_all(bootstrap, STATUS.name, idle=0.5))
    other_status = _by_trace(read_all(bootstrap, OTHER_STATUS.name, idle=0.5))
    return {
        "good": good,
        "bad": bad,
        "refused": refused,
        "breaches": breaches,
        "other_status": other_status,
        "signed": signed,
        "dead": dead,
        "status": status,
        "root": root,
        "store": store,
    }


def test_every_accepted_sample_is_signed_and_openssl_verifies_every_signature(run):
    """Each of the 24 accepted samples (and the good mis-mode document) reaches emd.document.signed,
    keeps its trace id and data, carries the time the МИС published it, and OpenSSL verifies every doctor and organisation signature over its bytes."""
    assert len(run["good"]) == 25
    tmp: Path = run["root"]
    for p in run["good"]:
        records = run["signed"].get(p.trace)
        assert records, (
            f"{p.name} was not signed (dead letter: {[dl.describe(dict(r.headers)) for r in run['dead'].get(p.trace, [])]})"
        )
        event = events.decode(records[0].value, expected_type=events.SIGNED)
        assert records[0].key.decode() == p.uid == event["data"]["localUid"]
        assert event["traceId"] == p.trace and p.trace not in run["dead"]
        assert event["data"]["publishedAt"] <= event["time"]  # the created event's time, carried on
        doc = tmp / "doc.xml"
        doc.write_bytes(p.document)
        sigs = event["data"]["signatures"]
        cms = [s["cms"] for s in sigs["personal"]] + (
            [sigs["organization"]["cms"]] if sigs["organization"] else []
        )
        assert len(sigs["personal"]) == len({s["snils"] for s in event["data"]["signers"]})
        for n, value in enumerate(cms):
            (tmp / "sig.der").write_bytes(base64.b64decode(value))
            assert ossl.cms_verify(tmp / "sig.der", doc), f"{p.name}: signature {n} does not verify"


def test_the_signed_event_carries_the_document_by_reference_to_its_exact_bytes(run):
    """After created the document travels by reference: each signed event's document has no inline bytes, keeps
    sha256 and size, and its ref reads back, from the store the producer and the signer share, the bytes signed."""
    for p in run["good"]:
        field = events.decode(run["signed"][p.trace][0].value, expected_type=events.SIGNED)["data"][
            "document"
        ]
        assert "inline" not in field and field["ref"].startswith("file://"), p.name
        assert (field["sha256"], field["size"]) == (hashlib.sha256(p.document).hexdigest(), len(p.document))
        assert document_bytes(field, run["store"]) == p.document, p.name


def test_status_signed_is_published_for_the_mis(run):
    """Every signed document also has an emd.document.status "signed" record with the same trace id."""
    for p in run["good"]:
        records = run["status"].get(p.trace)
        assert records, p.name
        event = events.decode(records[0].value, expected_type=events.STATUS)
        assert event["data"]["status"] == "signed" and event["data"]["localUid"] == p.uid


def test_each_defect_is_dead_lettered_with_its_own_reason(run):
    """Thirteen defects, thirteen distinct reasons; the dead letter names localUid, kind, organisation and
    the original topic/partition/offset, and nothing of them reaches emd.document.signed."""
    reasons = [p.reason for p in run["bad"]]
    assert len(reasons) == 13 and len(set(reasons)) == 13
    for p in run["bad"]:
        records = run["dead"].get(p.trace)
        assert records, f"{p.name}: no dead letter"
        headers = {k: v.decode() for k, v in records[0].headers}
        assert headers[dl.REASON] == p.reason, (p.name, headers.get(dl.EXCEPTION_MESSAGE))
        assert headers[dl.LOCAL_UID] == p.uid and records[0].key.decode() == p.uid
        assert headers[dl.ORIGINAL_TOPIC] == CREATED.name
        assert (int(headers[dl.ORIGINAL_PARTITION]), int(headers[dl.ORIGINAL_OFFSET])) == (
            p.partition,
            p.offset,
        )
        assert headers[dl.STAGE] == "signer" and headers[dl.KIND] and headers[dl.ORGANIZATION]
        assert headers[events.HEADER_TRACE_ID] == p.trace  # the original headers are kept
        assert p.trace not in run["signed"]


def test_each_breach_of_the_contract_at_the_door_is_dead_lettered_with_its_reason(run):
    """A record keyed other than by its localUid, one missing a required header, a kind not registrable on the
    document's creation date, and a signer with a position code but no codeSystemVersion are each dead-lettered by
    the signer stage with their own reason and the field named, nothing signed, and the МИС is told `failed`."""
    assert [p.name for p in run["breaches"]] == [
        "wrong_key",
        "missing_header",
        "kind_not_on_date",
        "position_without_version",
    ]
    for p in run["breaches"]:
        reason, field = p.reason.split(" ")
        (record,) = run["dead"][p.trace]
        headers = {k: v.decode() for k, v in record.headers}
        assert headers[dl.REASON] == reason, (p.name, headers.get(dl.EXCEPTION_MESSAGE))
        assert field.split(".")[-1] in headers[dl.EXCEPTION_MESSAGE], p.name
        assert headers[dl.CATEGORY] == "data" and p.trace not in run["signed"]
        (status,) = run["status"][p.trace]
        told = events.decode(status.value, expected_type=events.STATUS)["data"]
        assert (told["status"], told["reason"], told["localUid"]) == ("failed", reason, p.uid)


def test_emd_worker_signer_subprocess_signs_and_stops_cleanly(run, broker):
    """`emd worker signer` configured only by environment signs a new document and exits 0 on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    root: Path = run["root"]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "EMD_ORGANIZATIONS": str(root / "config" / "organizations.json"),
        "EMD_DATA_DIR": str(root / "data"),
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "EMD_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "signer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        trace = events.new_trace_id()
        document = lab.variant(uid=f"subprocess-{uuid.uuid4().hex[:8]}")
        with DocumentPublisher(broker.bootstrap_servers, mis_id=DEV_MIS_ID, system_id=lab.SYSTEM_ID) as pub:
            pub.publish(document, trace_id=trace)
        deadline = time.monotonic() + 120
        found = []
        while not found and time.monotonic() < deadline and proc.poll() is None:
            found = _by_trace(read_all(broker.bootstrap_servers, SIGNED.name, idle=0.5)).get(trace, [])
            time.sleep(0.5)
        assert found, (
            f"not signed; worker stderr: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}"
        )
        event = events.decode(found[0].value, expected_type=events.SIGNED)
        assert event["data"]["signatures"]["organization"]["mchd"] is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0


def test_a_mis_publishing_outside_its_grant_is_dead_lettered_and_nothing_is_signed(run):
    """The attack: a МИС publishing another clinic's document (or under a systemId it was not granted) is
    dead-lettered ORGANIZATION_NOT_ALLOWED (category security) from its own topic, nothing is signed, and only
    that МИС hears of it, on its own status topic."""
    assert [p.name for p in run["refused"]] == ["other_clinic", "other_system_id"]
    for p in run["refused"]:
        mis_id = p.reason  # the МИС it was published as
        (record,) = run["dead"][p.trace]
        headers = {k: v.decode() for k, v in record.headers}
        assert (headers[dl.REASON], headers[dl.CATEGORY]) == ("ORGANIZATION_NOT_ALLOWED", "security"), p.name
        assert headers[dl.ORIGINAL_TOPIC] == created_topic(mis_id).name
        assert p.trace not in run["signed"]
        told = run["other_status"] if mis_id == lab.OTHER_MIS else run["status"]
        (status,) = told[p.trace]
        data = events.decode(status.value, expected_type=events.STATUS)["data"]
        assert (data["status"], data["reason"], data["misId"]) == (
            "failed",
            "ORGANIZATION_NOT_ALLOWED",
            mis_id,
        )
    assert run["refused"][0].trace not in run["status"]  # the development МИС hears nothing of the other's
