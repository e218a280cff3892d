"""The callback endpoint over real HTTP and the real broker (workers/status/callbacks_app.py)."""

from __future__ import annotations

import asyncio

import httpx

from services import soap, topology
from services.broker import free_port
from services.config import Settings
from services.devpki import DevCA, SubjectInfo, write_pem
from services.organizations import write_dev_config
from services.soap import RegisterResult, RegistryItem
from services.topology import ensure_topics
from tests.kafka_helpers import read_all
from workers.status.callbacks_app import serve


def _settings(tmp_path, bootstrap):
    orgs = write_dev_config(tmp_path / "cfg")
    ca = DevCA.create("ИПС CA")
    key, cert = ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    write_pem(None, cert, cert_path=tmp_path / "ips.pem")
    s = Settings.from_env(kafka_bootstrap_servers=bootstrap, organizations_file=orgs, data_dir=tmp_path / "data",
                          ips_certificates=str(tmp_path / "ips.pem"), kafka_enable_idempotence=False)
    return s, key, cert


async def _post_while_serving(settings, body):
    port, ready, stop = free_port(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, host="127.0.0.1", port=port, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 60)
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(f"http://127.0.0.1:{port}/callback", content=body,
                                headers={"Content-Type": "text/xml; charset=utf-8"})
    finally:
        stop.set()
        await task


def test_callback_over_http_is_on_the_topic_before_the_ack(broker, tmp_path):
    """A signed callback POSTed to the endpoint is acked (RelatesTo) and is on emd.remd.callbacks, keyed by MessageID."""
    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    settings, key, cert = _settings(tmp_path, broker.bootstrap_servers)
    relates = "6b1f0c1e-0000-4000-8000-00000000abcd"
    body = soap.build_register_result(RegisterResult(
        relates_to_message=relates, status="success", local_uid="http-doc",
        registry_item=RegistryItem(emdr_id="16.62.5")), to="http://mis", key=key, certificate=cert)
    response = asyncio.run(_post_while_serving(settings, body))
    assert response.status_code == 200
    assert soap.parse_callback_ack(response.content).headers.relates_to == \
        soap.parse_register_result(body).headers.message_id
    records = [r for r in read_all(broker.bootstrap_servers, topology.CALLBACKS.name) if r.key == relates.encode()]
    assert len(records) == 1 and records[0].value == body
