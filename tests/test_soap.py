"""РЭМД SOAP messages: each one built, signed, verified and parsed back to the same data."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from producer.ids import normalize_message_id, same_message_id
from services.crypto.certificates import load_certificate
from services.crypto.keys import load_pkcs8
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.soap import (
    Association,
    Coded,
    OrgSignature,
    Patient,
    PersonalSignature,
    PowerOfAttorney,
    Recipient,
    RegisterResult,
    Registration,
    RegistryItem,
    RemdError,
    SearchQuery,
    Signer,
    SoapFault,
    SoapParseError,
    SyncAnswer,
)
from services.remd.wssec import verify_envelope

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=10)


@pytest.fixture(scope="module")
def ident(tmp_path_factory):
    """An ИС key and certificate from OpenSSL's GOST engine."""
    d = tmp_path_factory.mktemp("is")
    r = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-engine",
            "gost",
            "-newkey",
            "gost2012_256",
            "-pkeyopt",
            "paramset:A",
            "-nodes",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
            "-days",
            "30",
            "-subj",
            "/CN=mis",
            "-md_gost12_256",
        ],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    return {
        "key": load_pkcs8((d / "key.pem").read_bytes()),
        "certificate": load_certificate((d / "cert.pem").read_bytes()),
    }


def _registration(**over) -> Registration:
    base = dict(
        kind="36",
        system="11111111-2222-3333-4444-555555555555",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        department="1.2.643.5.1.13.13.12.2.77.1.0.1",
        local_uid="2f1c7d4e-0000-4000-8000-000000000001",
        document_number="Д-17",
        creation_date_time="2026-11-22T09:30:00+03:00",
        patient=Patient(
            snils="12345678901",
            local_id="p-1",
            family="Иванов",
            given="Иван",
            patronymic="Иванович",
            gender="1",
            birth_date="1980-01-02",
        ),
        personal_signatures=(
            PersonalSignature(
                signer=Signer(
                    role=Coded("DOCTOR", "2.4"),
                    position=Coded("109", "7.5"),
                    speciality=Coded("27", "4.1"),
                    local_id="doc-7",
                    snils="98765432109",
                    family="Петрова",
                    given="Анна",
                    patronymic="Сергеевна",
                    birth_date="1975-05-06",
                    department="1.2.643.5.1.13.13.12.2.77.1.0.1",
                ),
                signature=b"\x30\x82cms-of-the-doctor",
            ),
        ),
        recipient=Recipient(
            kind=n.RECIPIENT_MEDICAL_ORGANIZATION, organization="1.2.643.5.1.13.13.12.2.77.8486"
        ),
        associations=(Association(target="16.62.23.09.000014500", type="RPLC"),),
        org_signature=OrgSignature(
            signature=b"\x30\x82cms-of-the-mo",
            power_of_attorney=PowerOfAttorney(
                number="b1f0c7e2-3d4a-4e5f-9a8b-7c6d5e4f3a2b",
                principal_inn="7700000000",
                principal_ogrn="1027700000000",
                document="<Доверенность/>".encode(),
                signature=b"\x30\x82poa-sig",
            ),
        ),
    )
    base.update(over)
    return Registration(**base)


def test_register_document_round_trip(ident):
    """The signed request verifies, carries the addressing headers and parses back to the same registration."""
    reg = _registration()
    xml, mid = soap.build_register_document(
        reg,
        client_entity_id="17c74e63-dc38-438d-a27a-a1aa063ee7b8",
        to="https://ips-test.rosminzdrav.ru/fedcba9876543",
        reply_to="https://ips-test.rosminzdrav.ru/0123456789abc",
        now=NOW,
        **ident,
    )
    verified = verify_envelope(xml, trusted_certificates=[ident["certificate"]], now=LATER)
    assert len(verified.signed_ids) == 6
    parsed = soap.parse_register_document(xml)
    assert parsed.registration == reg
    h = parsed.headers
    assert (h.message_id, h.action, h.client_entity_id, h.soap_version) == (
        mid,
        n.ACTION_REGISTER_DOCUMENT,
        "17c74e63-dc38-438d-a27a-a1aa063ee7b8",
        "1.2",
    )
    assert h.to.endswith("fedcba9876543") and h.reply_to.endswith("0123456789abc")


