"""The callback protocol (services.callbacks) without HTTP: verification, persistence before ack, files."""

from __future__ import annotations

import asyncio

import pytest

from services import remd_names as n
from services import soap
from services.callbacks import CallbackService
from services.devpki import DevCA, SubjectInfo
from services.soap import RegisterResult, RegistryItem
from services.wssec import verify_envelope

REPLY_REFS = ("Body", "Timestamp", "MessageID", "Action")


@pytest.fixture(scope="module")
def pki():
    ca = DevCA.create("callbacks test CA")
    return {"ips": ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ")),
            "mis": ca.issue(subject=SubjectInfo(family="", common_name="МИС", org="Клиника")),
            "rogue": ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))}


class Harness:
    def __init__(self, pki, *, broker_down: bool = False, files: dict | None = None):
        self.published: list[tuple[str, bytes]] = []
        self.broker_down = broker_down
        self.files = files or {}

        async def publish(key, value):
            if self.broker_down:
                raise ConnectionError("broker unreachable")
            self.published.append((key, value))

        async def lookup(local_uid):
            return self.files.get(local_uid)

        self.service = CallbackService(trusted_certificates=[pki["ips"][1]], key=pki["mis"][0],
                                       certificate=pki["mis"][1], publish=publish, lookup_file=lookup)

    def handle(self, body):
        return asyncio.run(self.service.handle(body))


def result_body(pki, signer="ips", *, relates="URN:UUID:5F0C1E2A-0000-4000-8000-000000000001", status="success"):
    key, cert = pki[signer]
    item = RegistryItem(emdr_id="16.62.1", registration_date_time="2026-01-01T10:00:00+03:00") \
        if status == "success" else None
    return soap.build_register_result(RegisterResult(relates_to_message=relates, status=status, local_uid="d-1",
                                                      registry_item=item),
                                       to="http://mis/cb", key=key, certificate=cert)


def test_result_is_persisted_then_acked_with_relates_to(pki):
    """A signed callback is published under the normalised relatesToMessage, then acked, signed, RelatesTo = its id."""
    h = Harness(pki)
    body = result_body(pki)
    reply = h.handle(body)
    assert reply.status == 200 and reply.outcome == "accepted"
    assert h.published == [("5f0c1e2a-0000-4000-8000-000000000001", body)]
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
    ack = soap.parse_callback_ack(reply.body)
    assert ack.headers.relates_to == soap.parse_register_result(body).headers.message_id


@pytest.mark.parametrize("signer", ["rogue", None])
def test_forged_or_unsigned_callback_is_a_fault_and_not_published(pki, signer):
    """A callback signed by an unpinned certificate, or unsigned, gets a Client fault and is never published."""
    h = Harness(pki)
    if signer is None:
        body = soap.build_register_result(RegisterResult(relates_to_message="m", status="success"),
                                          to="x", key=None, certificate=None)
    else:
        body = result_body(pki, signer)
    reply = h.handle(body)
    assert reply.status == 500 and reply.outcome == "forged"
    assert soap.parse_fault(reply.body).ips_fault == "AuthorizationFault"
    assert h.published == []


def test_tampered_callback_is_refused(pki):
    """Changing the status of a signed callback breaks its digest: refused, nothing published."""
    h = Harness(pki)
    body = result_body(pki, status="error").replace(b">error<", b">success<")
    reply = h.handle(body)
    assert reply.outcome == "forged" and h.published == []


def test_broker_down_answers_server_fault(pki):
    """When the broker cannot take the callback, ИПС gets a Server fault (so it retries), not an ack."""
    h = Harness(pki, broker_down=True)
    reply = h.handle(result_body(pki))
    assert reply.status == 500 and reply.outcome == "broker_unavailable"
    fault = soap.parse_fault(reply.body)
    assert fault.server_side


def test_get_document_file_returns_exact_bytes(pki):
    """getDocumentFile returns exactly the stored bytes, with their checksum, signed, RelatesTo = the request id."""
    data = b"<ClinicalDocument>\r\n  bytes as signed \xd0\x9f</ClinicalDocument>\n"
    h = Harness(pki, files={"d-1": data})
    req = soap.build_file_request(local_uid="d-1", to="http://mis/cb", key=pki["ips"][0], certificate=pki["ips"][1],
                                  reply_to=n.WSA_ANONYMOUS, message_id="0e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f")
    reply = h.handle(req)
    assert reply.status == 200
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
    parsed = soap.parse_file_response(reply.body)
    assert parsed.data == data and parsed.checksum_ok
    assert parsed.headers.relates_to == "0e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f"


def test_get_document_file_unknown_local_uid_is_a_fault(pki):
    """An unknown localUid gets a Client fault naming DOCUMENT_NOT_FOUND."""
    h = Harness(pki)
    req = soap.build_file_request(local_uid="nope", to="http://mis/cb", key=pki["ips"][0], certificate=pki["ips"][1])
    reply = h.handle(req)
    assert reply.status == 500 and reply.outcome == "unknown_document"
    assert soap.parse_fault(reply.body).detail_code == "DOCUMENT_NOT_FOUND"


def test_forged_file_request_reveals_nothing(pki):
    """A getDocumentFile signed by an unpinned certificate is refused before any lookup."""
    h = Harness(pki, files={"d-1": b"secret"})
    req = soap.build_file_request(local_uid="d-1", to="x", key=pki["rogue"][0], certificate=pki["rogue"][1])
    reply = h.handle(req)
    assert reply.outcome == "forged" and b"c2VjcmV0" not in reply.body
