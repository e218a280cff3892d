"""The callback endpoint over real HTTP and the real broker (the app ``workers/callbacks/worker.py`` builds)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest
from lxml import etree

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
from services.pipeline.callbacks import INCOMING_REFERENCES
from services.pipeline.organizations import load_organizations
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.soap import RegisterResult, RegistryItem
from services.remd.wssec import sign_envelope, verify_envelope
from tests.kafka_helpers import read_all
from workers.callbacks.worker import build

pytestmark = pytest.mark.integration

EXAMPLE = json.loads(Path("docs/schemas/document.signed.schema.json").read_text())["examples"][0]
REPLY_REFS = ("Body", "Timestamp", "MessageID", "Action")
#: our callback address: the development configuration's remd.callback_url, which a callback's wsa:To must name
OURS = "http://127.0.0.1:8086/callback"


def _settings(tmp_path, bootstrap, *, organizations=1):
    """A development configuration as the callback pod holds it: the ИС keys, and no doctor's or organisation's
    key (only the signer's pod mounts those), so every test here also shows the service starts without them."""
    orgs = write_dev_config(tmp_path / "cfg", organizations=organizations)
    raw = json.loads(orgs.read_text())
    for org in raw["organizations"]:
        for entry in [*org["signing"].get("doctors", {}).values(), org["signing"].get("organization") or {}]:
            if "key" in entry:
                (orgs.parent / entry["key"]).unlink(missing_ok=True)
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
    port = free_port()
    app = build(dataclasses.replace(settings, callback_host="127.0.0.1", callback_port=port, metrics_port=0))
    task = asyncio.create_task(app.run(signals=False))
    assert await app.wait_ready(60), app.ready()
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
        app.request_stop()
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
        to=OURS,
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


def test_signed_callback_without_a_status_gets_a_soap_fault_over_http(broker, tmp_path):
    """A correctly signed registerDocumentResult without its <status> is answered over HTTP with a signed SOAP
    Client fault VALIDATION_ERROR (not a bare HTTP 500), and nothing reaches emd.remd.callbacks."""
    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers)
    relates = "6b1f0c1e-0000-4000-8000-00000000dcba"
    unsigned = soap.build_register_result(
        RegisterResult(relates_to_message=relates, status="success", local_uid="no-status"),
        to=OURS,
        key=None,
        certificate=None,
    )
    root = etree.fromstring(unsigned)
    (status,) = [el for el in root.iter() if etree.QName(el).localname == n.STATUS]
    status.getparent().remove(status)
    body = sign_envelope(root, key=key, certificate=cert)
    verify_envelope(
        body, trusted_certificates=[cert], required=INCOMING_REFERENCES
    )  # the attack is well signed

    (response,) = asyncio.run(_post_while_serving(settings, body))

    assert response.status_code == 500
    fault = soap.parse_fault(response.content)
    assert fault.detail_code == "VALIDATION_ERROR" and not fault.server_side
    (org,) = load_organizations(settings.organizations_file, role="callbacks").organizations.values()
    verify_envelope(response.content, trusted_certificates=[org.remd.system.certificate], required=REPLY_REFS)
    assert [
        r for r in read_all(broker.bootstrap_servers, topology.CALLBACKS.name) if r.key == relates.encode()
    ] == []


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
    config = load_organizations(settings.organizations_file, role="callbacks")
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
    store.record_attempt("doc-2", mid, organization=oid2, endpoint="http://ips")
    store.close()
    bodies = [
        soap.build_file_request(local_uid=uid, to=OURS, key=key, certificate=cert)
        for uid in ("doc-1", "doc-2")
    ]
    bodies.append(
        soap.build_register_result(
            RegisterResult(
                relates_to_message=mid, status="success", registry_item=RegistryItem(emdr_id="16.62.6")
            ),
            to=OURS,
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
        to=OURS,
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
        port = free_port()
        app = build(dataclasses.replace(settings, callback_host="127.0.0.1", callback_port=port))
        task = asyncio.create_task(app.run(signals=False))
        assert await app.wait_ready(60), app.ready()
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
            app.request_stop()
            await task

    before, after = asyncio.run(run())
    accepted = ("emd_callbacks_total", (("operation", "registerDocumentResult"), ("outcome", "accepted")))
    forged_total = ("emd_callbacks_total", (("operation", "registerDocumentResult"), ("outcome", "forged")))
    assert accepted in before and forged_total in before  # exist before the first callback
    assert (1, 1) == (after[accepted] - before[accepted], after[forged_total] - before[forged_total])
    assert any(name == "emd_build_info" for name, _ in after)
    assert any(name == "process_cpu_seconds_total" for name, _ in after)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_8_mib_callback_gets_413_after_at_most_the_limit_and_one_byte(monkeypatch, declared):
    """An 8 MiB POST over HTTP is answered 413 (a SOAP fault) with the service having read at most the limit + 1
    bytes of it: with a Content-Length none at all, chunked no more than the limit + 1 (what aiohttp receives and
    discards afterwards, so that the client gets the answer, is not read by the handler)."""
    from aiohttp import streams, web

    from services.pipeline.callback_endpoint import callback_runner
    from services.pipeline.callbacks import CallbackService

    limit = 65536
    ca = DevCA.create("ИПС CA")
    key, cert = ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    published = []

    async def publish(k, v):
        published.append(k)

    async def lookup(uid):
        return None

    service = CallbackService(
        trusted_certificates=[cert],
        key=key,
        certificate=cert,
        publish=publish,
        lookup_file=lookup,
        own_addresses=[OURS],
        max_request_bytes=limit,
    )
    read = {"bytes": 0}
    original = streams.StreamReader.read

    async def counting_read(self, n=-1):
        chunk = await original(self, n)
        read["bytes"] += len(chunk)
        return chunk

    monkeypatch.setattr(streams.StreamReader, "read", counting_read)
    size = 8 * 1024 * 1024

    async def scenario() -> bytes:
        runner, port = callback_runner(service), free_port()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            framing = f"Content-Length: {size}" if declared else "Transfer-Encoding: chunked"
            writer.write(
                f"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n{framing}\r\n\r\n".encode()
            )

            async def send() -> None:
                chunk = b"<" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        writer.write(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    if not declared:
                        writer.write(b"0\r\n\r\n")
                        await writer.drain()
                except (ConnectionError, OSError):
                    pass  # the server closed the connection after its answer: what we want

            sending = asyncio.create_task(send())
            answer = await asyncio.wait_for(reader.read(), 120)  # to the end: the server closes after it
            sending.cancel()
            writer.close()
            return answer
        finally:
            await runner.cleanup()

    answer = asyncio.run(scenario())
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    fault = soap.parse_fault(rest.partition(b"\r\n\r\n")[2])
    assert "over 65536 bytes" in fault.reason and published == []
    assert read["bytes"] <= limit + 1
    if declared:
        assert read["bytes"] == 0


def test_emd_callbacks_answers_then_exits_0_on_sigterm(broker, tmp_path):
    """`emd callbacks` configured by environment answers a callback over HTTP, and on SIGTERM stops serving and
    exits 0 (its App handles the signal: before, SIGTERM killed it with whatever it was doing)."""
    import os
    import signal
    import subprocess
    import sys

    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "EMD_ORGANIZATIONS": str(settings.organizations_file),
        "EMD_DATA_DIR": str(settings.data_dir),
        "EMD_IPS_CERTIFICATES": settings.ips_certificates,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "EMD_METRICS_PORT": "0",
        "EMD_LOG_LEVEL": "warning",
    }
    body = soap.build_register_result(
        RegisterResult(relates_to_message=new_message_id(), status="success", local_uid="sigterm-doc"),
        to=OURS,
        key=key,
        certificate=cert,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "callbacks", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        response = None
        deadline = time.monotonic() + 120
        while response is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/callback",
                    content=body,
                    headers=envelope.http_headers(envelope.version_of(body)),
                    timeout=60,
                )
            except httpx.TransportError:  # not listening yet
                time.sleep(0.2)
        assert response is not None and response.status_code == 200, proc.stderr.read().decode()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read().decode()[-2000:]