def test_register_document_layout_and_checksum(ident):
    """Body elements are in the service namespace, signatures base64 with a CRC32 checksum, the header in the
    reference signer's order (docs/protocol.md#soap-header)."""
    reg = _registration(org_signature=None)
    xml, _ = soap.build_register_document(reg, client_entity_id="c", to="t", reply_to="r", now=NOW, **ident)
    root = etree.fromstring(xml)
    header = root.find(f"{{{n.NS_SOAP12}}}Header")
    assert [etree.QName(c).localname for c in header] == [
        "Security",
        "transportHeader",
        "MessageID",
        "ReplyTo",
        "To",
        "Action",
    ]
    req = root.find(f"{{{n.NS_SOAP12}}}Body/{{{n.NS_EMDR_SERVICE}}}{n.REGISTER_DOCUMENT_REQUEST}")
    assert req is not None
    sig = req.find(f".//{{{n.NS_EMDR_SERVICE}}}{n.SIGNATURE}")
    data = base64.b64decode(sig.findtext(f"{{{n.NS_EMDR_SERVICE}}}{n.DATA}"))
    assert data == reg.personal_signatures[0].signature
    assert int(sig.findtext(f"{{{n.NS_EMDR_SERVICE}}}{n.CHECKSUM}")) == zlib.crc32(data)
    assert req.find(f"{{{n.NS_EMDR_SERVICE}}}{n.ORG_SIGNATURE}") is None


def _paths(el, prefix=""):
    out = []
    for c in el:
        path = f"{prefix}/{etree.QName(c).localname}"
        out.append(path)
        out += _paths(c, path)
    return out


def test_register_document_speaks_the_kremd_dialect():
    """The request body uses the names two sources agree on (docs/protocol.md#request-body):
    personalSignatures/item/signer with coded role, position and speciality (with codeSystemVersion),
    surname/name/patrName, a department per signer, orgSignature, recipient and associations; the old guessed
    names appear nowhere."""
    xml, _ = soap.build_register_document(
        _registration(), client_entity_id="c", to="t", reply_to="r", key=None, certificate=None
    )
    req = etree.fromstring(xml).find(f".//{{{n.NS_EMDR_SERVICE}}}{n.REGISTER_DOCUMENT_REQUEST}")
    paths = set(_paths(req))
    for expected in (
        "/kind/code",
        "/patient/surname",
        "/patient/name",
        "/patient/patrName",
        "/personalSignatures/item/signer/role/code",
        "/personalSignatures/item/signer/role/codeSystemVersion",
        "/personalSignatures/item/signer/position/codeSystemVersion",
        "/personalSignatures/item/signer/speciality/codeSystemVersion",
        "/personalSignatures/item/signer/department/localId/code",
        "/personalSignatures/item/signer/patrName",
        "/personalSignatures/item/signature/checksum",
        "/orgSignature/data",
        "/orgSignature/powerOfAttorney/number",
        "/recipient/kind/code",
        "/recipient/recipientKindMedicalOrganization/organization/code",
        "/associations/item/target",
        "/associations/item/type",
        "/department/localId/code",
    ):
        assert expected in paths, expected
    text = xml.decode()
    for old in (
        "personalSigns",
        "personalSign>",
        "doctor>",
        "organizationSign",
        "family>",
        "given>",
        "patronymic>",
    ):
        assert old not in text, old


def test_register_document_without_position_version_is_not_built():
    """A signer without its position's codeSystemVersion cannot be written: РЭМД checks every signer's post."""
    reg = _registration()
    signer = dataclasses.replace(reg.personal_signatures[0].signer, position=Coded("109", None))
    bad = dataclasses.replace(
        reg, personal_signatures=(dataclasses.replace(reg.personal_signatures[0], signer=signer),)
    )
    with pytest.raises(ValueError, match="codeSystemVersion"):
        soap.build_register_document(
            bad, client_entity_id="c", to="t", reply_to="r", key=None, certificate=None
        )


