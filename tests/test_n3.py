"""The N3.Health route: its messages (AddCase, RequestFault, document storage) and the N3 transport over HTTP mocks."""

from __future__ import annotations

import asyncio
import json
from datetime import date

import httpx
import pytest

from producer.errors import TransientError
from services.remd import n3, soap
from services.remd import n3_names as names
from services.remd._transports.n3 import N3Transport
from services.remd.transport import LookupRequest, SubmitRequest
from services.remd.transports import transport_for

DOCUMENT = "<ClinicalDocument xmlns='urn:hl7-org:v3'>СЭМД</ClinicalDocument>".encode()
TOKEN = "6f1c0e2a-1111-4222-8333-944455556666"


def _registration() -> soap.Registration:
    signer = soap.Signer(
        role=soap.Coded("DOCTOR", "2.4"),
        snils="12345678901",
        local_id="d-7",
        family="Петрова",
        given="Анна",
        patronymic="Сергеевна",
        position=soap.Coded("109", "7.5"),
    )
    return soap.Registration(
        kind="119",
        system="mis",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        local_uid="doc-n3",
        creation_date_time="2026-11-22T09:30:00+03:00",
        document_number="Д-1",
        patient=soap.Patient(snils="11111111111", local_id="p-1"),
        personal_signatures=(soap.PersonalSignature(signer=signer, signature=b"\x30\x82doctor"),),
        org_signature=soap.OrgSignature(signature=b"\x30\x82mo"),
    )


def test_add_case_round_trip():
    """AddCase carries the token, the ЛПУ, the localUid, the exact document bytes and every signature with its signer."""
    case = n3.parse_add_case(
        n3.build_add_case(_registration(), document=DOCUMENT, token=TOKEN, lpu_id="lpu-9")
    )
    assert (case.token, case.lpu_id, case.local_uid, case.patient_local_id, case.kind) == (
        TOKEN,
        "lpu-9",
        "doc-n3",
        "p-1",
        "119",
    )
    assert case.document == DOCUMENT and case.org_signature == b"\x30\x82mo"
    [ps] = case.personal_signatures
    assert ps.signature == b"\x30\x82doctor"
    assert (ps.signer.snils, ps.signer.family, ps.signer.position) == (
        "12345678901",
        "Петрова",
        soap.Coded("109", "7.5"),
    )


def test_request_fault_reads_as_a_soap_fault_with_the_error_code():
    """N3's RequestFault detail gives the fault its ErrorCode and Message."""
    fault = n3.parse_add_case_answer(n3.build_request_fault(code="NO_SNILS", message="Нет СНИЛС"))
    assert isinstance(fault, soap.SoapFault) and not fault.server_side
    assert (fault.detail_code, fault.detail_message) == ("NO_SNILS", "Нет СНИЛС")
    assert n3.parse_add_case_answer(n3.build_add_case_response()) is True


def _submit(handler, **over):
    seen = []

    def record(request):
        seen.append(request)
        return handler(request)

    transport = N3Transport(client=httpx.AsyncClient(transport=httpx.MockTransport(record)))
    fields = {"document": DOCUMENT, "auth_token": TOKEN, "lpu_id": "lpu-9", **over}
    request = SubmitRequest(
        registration=_registration(),
        message_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        endpoint="http://n3.test/emk",
        **fields,
    )
    return asyncio.run(transport.submit(request)), seen


def test_taken_case_is_accepted_and_carries_token_and_request_id():
    """An AddCaseResponse is accepted; the request has the N3 auth header, the SOAPAction and our request id."""
    outcome, [req] = _submit(lambda r: httpx.Response(200, content=n3.build_add_case_response()))
    assert outcome.accepted
    assert req.headers[names.AUTH_HEADER] == f"N3 {TOKEN}"
    assert req.headers[names.REQUEST_ID_HEADER] == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert req.headers["SOAPAction"] == '"http://tempuri.org/IEmkService/AddCase"'
    assert n3.parse_add_case(req.content).document == DOCUMENT
    assert TOKEN not in repr(
        SubmitRequest(registration=_registration(), message_id="m", endpoint="e", auth_token=TOKEN)
    )


