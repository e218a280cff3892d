"""The callback service stops as a pod does: SIGTERM mid-request, the request completes, the process exits in its grace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.broker import free_port
from lab.dev.config import write_dev_config
from lab.dev.pki import DevCA, SubjectInfo, write_pem
from producer import topology
from producer.topology import ensure_topics
from services.config import Settings
from services.documents.store import mark_signer_store, store_from_settings
from services.remd import envelope, soap
from services.remd.soap import RegisterResult, RegistryItem
from tests.kafka_helpers import read_all, wait_until

pytestmark = pytest.mark.integration

GRACE = 20
#: the address callbacks are sent to: the service refuses a wsa:To that is not one of its own
ADDRESS = "http://callbacks.test/callback"


@pytest.fixture
def callbacks(broker, tmp_path):
    """`emd callbacks` as its own process, configured as in a pod (EMD_SHUTDOWN_GRACE_SECONDS), and the ИПС key
    its callbacks are signed with: (process, SOAP port, ИПС key, ИПС certificate, log file)."""
    ensure_topics(broker.bootstrap_servers, topics=(topology.CALLBACKS,))
    organizations = write_dev_config(tmp_path / "cfg")
    ca = DevCA.create("ИПС CA")
    key, cert = ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    write_pem(None, cert, cert_path=tmp_path / "ips.pem")
    data = tmp_path / "data"
    mark_signer_store(store_from_settings(Settings.from_env(data_dir=data)))  # as the signer leaves it
    port, log = free_port(), tmp_path / "callbacks.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "EMD_ORGANIZATIONS": str(organizations),
        "EMD_DATA_DIR": str(data),
        "EMD_IPS_CERTIFICATES": str(tmp_path / "ips.pem"),
        "EMD_METRICS_PORT": str(free_port()),
        "EMD_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "EMD_CALLBACK_ADDRESSES": ADDRESS,
        "EMD_LOG_FORMAT": "json",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "callbacks", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: _accepts(port), timeout=120), log.read_text()[-3000:]
        yield proc, port, key, cert, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _callback(key, cert, relates: str) -> bytes:
    return soap.build_register_result(
        RegisterResult(
            relates_to_message=relates,
            status="success",
            local_uid="shutdown-doc",
            registry_item=RegistryItem(emdr_id="16.62.9"),
        ),
        to=ADDRESS,
        key=key,
        certificate=cert,
    )


def _start_request(port: int, body: bytes, sent: int) -> socket.socket:
    """A POST whose headers and first ``sent`` bytes are on the wire, held open until the server said
    `100 Continue`: from then on the request is in the server's hands, mid-flight."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    headers = {**envelope.http_headers(envelope.version_of(body)), "Content-Length": str(len(body))}
    head = "POST /callback HTTP/1.1\r\nHost: callbacks\r\nExpect: 100-continue\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    conn.sendall(head.encode() + b"\r\n")
    assert conn.recv(64).startswith(b"HTTP/1.1 100")
    conn.sendall(body[:sent])
    return conn


def _response(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_mid_request_lets_the_request_complete_then_the_process_exits(broker, callbacks):
    """SIGTERM while a callback's body is still arriving: the endpoint stops taking connections, the callback
    is completed (acked and on the topic) and the process exits 0 within its grace period."""
    proc, port, key, cert, log = callbacks
    relates = "6b1f0c1e-0000-4000-8000-0000000051e7"
    body = _callback(key, cert, relates)
    conn = _start_request(port, body, len(body) // 2)

    proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: not _accepts(port), timeout=30), "still accepting after SIGTERM"
    conn.sendall(body[len(body) // 2 :])
    answer = _response(conn)
    conn.close()

    head, _, reply = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    assert (
        soap.parse_callback_ack(reply).headers.relates_to
        == soap.parse_register_result(body).headers.message_id
    )
    assert 0 == proc.wait(GRACE), Path(log).read_text()[-2000:]
    records = [
        r for r in read_all(broker.bootstrap_servers, topology.CALLBACKS.name) if r.key == relates.encode()
    ]
    assert [body] == [r.value for r in records]


def test_a_request_that_never_finishes_does_not_hold_the_process_past_its_grace(callbacks):
    """A client that stops sending mid-body is cut off once the grace period has passed: the process still exits 0
    (Kubernetes' SIGKILL never has to come)."""
    proc, port, key, cert, log = callbacks
    body = _callback(key, cert, "6b1f0c1e-0000-4000-8000-0000000051e8")
    conn = _start_request(port, body, 100)
    proc.send_signal(signal.SIGTERM)
    try:
        assert 0 == proc.wait(GRACE + 15), Path(log).read_text()[-2000:]
    finally:
        conn.close()
    assert any('"drained"' in line for line in Path(log).read_text().splitlines())