def test_old_dialect_request_is_refused_as_unmarshalling_error():
    """A request in our first guess's names (personalSigns/personalSign/doctor, organizationSign) is
    refused by the parser a schema-validating service runs, naming the unexpected element."""
    xml, _ = soap.build_register_document(
        _registration(), client_entity_id="c", to="t", reply_to="r", key=None, certificate=None
    )
    root = etree.fromstring(xml)
    node = root.find(f".//{{{n.NS_EMDR_SERVICE}}}{n.PERSONAL_SIGNATURES}")
    node.tag = f"{{{n.NS_EMDR_SERVICE}}}personalSigns"
    with pytest.raises(SoapParseError) as exc:
        soap.parse_register_document(etree.tostring(root))
    assert exc.value.reason == "SOAP_UNEXPECTED_ELEMENT"
    assert 'local:"personalSigns"' in exc.value.message and "personalSignatures" in exc.value.message


def test_register_document_bad_checksum_is_refused(ident):
    """A request whose checksum does not match its signature data fails to parse (emulator side)."""
    xml, _ = soap.build_register_document(
        _registration(), client_entity_id="c", to="t", reply_to="r", key=None, certificate=None
    )
    root = etree.fromstring(xml)
    root.xpath("//*[local-name()='checksum']")[0].text = "1"
    with pytest.raises(SoapParseError) as exc:
        soap.parse_register_document(etree.tostring(root))
    assert exc.value.reason == "SOAP_CHECKSUM_MISMATCH"


def test_sync_answer_round_trip(ident):
    """registerDocumentResponse: success means accepted; an error answer carries its codes."""
    ok = soap.parse_answer(soap.build_sync_answer(relates_to="m-1", now=NOW, **ident))
    assert isinstance(ok, SyncAnswer) and ok.accepted and ok.headers.relates_to == "m-1"
    bad = soap.parse_answer(
        soap.build_sync_answer(
            relates_to="m-2", status="error", errors=[RemdError("RATE_LIMIT", "Достигнут защитный лимит")]
        )
    )
    assert not bad.accepted
    assert bad.errors[0].code == "RATE_LIMIT" and bad.errors[0].info.transient


@pytest.mark.parametrize("version,code", [("1.1", "Server"), ("1.2", "Receiver")])
def test_fault_round_trip(version, code):
    """SOAP 1.1 and 1.2 faults parse to code, reason and the РЭМД detail code."""
    xml = soap.build_fault(
        code=code,
        reason="Ошибка",
        detail_code="SCHEMA_PROCESSING_ERROR",
        detail_message="шаблон",
        relates_to="m-3",
        soap_version=version,
    )
    fault = soap.parse_answer(xml)
    assert isinstance(fault, SoapFault)
    assert fault.code == f"soap:{code}" and fault.reason == "Ошибка" and fault.server_side
    assert (fault.detail_code, fault.detail_message) == ("SCHEMA_PROCESSING_ERROR", "шаблон")
    assert fault.info.transient and fault.headers.relates_to == "m-3"
    assert soap.parse_fault(xml) == fault


@pytest.mark.parametrize("given,soap12", [("Client", "Sender"), ("Server", "Receiver"), ("Sender", "Sender")])
def test_fault_codes_are_given_once_in_the_soap_11_names(given, soap12):
    """build_fault takes the 1.1 names for every version: a 1.2 fault says Sender/Receiver, a 1.1 one keeps them."""
    assert (
        soap.parse_fault(soap.build_fault(code=given, reason="r", soap_version="1.2")).code
        == f"soap:{soap12}"
    )
    if given in ("Client", "Server"):
        assert (
            soap.parse_fault(soap.build_fault(code=given, reason="r", soap_version="1.1")).code
            == f"soap:{given}"
        )