@pytest.mark.parametrize(
    "status,body,kind,reason",
    [
        (500, n3.build_request_fault(code="NO_SNILS", message="Нет СНИЛС"), "permanent", "SOAP_FAULT"),
        (
            500,
            n3.build_request_fault(code="INTERNAL_ERROR", message="x", server=True),
            "transient",
            "SOAP_FAULT",
        ),
        (401, b"Unauthorized", "permanent", "HTTP_401"),
        (503, b"busy", "transient", "HTTP_503"),
        (200, b"<html/>", "transient", "MALFORMED_ANSWER"),
    ],
)
def test_answers_are_classified(status, body, kind, reason):
    """Client RequestFaults and a refused token are permanent; server faults, 5xx and garbage are transient."""
    outcome, _ = _submit(lambda r: httpx.Response(status, content=body))
    assert (outcome.kind, outcome.reason) == (kind, reason)
    if reason == "SOAP_FAULT" and kind == "permanent":
        assert outcome.remd_code == "NO_SNILS"
    if reason == "HTTP_401":
        assert outcome.category == "configuration"


def test_a_case_without_its_document_or_token_never_leaves():
    """Without the document or the token nothing is sent: REQUEST_BUILD_FAILED."""
    outcome, seen = _submit(lambda r: httpx.Response(200), auth_token=None)
    assert outcome.reason == "REQUEST_BUILD_FAILED" and seen == []


def _lookup(handler):
    transport = N3Transport(client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    request = LookupRequest(
        local_uid="doc-n3",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        kind="119",
        since=date(2026, 11, 21),
        until=date(2026, 11, 23),
        endpoint="http://n3.test/docstorage/",
        auth_token=TOKEN,
    )
    return asyncio.run(transport.lookup(request))


def test_lookup_finds_the_registered_document_in_the_document_storage():
    """The document-storage search (token, oidMo, remdCode, dates) finds the localUid once it has an emdrId."""
    asked = []

    def handler(request):
        asked.append(json.loads(request.content))
        assert request.headers[names.AUTH_HEADER] == f"N3 {TOKEN}"
        return httpx.Response(
            200,
            json=n3.search_answer(
                [
                    soap.RegistryItem(local_uid="other", emdr_id="1"),
                    soap.RegistryItem(
                        local_uid="doc-n3",
                        emdr_id="16.62.26.11.000000009",
                        kind="119",
                        registration_date_time="2026-11-22T10:00:00+03:00",
                    ),
                ]
            ),
        )

    item = _lookup(handler)
    assert item.emdr_id == "16.62.26.11.000000009" and item.local_uid == "doc-n3"
    assert asked == [
        {
            "oidMo": "1.2.643.5.1.13.13.12.2.77.1",
            "remdCode": ["119"],
            "dateFrom": "2026-11-21",
            "dateTo": "2026-11-23",
        }
    ]


def test_lookup_of_a_held_but_unregistered_document_is_none_and_errors_are_transient():
    """A document N3 holds without an emdrId is not registered yet; an error answer says nothing: transient."""
    assert (
        _lookup(lambda r: httpx.Response(200, json=n3.search_answer([soap.RegistryItem(local_uid="doc-n3")])))
        is None
    )
    with pytest.raises(TransientError) as exc:
        _lookup(lambda r: httpx.Response(502, text="bad gateway"))
    assert exc.value.reason == "REGISTRY_LOOKUP_FAILED"


def test_transport_for_names_both_routes():
    """An organisation's remd.transport picks ИПС or N3; N3 has no callbacks and takes the document attached."""
    ips, n3t = transport_for("ips"), transport_for("n3")
    assert (ips.has_callbacks, ips.pushes_document) == (True, False)
    assert (n3t.has_callbacks, n3t.pushes_document) == (False, True)
    asyncio.run(ips.aclose())
    asyncio.run(n3t.aclose())
