"""The ИПС SOAP transport: every kind of answer classified (httpx.MockTransport), and what is posted."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from lab.dev.pki import DevCA, SubjectInfo
from producer.errors import TransientError
from producer.ids import normalize_message_id
from services.reasons import reason_info
from services.remd import soap
from services.remd._transports.ips import IpsSoapTransport
from services.remd.names import STATUS_ERROR
from services.remd.transport import LookupRequest, SubmitRequest, classify_answer


@pytest.fixture(scope="module")
def system_key():
    ca = DevCA.create("transport test CA")
    return ca.issue(subject=SubjectInfo(family="", common_name="МИС", org="Тест"))


def _registration() -> soap.Registration:
    return soap.Registration(
        kind="119",
        system="mis",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        local_uid="doc-1",
        creation_date_time="2026-01-01T10:00:00+03:00",
        patient=soap.Patient(snils="12345678901"),
        personal_signatures=(
            soap.PersonalSignature(
                signer=soap.Signer(
                    role=soap.Coded("DOCTOR", "2.4"), snils="12345678901", position=soap.Coded("109", "7.5")
                ),
                signature=b"\x30\x03\x02\x01\x01",
            ),
        ),
    )


def _submit(system_key, handler, **kw):
    key, cert = system_key
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    t = IpsSoapTransport(client=client, **kw)
    req = SubmitRequest(
        registration=_registration(),
        message_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        endpoint="http://ips.test/emdr",
        client_entity_id="mis-1",
        reply_to="http://mis.test/cb",
        key=key,
        certificate=cert,
    )

    async def go():
        try:
            return await t.submit(req)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _answer(status=200, **kw):
    body = soap.build_sync_answer(relates_to="x", **kw)
    return lambda request: httpx.Response(status, content=body)


def test_accepted_and_request_is_signed_register_document(system_key):
    """A success answer is accepted, and the posted body is a signed registerDocument with our MessageID."""
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, content=soap.build_sync_answer(relates_to="x"))

    out = _submit(system_key, handler)
    assert out.kind == "accepted" and not out.transport_failure
    parsed = soap.parse_register_document(seen[0].content)
    assert normalize_message_id(parsed.headers.message_id) == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert parsed.headers.client_entity_id == "mis-1" and parsed.headers.reply_to == "http://mis.test/cb"
    assert b"Signature" in seen[0].content
    assert seen[0].headers["content-type"].startswith("application/soap+xml")


def test_rate_limit_is_transient_deferred_a_minute(system_key):
    """RATE_LIMIT is transient with defer ≥ 60 s and is not an endpoint failure."""
    out = _submit(system_key, _answer(status=STATUS_ERROR, errors=[soap.RemdError("RATE_LIMIT", "лимит")]))
    assert (out.kind, out.reason, out.remd_code) == ("transient", "RATE_LIMIT", "RATE_LIMIT")
    assert out.defer >= 60 and not out.transport_failure


def test_transient_remd_code_is_transient(system_key):
    """A РЭМД code classified transient (INTERNAL_ERROR) gives a transient outcome carrying the code."""
    out = _submit(system_key, _answer(status=STATUS_ERROR, errors=[soap.RemdError("INTERNAL_ERROR", "сбой")]))
    assert (out.kind, out.reason, out.remd_code, out.category) == (
        "transient",
        "REMD_TRANSIENT",
        "INTERNAL_ERROR",
        "transient",
    )


def test_data_code_is_permanent_with_hint(system_key):
    """A data code (NOT_UNIQUE_PROVIDED_ID) is permanent, with category, hint and the РЭМД message."""
    out = _submit(
        system_key,
        _answer(
            status=STATUS_ERROR,
            errors=[
                soap.RemdError("INTERNAL_ERROR", "сбой"),
                soap.RemdError("NOT_UNIQUE_PROVIDED_ID", "уже есть"),
            ],
        ),
    )
    assert (out.kind, out.reason, out.remd_code, out.category) == (
        "permanent",
        "REMD_REJECTED",
        "NOT_UNIQUE_PROVIDED_ID",
        "data",
    )
    assert out.remd_message == "уже есть" and out.hint and "INTERNAL_ERROR" in out.message


def test_unknown_code_is_permanent_configuration(system_key):
    """A code missing from the classifier is permanent and flagged configuration for a person to look at."""
    out = _submit(system_key, _answer(status=STATUS_ERROR, errors=[soap.RemdError("BRAND_NEW_CODE", "?")]))
    assert (out.kind, out.category) == ("permanent", "configuration")


@pytest.mark.parametrize(
    "code,ips,kind,failure",
    [
        ("Server", "SystemFault", "transient", True),
        ("Client", "ValidationFault", "permanent", False),
        ("Client", "AuthorizationFault", "permanent", False),
    ],
)
def test_soap_faults(system_key, code, ips, kind, failure):
    """Server-side faults are transient endpoint failures; validation and authorization faults are permanent."""
    body = soap.build_fault(code=code, reason="r", ips_fault=ips, detail_message="m")
    out = _submit(system_key, lambda r: httpx.Response(500, content=body))
    assert (out.kind, out.reason, out.transport_failure) == (kind, "SOAP_FAULT", failure)
    if ips == "AuthorizationFault":
        assert out.category == "configuration"


def test_fault_with_transient_detail_code(system_key):
    """A fault whose detail carries a transient РЭМД code is transient whatever its fault code says."""
    body = soap.build_fault(code="Client", reason="r", detail_code="RATE_LIMIT", detail_message="m")
    out = _submit(system_key, lambda r: httpx.Response(500, content=body))
    assert out.kind == "transient" and out.defer == 60.0


def test_http_5xx_without_soap_is_transient_with_retry_after(system_key):
    """503 text/plain is a transient endpoint failure and honours Retry-After."""
    out = _submit(system_key, lambda r: httpx.Response(503, text="down", headers={"Retry-After": "7"}))
    assert (out.kind, out.reason, out.defer, out.transport_failure, out.ambiguous) == (
        "transient",
        "HTTP_503",
        7.0,
        True,
        True,
    )


def test_http_404_without_soap_is_permanent_configuration(system_key):
    """404 from a proxy means a wrong endpoint: permanent, and the catalogue makes it the deployment's to fix."""
    out = _submit(system_key, lambda r: httpx.Response(404, text="no"))
    assert (out.kind, out.reason, out.category) == ("permanent", "HTTP_404", None)
    assert reason_info(out.reason).category == "configuration"