def test_http_headers_carry_the_action_as_each_soap_version_does():
    """SOAP 1.2 travels as application/soap+xml with the action a media-type parameter; 1.1 as text/xml with
    SOAPAction; a message's version is read back from its envelope."""
    assert envelope.http_headers("1.2", action="registerDocument") == {
        "Content-Type": 'application/soap+xml; charset=utf-8; action="registerDocument"'
    }
    assert envelope.http_headers("1.1", action="registerDocument") == {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": '"registerDocument"',
    }
    assert envelope.content_type("1.2") == "application/soap+xml; charset=utf-8"
    for version in ("1.1", "1.2"):
        assert (
            envelope.version_of(soap.build_fault(code="Client", reason="r", soap_version=version)) == version
        )
    with pytest.raises(ValueError):
        envelope.content_type("1.3")


def test_ips_typed_fault():
    """An ИПС AuthorizationFault is recognised with its message."""
    fault = soap.parse_fault(
        soap.build_fault(
            code="Client",
            reason="denied",
            ips_fault="AuthorizationFault",
            detail_message="ИС не зарегистрирована",
        )
    )
    assert fault.ips_fault == "AuthorizationFault" and fault.detail_message == "ИС не зарегистрирована"
    assert not fault.server_side and fault.detail_code is None


def test_foreign_fault_with_error_code():
    """A hand-written SOAP 1.1 fault with errorCode in its detail (a peer-seen form) is read."""
    xml = f"""<s:Envelope xmlns:s="{n.NS_SOAP11}"><s:Body><s:Fault><faultcode>s:Client</faultcode>
      <faultstring>bad</faultstring><detail><x:err xmlns:x="urn:x"><x:errorCode>WRONG_MESSAGE_ID</x:errorCode>
      </x:err></detail></s:Fault></s:Body></s:Envelope>""".encode()
    fault = soap.parse_fault(xml)
    assert fault.detail_code == "WRONG_MESSAGE_ID" and fault.info.category == "data"


def test_register_result_success_round_trip(ident):
    """A success callback (SOAP 1.1) verifies and parses to the registry number and time."""
    result = RegisterResult(
        relates_to_message="499C1284-AC8E-41D8-8957-B9B83DE9A638",
        status="success",
        local_uid="doc-1",
        kind="36",
        organization="1.2.643.5.1.13.13.12.2.77.1",
        registry_item=RegistryItem(
            emdr_id="16.62.23.09.000014523",
            registration_date_time="2026-11-22T10:05:00+03:00",
            store_till_date="2126-11-22",
            document_version="1",
        ),
    )
    xml = soap.build_register_result(result, to="https://mis.example/emdr/callback", now=NOW, **ident)
    verify_envelope(xml, now=LATER, required=("Body", "Timestamp", "MessageID", "To", "Action"))
    parsed = soap.parse_register_result(xml)
    assert parsed.headers.soap_version == "1.1" and parsed.headers.action == n.ACTION_REGISTER_DOCUMENT_RESULT
    assert parsed.registered
    assert parsed == dataclasses.replace(result, headers=parsed.headers)
    assert normalize_message_id(parsed.relates_to_message) == "499c1284-ac8e-41d8-8957-b9b83de9a638"


def test_register_result_error_round_trip(ident):
    """An error callback parses to its codes, RECIPIENT_* included."""
    result = RegisterResult(
        relates_to_message="m-9",
        status="error",
        local_uid="doc-2",
        errors=(RemdError("NO_SNILS", "СНИЛС [..]"), RemdError("RECIPIENT_SNILS_MISMATCH", "x")),
    )
    parsed = soap.parse_register_result(soap.build_register_result(result, to="t", now=NOW, **ident))
    assert not parsed.registered and parsed.registry_item is None
    assert parsed.errors == result.errors
    assert [e.info.id for e in parsed.errors] == [22, 121]


