"""The callback endpoint over real HTTP and the real broker (workers/callbacks/worker.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from lab.broker import free_port
from lab.dev.config import write_dev_config
from lab.dev.pki import DevCA, SubjectInfo, write_pem
from producer import events, topology
from producer.errors import PermanentError
from producer.ids import new_message_id
from producer.topology import ensure_topics
from services import lifecycle
from services.config import Settings
from services.documents.store import by_reference, document_field, mark_signer_store, store_from_settings
from services.pipeline.organizations import load_organizations
from services.remd import envelope, soap
from services.remd.soap import RegisterResult, RegistryItem
from services.remd.wssec import verify_envelope
from tests.kafka_helpers import read_all
from workers.callbacks.worker import serve

pytestmark = pytest.mark.integration

EXAMPLE = json.loads(Path("docs/schemas/document.signed.schema.json").read_text())["examples"][0]
REPLY_REFS = ("Body", "Timestamp", "MessageID", "Action")


def _settings(tmp_path, bootstrap, *, organizations=1):
    orgs = write_dev_config(tmp_path / "cfg", organizations=organizations)
    ca = DevCA.create("ИПС CA")
    key, cert = ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    write_pem(None, cert, cert_path=tmp_path / "ips.pem")
    s = Settings.from_env(
        kafka_bootstrap_servers=bootstrap,
        organizations_file=orgs,
        data_dir=tmp_path / "data",
        ips_certificates=str(tmp_path / "ips.pem"),
        kafka_enable_idempotence=False,
    )
    mark_signer_store(store_from_settings(s))  # as the signer does at start: the service waits for it
    return s, key, cert


async def _post_while_serving(settings, *bodies):
    port, ready, stop = free_port(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, host="127.0.0.1", port=port, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 60)
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            return [
                await c.post(
                    f"http://127.0.0.1:{port}/callback",
                    content=body,
                    headers=envelope.http_headers(envelope.version_of(body)),
                )
                for body in bodies
            ]
    finally:
        stop.set()
        await task


def test_callback_over_http_is_on_the_topic_before_the_ack(broker, tmp_path):
    """A signed callback POSTed to the endpoint is acked (RelatesTo) and is on emd.remd.callbacks, keyed by MessageID."""
    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers)
    relates = "6b1f0c1e-0000-4000-8000-00000000abcd"
    body = soap.build_register_result(
        RegisterResult(
            relates_to_message=relates,
            status="success",
            local_uid="http-doc",
            registry_item=RegistryItem(emdr_id="16.62.5"),
        ),
        to="http://mis",
        key=key,
        certificate=cert,
    )
    (response,) = asyncio.run(_post_while_serving(settings, body))
    assert response.status_code == 200
    assert (
        soap.parse_callback_ack(response.content).headers.relates_to
        == soap.parse_register_result(body).headers.message_id
    )
    records = [
        r for r in read_all(broker.bootstrap_servers, topology.CALLBACKS.name) if r.key == relates.encode()
    ]
    assert len(records) == 1 and records[0].value == body


def _register_document(store, uid: str, organization: str, data: bytes, settings) -> None:
    """As the signer and the sender leave it: the bytes in the claim-check store, the signed event referencing them."""
    doc = by_reference(
        document_field(data, None, inline_limit=len(data)), data, store_from_settings(settings)
    )
    signed = events.encode(
        events.new_event(
            events.SIGNED, dict(EXAMPLE, localUid=uid, organizationOid=organization, document=doc), source="t"
        )
    )
    store.register(uid, organization=organization, kind=EXAMPLE["kind"], signed_event=signed)


def test_each_organisations_replies_are_signed_with_its_own_system_key(broker, tmp_path):
    """With two organisations whose ИС keys differ, getDocumentFile answers and a result ack over HTTP each verify
    with the certificate of the organisation the document belongs to, and not with the other's."""
    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers, organizations=2)
    config = load_organizations(settings.organizations_file)
    (oid1, org1), (oid2, org2) = list(config.organizations.items())
    certs = {oid1: org1.remd.system.certificate, oid2: org2.remd.system.certificate}
    store = lifecycle.open_store(settings.data_dir)
    files = {
        "doc-1": b"<ClinicalDocument>one</ClinicalDocument>",
        "doc-2": b"<ClinicalDocument>two</ClinicalDocument>",
    }
    _register_document(store, "doc-1", oid1, files["doc-1"], settings)
    _register_document(store, "doc-2", oid2, files["doc-2"], settings)
    mid = new_message_id()
    store.record_attempt("doc-2", mid, endpoint="http://ips")
    store.close()
    bodies = [
        soap.build_file_request(local_uid=uid, to="http://mis/callback", key=key, certificate=cert)
        for uid in ("doc-1", "doc-2")
    ]
    bodies.append(
        soap.build_register_result(
            RegisterResult(
                relates_to_message=mid, status="success", registry_item=RegistryItem(emdr_id="16.62.6")
            ),
            to="http://mis",
            key=key,
            certificate=cert,
        )
    )
    r1, r2, r3 = asyncio.run(_post_while_serving(settings, *bodies))
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    for response, own, other in ((r1, oid1, oid2), (r2, oid2, oid1), (r3, oid2, oid1)):
        verify_envelope(response.content, trusted_certificates=[certs[own]], required=REPLY_REFS)
        with pytest.raises(PermanentError):
            verify_envelope(response.content, trusted_certificates=[certs[other]], required=REPLY_REFS)
    assert soap.parse_file_response(r1.content).data == files["doc-1"]
    assert soap.parse_file_response(r2.content).data == files["doc-2"]


def test_the_callback_service_serves_its_metrics(broker, tmp_path):
    """`/metrics` on the metrics port counts an accepted callback and a forged one, pre-initialised series included."""
    from prometheus_client.parser import text_string_to_metric_families

    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers)
    settings = dataclasses.replace(settings, metrics_port=free_port())
    good = soap.build_register_result(
        RegisterResult(
            relates_to_message=new_message_id(),
            status="success",
            local_uid="m-doc",
            registry_item=RegistryItem(emdr_id="16.62.7"),
        ),
        to="http://mis",
        key=key,
        certificate=cert,
    )
    forged = good.replace(b"16.62.7", b"16.62.8")  # the signed body changed after signing

    def scrape() -> dict[tuple[str, tuple], float]:
        text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    async def run() -> tuple[dict, dict]:
        port, ready, stop = free_port(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(settings, host="127.0.0.1", port=port, ready=ready, stop=stop))
        await asyncio.wait_for(ready.wait(), 60)
        try:
            before = await asyncio.to_thread(scrape)
            async with httpx.AsyncClient(timeout=60) as c:
                for body in (good, forged):
                    await c.post(
                        f"http://127.0.0.1:{port}/callback",
                        content=body,
                        headers=envelope.http_headers(envelope.version_of(body)),
                    )
            return before, await asyncio.to_thread(scrape)
        finally:
            stop.set()
            await task

    before, after = asyncio.run(run())
    accepted = ("emd_callbacks_total", (("operation", "registerDocumentResult"), ("outcome", "accepted")))
    forged_total = ("emd_callbacks_total", (("operation", "registerDocumentResult"), ("outcome", "forged")))
    assert accepted in before and forged_total in before  # exist before the first callback
    assert (1, 1) == (after[accepted] - before[accepted], after[forged_total] - before[forged_total])
    assert any(name == "emd_build_info" for name, _ in after)
    assert any(name == "process_cpu_seconds_total" for name, _ in after)