def test_malformed_2xx_is_transient(system_key):
    """A 200 with broken XML is transient (an ИПС hiccup), an endpoint failure, and ambiguous."""
    out = _submit(system_key, lambda r: httpx.Response(200, content=b"<soap:Envelope><broken"))
    assert (out.kind, out.reason, out.transport_failure, out.ambiguous) == (
        "transient",
        "MALFORMED_ANSWER",
        True,
        True,
    )


@pytest.mark.parametrize(
    "exc,reason,ambiguous",
    [
        (httpx.ConnectError("refused"), "CONNECT_ERROR", False),
        (httpx.ConnectTimeout("slow"), "TIMEOUT", False),
        (httpx.ReadTimeout("slow"), "TIMEOUT", True),
        (httpx.RemoteProtocolError("reset"), "CONNECTION_RESET", True),
    ],
)
def test_network_errors_are_transient(system_key, exc, reason, ambiguous):
    """Network errors and timeouts are transient endpoint failures; read-side ones are ambiguous."""

    def handler(request):
        raise exc

    out = _submit(system_key, handler)
    assert (out.kind, out.reason, out.transport_failure, out.ambiguous) == (
        "transient",
        reason,
        True,
        ambiguous,
    )


def test_request_that_cannot_be_built_is_permanent(system_key):
    """A registration without personal signatures never leaves: permanent REQUEST_BUILD_FAILED."""
    key, cert = system_key
    reg = soap.Registration(
        kind="119",
        system="m",
        organization="o",
        local_uid="u",
        creation_date_time="t",
        patient=soap.Patient(),
        personal_signatures=(),
    )
    calls = []
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200))
    )
    t = IpsSoapTransport(client=client)
    out = asyncio.run(
        t.submit(
            SubmitRequest(
                registration=reg,
                message_id="m",
                endpoint="http://x",
                client_entity_id="c",
                reply_to="http://r",
                key=key,
                certificate=cert,
            )
        )
    )
    assert out.kind == "permanent" and out.reason == "REQUEST_BUILD_FAILED" and calls == []