def test_register_result_peer_shapes():
    """Older/peer callbacks: registrationDate instead of registrationDateTime, kind as a nested code; the
    relatesToMessage spelling is kept as sent and normalises to the one form."""
    xml = f"""<soap:Envelope xmlns:soap="{n.NS_SOAP11}" xmlns:cb="{n.NS_EMDR_CALLBACK}"><soap:Body>
      <cb:registerDocumentResult><cb:relatesToMessage>urn:uuid:ABC</cb:relatesToMessage><cb:status>success</cb:status>
      <cb:kind><cb:code>36</cb:code></cb:kind><cb:registryItem><cb:emdrId>1.2</cb:emdrId>
      <cb:registrationDate>2026-11-22</cb:registrationDate></cb:registryItem></cb:registerDocumentResult>
      </soap:Body></soap:Envelope>""".encode()
    parsed = soap.parse_register_result(xml)
    assert parsed.kind == "36" and parsed.registry_item.registration_date_time == "2026-11-22"
    assert parsed.registered
    assert (
        parsed.relates_to_message == "urn:uuid:ABC"
        and normalize_message_id(parsed.relates_to_message) == "abc"
    )


def test_callback_ack_round_trip(ident):
    """Our acknowledgement is signed and relates to the callback's MessageID."""
    xml = soap.build_callback_ack(relates_to="cb-1", now=NOW, **ident)
    verify_envelope(xml, now=LATER, required=("Body", "Timestamp", "MessageID", "Action"))
    ack = soap.parse_callback_ack(xml)
    assert ack.status == "success" and ack.headers.relates_to == "cb-1"


def test_file_request_by_emdr_id(ident):
    """getDocumentFile may name a registered document by its emdrId instead of the localUid."""
    req = soap.parse_file_request(
        soap.build_file_request(emdr_id="16.62.23.09.000014523", to="t", now=NOW, **ident)
    )
    assert (req.local_uid, req.emdr_id) == (None, "16.62.23.09.000014523")
    with pytest.raises(ValueError):
        soap.build_file_request(to="t", key=None, certificate=None)


def test_file_request_and_response_round_trip(ident):
    """getDocumentFile carries the localUid; the reply carries the exact bytes, checksum and RelatesTo."""
    req_xml = soap.build_file_request(
        local_uid="doc-1", to="https://mis.example/emdr/callback", message_id="f-1", now=NOW, **ident
    )
    req = soap.parse_file_request(req_xml)
    assert req.local_uid == "doc-1" and req.headers.message_id == "f-1"
    document = "<ClinicalDocument>Пример</ClinicalDocument>".encode()
    resp_xml = soap.build_file_response(relates_to=req.headers.message_id, data=document, now=NOW, **ident)
    verify_envelope(resp_xml, now=LATER, required=("Body", "Timestamp", "MessageID", "Action"))
    resp = soap.parse_file_response(resp_xml)
    assert resp.data == document and resp.checksum_ok and resp.headers.relates_to == "f-1"


def test_search_round_trip(ident):
    """searchRegistryItem request and response round-trip with every field."""
    query = SearchQuery(
        organization="1.2.643.5.1.13.13.12.2.1.1",
        kind="58",
        register_date_begin="2021-09-11T00:00:00+03:00",
        register_date_end="2021-09-14T00:00:00+03:00",
        patient_snils="91426037586",
    )
    xml, mid = soap.build_search_request(query, client_entity_id="c", to="t", now=NOW, **ident)
    assert soap.parse_search_request(xml).query == query
    items = (
        RegistryItem(
            emdr_id="1",
            local_uid="a",
            kind="58",
            organization="o",
            registration_date_time="2021-09-13T17:12:09.896+03:00",
        ),
        RegistryItem(emdr_id="2", local_uid="b"),
    )
    result = soap.parse_search_response(soap.build_search_response(relates_to=mid, items=items))
    assert result.status == "success" and result.items == items and result.headers.relates_to == mid


def test_get_registry_item_is_answered_by_an_acknowledgement_then_a_result_callback(ident):
    """getRegistryItem by emdrId names the МИС callback address as ReplyTo; its synchronous answer is only an
    acknowledgement; the record (status, emdrId, both date formats) comes as a getRegistryItemResult callback that
    names the request's MessageID and that parse_callback tells from a registerDocumentResult."""
    xml, mid = soap.build_get_registry_item(
        emdr_id="16.62.23.09.000014523",
        client_entity_id="c",
        to="t",
        reply_to="https://mis.example/callback",
        now=NOW,
        **ident,
    )
    emdr_id, headers = soap.parse_get_registry_item(xml)
    assert emdr_id == "16.62.23.09.000014523" and headers.message_id == mid
    assert headers.reply_to == "https://mis.example/callback" and headers.action == n.ACTION_GET_REGISTRY_ITEM
    ack = soap.parse_registry_item_response(soap.build_registry_item_response(relates_to=mid))
    assert ack.accepted and ack.headers.relates_to == mid
    refused = soap.parse_registry_item_response(
        soap.build_registry_item_response(relates_to=mid, status="error", errors=[RemdError("RATE_LIMIT")])
    )
    assert not refused.accepted and refused.errors[0].code == "RATE_LIMIT"

    item = RegistryItem(
        emdr_id=emdr_id,
        local_uid="doc-1",
        kind="36",
        organization="o",
        registration_date_time="2023-09-22T09:27:02.104000+03:00",
        store_till_date="2048-09-22+03:00",
    )
    raw = soap.build_registry_item_result(
        soap.RegistryItemResult(relates_to_message=f"<{mid.upper()}>", status="success", registry_item=item),
        to="https://mis.example/callback",
        key=None,
        certificate=None,
    )
    result = soap.parse_callback(raw)
    assert isinstance(result, soap.RegistryItemResult) and result.found
    assert normalize_message_id(result.relates_to_message) == mid and result.registry_item == item
    assert result.local_uid == "doc-1" and result.headers.action == n.ACTION_GET_REGISTRY_ITEM_RESULT
    missing = soap.parse_registry_item_result(
        soap.build_registry_item_result(
            soap.RegistryItemResult(
                relates_to_message=mid, status="error", errors=(RemdError("REGISTRY_ITEM_NOT_FOUND"),)
            ),
            to="x",
            key=None,
            certificate=None,
        )
    )
    assert not missing.found and missing.registry_item is None and missing.errors[0].info.id == 37
    assert isinstance(
        soap.parse_callback(
            soap.build_register_result(
                RegisterResult(relates_to_message=mid, status="success"), to="x", key=None, certificate=None
            )
        ),
        RegisterResult,
    )


def test_the_acknowledgement_of_each_callback_is_its_own_element(ident):
    """Our ack of a getRegistryItemResult is a getRegistryItemResultResponse relating to the callback's MessageID."""
    body = soap.build_callback_ack(relates_to="cb-1", answering=n.GET_REGISTRY_ITEM_RESULT, **ident)
    ack = soap.parse_callback_ack(body)
    assert (
        ack.headers.relates_to == "cb-1" and ack.headers.action == n.ACTION_GET_REGISTRY_ITEM_RESULT_RESPONSE
    )
    assert f":{n.GET_REGISTRY_ITEM_RESULT_RESPONSE}>".encode() in body


def test_wrong_message_kind_is_refused():
    """Parsing a message as the wrong operation fails clearly."""
    with pytest.raises(SoapParseError) as exc:
        soap.parse_register_result(soap.build_sync_answer(relates_to="x"))
    assert exc.value.reason == "SOAP_UNEXPECTED"