def test_classify_answer_error_status_without_codes():
    """status=error with no error items is retried (transient), not dead-lettered blindly."""
    out = classify_answer(200, soap.build_sync_answer(relates_to="x", status=STATUS_ERROR))
    assert out.kind == "transient" and out.reason == "REMD_ERROR_WITHOUT_CODE"


def _lookup(system_key, handler):
    key, cert = system_key
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    t = IpsSoapTransport(client=client)
    req = LookupRequest(
        local_uid="doc-1",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        kind="119",
        since=dt.date(2026, 1, 1),
        until=dt.date(2026, 1, 3),
        endpoint="http://ips.test/emdr",
        client_entity_id="mis-1",
        key=key,
        certificate=cert,
    )

    async def go():
        try:
            return await t.lookup(req)
        finally:
            await t.aclose()
            await client.aclose()

    return asyncio.run(go())


def test_lookup_asks_search_registry_item_and_finds_the_document(system_key):
    """lookup posts a signed searchRegistryItem for the organisation, kind and dates, and returns this
    localUid's registry item (other documents of the answer ignored)."""
    seen = []
    items = [
        soap.RegistryItem(emdr_id="16.1", local_uid="other"),
        soap.RegistryItem(emdr_id="16.2", local_uid="doc-1"),
    ]

    def handler(request):
        seen.append(request)
        return httpx.Response(200, content=soap.build_search_response(relates_to="x", items=items))

    item = _lookup(system_key, handler)
    assert item.emdr_id == "16.2"
    query = soap.parse_search_request(seen[0].content).query
    assert (query.organization, query.kind, query.register_date_begin, query.register_date_end) == (
        "1.2.643.5.1.13.13.12.2.77.1",
        "119",
        "2026-01-01",
        "2026-01-03",
    )
    assert seen[0].headers["content-type"].startswith("application/soap+xml")
    assert b"Security" in seen[0].content  # signed with the system's key


def test_lookup_of_an_unregistered_document_is_none(system_key):
    """A registry answer without this localUid means "not registered (yet)"."""
    assert (
        _lookup(system_key, lambda r: httpx.Response(200, content=soap.build_search_response(relates_to="x")))
        is None
    )


@pytest.mark.parametrize(
    "handler",
    [
        lambda r: httpx.Response(503, text="down"),
        lambda r: httpx.Response(
            200, content=soap.build_search_response(relates_to="x", status=STATUS_ERROR)
        ),
    ],
)
def test_lookup_that_cannot_ask_is_transient(system_key, handler):
    """An outage or an error answer is TransientError(REGISTRY_LOOKUP_FAILED): ask again later."""
    with pytest.raises(TransientError) as info:
        _lookup(system_key, handler)
    assert info.value.reason == "REGISTRY_LOOKUP_FAILED"


def test_the_transport_hands_back_the_request_it_signed_and_the_answer_it_got(system_key):
    """IpsSoapTransport's outcome carries the exact bytes it posted and received (a lost connection: the request)."""
    posted = []
    answer = soap.build_sync_answer(relates_to="x")

    def handler(request):
        posted.append(request.content)
        return httpx.Response(200, content=answer)

    out = _submit(system_key, handler)
    assert out.accepted and out.request == posted[0] and out.response == answer

    def reset(request):
        posted.append(request.content)
        raise httpx.ReadError("reset", request=request)

    lost = _submit(system_key, reset)
    assert lost.reason == "CONNECTION_RESET" and lost.request == posted[1] and lost.response is None