def test_untrusted_bytes_go_through_xmlsafe():
    """A DOCTYPE in a received message is refused before any SOAP parsing."""
    from producer.xmlsafe import XmlRejected

    with pytest.raises(XmlRejected):
        soap.parse_answer(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')


@pytest.mark.parametrize(
    "raw",
    [
        "499c1284-ac8e-41d8-8957-b9b83de9a638",
        "urn:uuid:499C1284-AC8E-41D8-8957-B9B83DE9A638",
        "uuid:499c1284-ac8e-41d8-8957-b9b83de9a638",
        " 499C1284AC8E41D88957B9B83DE9A638 ",
        "<499c1284-ac8e-41d8-8957-b9b83de9a638>",
        " <urn:uuid:499C1284-AC8E-41D8-8957-B9B83DE9A638> ",
        "{499C1284-AC8E-41D8-8957-B9B83DE9A638}",
    ],
)
def test_normalize_message_id(raw):
    """Every spelling of one MessageID normalises to the same lower-case hyphenated UUID."""
    assert normalize_message_id(raw) == "499c1284-ac8e-41d8-8957-b9b83de9a638"


def test_normalize_non_uuid_message_id():
    """A MessageID that is not a UUID is kept, without prefix, lower-cased."""
    assert normalize_message_id("urn:uuid:MSG-42") == "msg-42"
    assert normalize_message_id("<MSG-42@gateway>") == "msg-42@gateway"
    assert normalize_message_id(None) == ""


def test_same_message_id_compares_spellings_and_never_matches_an_empty_id():
    """Two spellings of one MessageID are the same message; an empty or missing id matches nothing, not even itself."""
    assert same_message_id(
        "<499C1284-AC8E-41D8-8957-B9B83DE9A638>", "urn:uuid:499c1284ac8e41d88957b9b83de9a638"
    )
    assert not same_message_id("499c1284-ac8e-41d8-8957-b9b83de9a638", "499c1284-ac8e-41d8-8957-b9b83de9a639")
    assert not same_message_id(None, None) and not same_message_id("", " ")


def test_registration_date_time_with_microseconds_and_an_offset_is_read_to_the_microsecond():
    """registrationDateTime as РЭМД writes it (microseconds, +03:00) reads as that instant to the microsecond; other
    fraction lengths, Z, no offset (UTC) and the older date-only registrationDate read too; junk reads as None."""
    from datetime import UTC, datetime, timedelta, timezone

    msk = timezone(timedelta(hours=3))
    item = RegistryItem(registration_date_time="2023-09-22T09:27:02.104000+03:00")
    assert item.registered_at == datetime(2023, 9, 22, 9, 27, 2, 104000, tzinfo=msk)
    assert item.registered_at.astimezone(UTC).isoformat() == "2023-09-22T06:27:02.104000+00:00"
    assert soap.parse_date_time("2023-09-22T09:27:02.1041239+03:00").microsecond == 104123
    assert soap.parse_date_time("2023-09-22T06:27:02Z") == datetime(2023, 9, 22, 6, 27, 2, tzinfo=UTC)
    assert soap.parse_date_time("2023-09-22T06:27:02.5") == datetime(
        2023, 9, 22, 6, 27, 2, 500000, tzinfo=UTC
    )
    assert soap.parse_date_time("2023-09-22") == datetime(2023, 9, 22, tzinfo=UTC)
    assert soap.parse_date_time("22.09.2023 09:27") is None and RegistryItem().registered_at is None


def test_store_till_date_with_an_offset_is_read_and_written_back_as_given():
    """storeTillDate as РЭМД writes it, a date with an offset (2048-09-22+03:00, which date.fromisoformat refuses),
    reads as that day in that zone and writes back unchanged; Z, a negative offset and a bare date too."""
    from datetime import date, timedelta, timezone

    till = RegistryItem(store_till_date="2048-09-22+03:00").store_till
    assert till.day == date(2048, 9, 22) and till.offset == timezone(timedelta(hours=3))
    for text in ("2048-09-22+03:00", "2048-09-22Z", "2048-09-22-05:30", "2048-09-22"):
        assert soap.parse_date(text).isoformat() == text
    assert soap.parse_date("2048-02-30+03:00") is None and soap.parse_date("22.09.2048") is None


def test_a_callback_carries_both_date_formats_through_a_round_trip():
    """A registerDocumentResult written with РЭМД's date formats parses back to the same instant and the same day."""
    result = RegisterResult(
        relates_to_message="m",
        status="success",
        registry_item=RegistryItem(
            emdr_id="16.62.1",
            registration_date_time="2023-09-22T09:27:02.104000+03:00",
            store_till_date="2048-09-22+03:00",
        ),
    )
    parsed = soap.parse_register_result(
        soap.build_register_result(result, to="http://mis", key=None, certificate=None)
    ).registry_item
    assert parsed.registered_at.isoformat() == "2023-09-22T09:27:02.104000+03:00"
    assert parsed.store_till.isoformat() == "2048-09-22+03:00"
