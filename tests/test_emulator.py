"""The РЭМД/ИПС emulator over real HTTP, against a fake МИС that serves files and records callbacks."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from lxml import etree

from lab.dev.pki import DevCA, SubjectInfo
from lab.dev.samples import REPOSITORY_SAMPLES
from lab.emulator import Emulator, Rule, System, rejection_for
from lab.emulator.faults import SCENARIOS
from producer.cda import HL7, extract
from producer.errors import PermanentError
from producer.ids import normalize_message_id
from producer.xmlsafe import parse_xml
from services.crypto import cades
from services.remd import names as n
from services.remd import soap
from services.remd.soap import Coded, OrgSignature, Patient, PersonalSignature, Registration, Signer
from services.remd.wssec import verify_envelope

SAMPLE = REPOSITORY_SAMPLES / "CertOnPayForMedServ.xml"
CLIENT = "17c74e63-dc38-438d-a27a-a1aa063ee7b8"
VALID_FROM = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
WAIT = 30.0
CREATED = (
    (dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    .astimezone(dt.timezone(dt.timedelta(hours=3)))
    .replace(second=0, microsecond=0)
)


@pytest.fixture(scope="module")
def pki():
    """A dev CA with the ИС certificate, another ИС's certificate, a doctor and an organisation signer."""
    ca = DevCA.create("test CA")
    meta = extract(parse_xml(SAMPLE.read_bytes()))
    doctor_snils = next(s.snils for s in meta.signers if s.role == "legalAuthenticator")
    return {
        "is": ca.issue(subject=SubjectInfo(family="", common_name="dental-mis-01", org="Клиника")),
        "other_is": ca.issue(subject=SubjectInfo(family="", common_name="someone-else", org="Другая")),
        "doctor": ca.issue(
            subject=SubjectInfo("Вайнулина", "Лариса Ивановна", snils=doctor_snils), not_before=VALID_FROM
        ),
        "org": ca.issue(
            subject=SubjectInfo(family="", org="Клиника", ogrn="1027700000000", inn_le="7700000000"),
            not_before=VALID_FROM,
        ),
        "late_doctor": ca.issue(
            subject=SubjectInfo("Вайнулина", "Лариса Ивановна", snils=doctor_snils),
            not_before=CREATED + dt.timedelta(days=1),
        ),
        "ca": ca,
    }


class FakeMis:
    """The МИС side: serves getDocumentFile with signed replies and records every callback it is sent."""

    def __init__(self, key, certificate, emulator_certificate):
        self.key, self.certificate, self.emulator_certificate = key, certificate, emulator_certificate
        self.files: dict[str, bytes] = {}
        self.registered: dict[str, str] = {}  # emdrId → localUid, learnt from success callbacks
        self.raw_callbacks: list[bytes] = []
        self.callbacks: list[soap.RegisterResult] = []
        self.registry_results: list[soap.RegistryItemResult] = []  # getRegistryItem's answers
        self.file_requests: list[str] = []
        self.fail_callbacks = 0  # answer this many callbacks with HTTP 503 first
        self.events: list[str] = []
        self.cond = threading.Condition()
        mis = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = mis.handle(body)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/emdr/callback"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, body: bytes) -> tuple[int, bytes]:
        verify_envelope(
            body,
            trusted_certificates=[self.emulator_certificate],
            required=("Body", "Timestamp", "MessageID", "Action"),
        )
        root = parse_xml(body)
        op = etree.QName(root.find(".//{*}Body")[0]).localname
        if op == n.GET_DOCUMENT_FILE:
            req = soap.parse_file_request(body)
            uid = req.local_uid or self.registered.get(req.emdr_id)
            with self.cond:
                self.file_requests.append(req.local_uid or f"emdrId:{req.emdr_id}")
                self.events.append(f"file:{req.local_uid}")
            if uid is None:
                return 500, soap.build_fault(
                    code="Client",
                    reason=f"document [{req.emdr_id}] is not known",
                    detail_code="DOCUMENT_NOT_FOUND",
                    key=self.key,
                    certificate=self.certificate,
                    soap_version=req.headers.soap_version,
                )
            return 200, soap.build_file_response(
                relates_to=req.headers.message_id,
                data=self.files[uid],
                key=self.key,
                certificate=self.certificate,
                soap_version=req.headers.soap_version,
            )
        if op == n.GET_REGISTRY_ITEM_RESULT:
            answer = soap.parse_registry_item_result(body)
            with self.cond:
                self.registry_results.append(answer)
                self.cond.notify_all()
            return 200, soap.build_callback_ack(
                relates_to=answer.headers.message_id,
                key=self.key,
                certificate=self.certificate,
                answering=n.GET_REGISTRY_ITEM_RESULT,
            )
        result = soap.parse_register_result(body)
        with self.cond:
            if self.fail_callbacks > 0:
                self.fail_callbacks -= 1
                return 503, b"busy"
            self.callbacks.append(result)
            self.raw_callbacks.append(body)
            if result.registered:
                self.registered[result.registry_item.emdr_id] = result.local_uid
            self.events.append(f"callback:{result.status}")
            self.cond.notify_all()
        return 200, soap.build_callback_ack(
            relates_to=result.headers.message_id, key=self.key, certificate=self.certificate
        )

    def wait_registry_results(self, count: int, timeout: float = WAIT) -> list[soap.RegistryItemResult]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.registry_results) >= count, timeout), (
                self.registry_results
            )
            return list(self.registry_results)

    def wait_callbacks(self, count: int, timeout: float = WAIT) -> list[soap.RegisterResult]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.callbacks) >= count, timeout), self.callbacks
            return list(self.callbacks)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_document(local_uid: str) -> bytes:
    """The sample СЭМД with ClinicalDocument/id/@extension set to ``local_uid``."""
    root = parse_xml(SAMPLE.read_bytes())
    root.find(f"{{{HL7}}}id").set("extension", local_uid)
    # the sample predates its kind's start in НСИ 1520: date it a month ago, as a fresh document would be
    root.find(f"{{{HL7}}}effectiveTime").set("value", CREATED.strftime("%Y%m%d%H%M+0300"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def make_registration(
    data: bytes,
    pki,
    *,
    doctor="doctor",
    org=True,
    snils=None,
    doctor_time=None,
    org_time=None,
    local_uid=None,
) -> Registration:
    meta = extract(parse_xml(data))
    la = next(s for s in meta.signers if s.role == "legalAuthenticator")
    dkey, dcert = pki[doctor]
    okey, ocert = pki["org"]
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    doctor_sig = cades.sign_detached(data, key=dkey, certificate=dcert, signing_time=doctor_time or t0)
    org_sig = cades.sign_detached(
        data, key=okey, certificate=ocert, signing_time=org_time or t0 + dt.timedelta(minutes=1)
    )
    p = meta.patient
    return Registration(
        kind=meta.kind_code,
        system=CLIENT,
        organization=meta.organization_oid,
        department=meta.department_oid,
        local_uid=local_uid or meta.local_uid,
        document_number=meta.document_number,
        creation_date_time=meta.creation_time.isoformat(),
        patient=Patient(
            snils=snils or p.snils,
            local_id=p.local_id,
            family=p.family,
            given=p.given,
            patronymic=p.patronymic,
            gender=p.gender,
            birth_date=p.birth_date.isoformat(),
        ),
        personal_signatures=(
            PersonalSignature(
                signer=Signer(
                    role=Coded("DOCTOR", "2.4"),
                    position=Coded(la.position_code, la.position_version),
                    local_id=la.local_id,
                    snils=la.snils,
                    family=la.family,
                    given=la.given,
                    patronymic=la.patronymic,
                ),
                signature=doctor_sig,
            ),
        ),
        org_signature=OrgSignature(signature=org_sig) if org else None,
    )


@pytest.fixture
def world(pki):
    """A running emulator (scenario ok unless re-created) and the fake МИС registered with it."""
    made = []

    def make(scenario="ok", **kw):
        emu = Emulator(
            scenario=scenario,
            systems=[System.of(CLIENT, [pki["is"][1]], "dental-mis-01")],
            backoff=0.05,
            backoff_max=0.2,
            http_timeout=5.0,
            **kw,
        ).start()
        mis = FakeMis(*pki["is"], emu.certificate)
        made.append((emu, mis))
        return emu, mis

    yield make
    for emu, mis in made:
        emu.stop()
        mis.close()


def send(
    emu,
    mis,
    pki,
    local_uid=None,
    *,
    data=None,
    reg=None,
    key=None,
    certificate=None,
    client=CLIENT,
    message_id=None,
    timeout=10.0,
):
    """Register one document: returns (parsed sync answer, MessageID)."""
    local_uid = local_uid or str(uuid.uuid4())
    data = data or make_document(local_uid)
    mis.files.setdefault(local_uid, data)
    reg = reg or make_registration(data, pki)
    k, c = pki["is"]
    xml, mid = soap.build_register_document(
        reg,
        client_entity_id=client,
        to=emu.url,
        reply_to=mis.url,
        key=key or k,
        certificate=certificate or c,
        message_id=message_id,
    )
    r = httpx.post(emu.url, content=xml, timeout=timeout, headers={"Content-Type": "application/soap+xml"})
    return soap.parse_answer(r.content), mid


# --- the happy path and the registry ------------------------------------------------------------


def test_happy_path_registers_and_calls_back(world, pki):
    """An accepted request is followed by a file pull and a signed success callback with an emdrId."""
    emu, mis = world()
    answer, mid = send(emu, mis, pki, "doc-1")
    assert isinstance(answer, soap.SyncAnswer) and answer.accepted
    assert normalize_message_id(answer.headers.relates_to) == mid
    [cb] = mis.wait_callbacks(1)
    assert cb.registered and cb.relates_to_message == mid and cb.local_uid == "doc-1"
    assert mis.file_requests == ["doc-1"]
    emdr = cb.registry_item.emdr_id
    assert __import__("re").fullmatch(r"\d{2}\.\d{2}\.\d{2}\.\d{2}\.\d{9}", emdr)
    assert cb.registry_item.registration_date_time
    record = emu.registry.by_emdr_id(emdr)
    assert record.local_uid == "doc-1" and record.message_id == mid
    entry = emu.registry.requests(operation="registerDocument")[0]
    emu.registry.wait_for(lambda r: entry.finished_at is not None, timeout=WAIT)
    assert (
        entry.outcome == "registered"
        and entry.callbacks[0]["delivered"]
        and "ack_problem" not in entry.callbacks[0]
    )


def test_control_api_over_http(world, pki):
    """/_emulator/registry, /requests, /health, /rules and /reset answer JSON about the same state."""
    emu, mis = world()
    send(emu, mis, pki, "doc-api")
    mis.wait_callbacks(1)
    registry = httpx.get(f"{emu.base_url}/_emulator/registry").json()
    assert [r["local_uid"] for r in registry] == ["doc-api"]
    requests = httpx.get(
        f"{emu.base_url}/_emulator/requests", params={"operation": "registerDocument"}
    ).json()
    assert requests[0]["local_uid"] == "doc-api" and requests[0]["client_entity_id"] == CLIENT
    assert httpx.get(f"{emu.base_url}/_emulator/health").json()["status"] == "ok"
    r = httpx.post(f"{emu.base_url}/_emulator/rules", json={"rules": [{"fault": "reset", "nth": 1}]})
    assert r.status_code == 200 and r.json() == {"rules": 1}
    assert (
        httpx.post(f"{emu.base_url}/_emulator/rules", json={"rules": [{"fault": "nope"}]}).status_code == 400
    )
    assert httpx.post(f"{emu.base_url}/_emulator/reset").status_code == 200
    assert httpx.get(f"{emu.base_url}/_emulator/registry").json() == []
    assert httpx.get(f"{emu.base_url}/_emulator/rules").json()["rules"] == []
    pem = httpx.get(f"{emu.base_url}/_emulator/certificate").content
    assert pem == emu.certificate.to_pem()


def test_search_finds_a_registration_and_get_registry_item_answers_it_on_the_callback(world, pki):
    """searchRegistryItem finds the registered document by organisation at once; getRegistryItem is only acknowledged,
    and its record (both date formats) comes to the ReplyTo as a getRegistryItemResult naming the request; another ИС
    is told REGISTRY_ITEM_NOT_FOUND the same way; an anonymous ReplyTo is refused."""
    emu, mis = world()
    send(emu, mis, pki, "doc-poll")
    [cb] = mis.wait_callbacks(1)
    k, c = pki["is"]
    xml, _ = soap.build_search_request(
        soap.SearchQuery(organization=cb.organization),
        client_entity_id=CLIENT,
        to=emu.url,
        key=k,
        certificate=c,
    )
    found = soap.parse_search_response(httpx.post(emu.url, content=xml).content)
    assert [i.local_uid for i in found.items] == ["doc-poll"]
    emdr_id = cb.registry_item.emdr_id
    xml, mid = soap.build_get_registry_item(
        emdr_id=emdr_id, client_entity_id=CLIENT, to=emu.url, reply_to=mis.url, key=k, certificate=c
    )
    ack = soap.parse_registry_item_response(httpx.post(emu.url, content=xml).content)
    assert ack.accepted and normalize_message_id(ack.headers.relates_to) == mid
    [answer] = mis.wait_registry_results(1)
    assert answer.found and normalize_message_id(answer.relates_to_message) == mid
    item = answer.registry_item
    assert (item.local_uid, item.emdr_id) == ("doc-poll", emdr_id)
    assert item.registered_at.utcoffset() == dt.timedelta(hours=3) and "." in item.registration_date_time
    assert item.store_till_date.endswith("+03:00") and item.store_till.day > dt.date.today()
    emu.add_system(System.of("other", [pki["other_is"][1]]))
    xml, other = soap.build_get_registry_item(
        emdr_id=emdr_id,
        client_entity_id="other",
        to=emu.url,
        reply_to=mis.url,
        key=pki["other_is"][0],
        certificate=pki["other_is"][1],
    )
    assert soap.parse_registry_item_response(httpx.post(emu.url, content=xml).content).accepted
    refused = mis.wait_registry_results(2)[1]
    assert normalize_message_id(refused.relates_to_message) == other and not refused.found
    assert refused.registry_item is None and refused.errors[0].code == "REGISTRY_ITEM_NOT_FOUND"
    xml, _ = soap.build_get_registry_item(
        emdr_id=emdr_id, client_entity_id=CLIENT, to=emu.url, reply_to=n.WSA_ANONYMOUS, key=k, certificate=c
    )
    fault = soap.parse_registry_item_response(httpx.post(emu.url, content=xml).content)
    assert isinstance(fault, soap.SoapFault) and fault.ips_fault == "ValidationFault"


def test_a_lost_registry_answer_is_never_sent_and_a_duplicated_one_twice(world, pki):
    """callback_lost and callback_duplicate rules on getRegistryItem: the first answer never reaches the МИС, the next
    one reaches it twice under two MessageIDs naming the same request."""
    emu, mis = world()
    send(emu, mis, pki, "doc-faults")
    [cb] = mis.wait_callbacks(1)
    emu.faults.add([Rule(fault="callback_lost", operation="getRegistryItem", times=1)])
    emu.faults.add([Rule(fault="callback_duplicate", operation="getRegistryItem", nth=2)])
    k, c = pki["is"]

    def ask() -> str:
        xml, mid = soap.build_get_registry_item(
            emdr_id=cb.registry_item.emdr_id,
            client_entity_id=CLIENT,
            to=emu.url,
            reply_to=mis.url,
            key=k,
            certificate=c,
        )
        assert soap.parse_registry_item_response(httpx.post(emu.url, content=xml).content).accepted
        return mid

    lost, twice = ask(), ask()
    answers = mis.wait_registry_results(2)
    assert [normalize_message_id(a.relates_to_message) for a in answers] == [twice, twice]
    assert len({a.headers.message_id for a in answers}) == 2
    entries = emu.registry.requests(operation="getRegistryItem")
    assert [c["kind"] for c in entries[0].callbacks] == ["lost"] and normalize_message_id(
        entries[0].message_id
    ) == lost


def test_old_dialect_request_gets_the_unmarshalling_fault(world, pki):
    """A signed request in our first guess's names (personalSigns, organizationSign) is refused as a
    schema-validating service refuses it: a client-side ValidationFault naming the unexpected element; no file
    is pulled."""
    from lxml import etree

    from services.remd import names as n
    from services.remd.wssec import sign_envelope

    emu, mis = world()
    data = make_document("doc-old")
    mis.files["doc-old"] = data
    xml, _ = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=None,
        certificate=None,
    )
    root = etree.fromstring(xml)
    for new_name, old_name in (
        (n.PERSONAL_SIGNATURES, "personalSigns"),
        (n.ORG_SIGNATURE, "organizationSign"),
    ):
        root.find(f".//{{{n.NS_EMDR_SERVICE}}}{new_name}").tag = f"{{{n.NS_EMDR_SERVICE}}}{old_name}"
    signed = sign_envelope(root, key=pki["is"][0], certificate=pki["is"][1])
    r = httpx.post(emu.url, content=signed, timeout=10, headers={"Content-Type": "application/soap+xml"})
    fault = soap.parse_answer(r.content)
    assert r.status_code == 500 and isinstance(fault, soap.SoapFault) and not fault.server_side
    assert fault.ips_fault == "ValidationFault" and fault.detail_code == "VALIDATION_ERROR"
    assert "Unmarshalling Error" in fault.reason and 'local:"personalSigns"' in fault.reason
    assert mis.file_requests == []


# --- authorisation --------------------------------------------------------------------------------


def test_unsigned_request_is_refused(world, pki):
    """A request without WS-Security gets an AuthorizationFault and nothing is pulled or called back."""
    emu, mis = world()
    data = make_document("doc-unsigned")
    mis.files["doc-unsigned"] = data
    xml, _ = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=None,
        certificate=None,
    )
    answer = soap.parse_answer(httpx.post(emu.url, content=xml).content)
    assert isinstance(answer, soap.SoapFault) and answer.ips_fault == "AuthorizationFault"
    assert emu.registry.requests()[0].outcome == "fault" and mis.file_requests == []


def test_forged_request_is_refused(world, pki):
    """A body changed after signing fails the WS-Security digest: AuthorizationFault."""
    emu, mis = world()
    data = make_document("doc-forged")
    k, c = pki["is"]
    xml, _ = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=k,
        certificate=c,
    )
    forged = xml.replace(b"doc-forged", b"doc-forgeX")
    answer = soap.parse_answer(httpx.post(emu.url, content=forged).content)
    assert isinstance(answer, soap.SoapFault) and answer.ips_fault == "AuthorizationFault"
    assert "WSS_DIGEST_MISMATCH" in answer.detail_message


def test_wrong_is_certificate_is_refused(world, pki):
    """A valid signature by a certificate not registered for the clientEntityId is refused."""
    emu, mis = world()
    answer, _ = send(emu, mis, pki, "doc-other", key=pki["other_is"][0], certificate=pki["other_is"][1])
    assert isinstance(answer, soap.SoapFault) and answer.ips_fault == "AuthorizationFault"
    answer, _ = send(emu, mis, pki, "doc-unknown", client="00000000-0000-0000-0000-000000000000")
    assert isinstance(answer, soap.SoapFault) and answer.ips_fault == "AuthorizationFault"
    assert emu.registry.records() == []


# --- the РЭМД checks ------------------------------------------------------------------------------


def test_digest_mismatch_when_mis_serves_other_bytes(world, pki):
    """The МИС answering getDocumentFile with bytes other than the signed ones gets DIGEST_MISMATCH."""
    emu, mis = world()
    data = make_document("doc-digest")
    reg = make_registration(data, pki)
    mis.files["doc-digest"] = data.replace(b"</ClinicalDocument>", b"<!-- changed --></ClinicalDocument>")
    send(emu, mis, pki, "doc-digest", data=data, reg=reg)
    [cb] = mis.wait_callbacks(1)
    assert cb.status == "error" and [e.code for e in cb.errors] == ["DIGEST_MISMATCH"]
    assert emu.registry.records() == []


def test_not_unique_provided_id_on_second_registration(world, pki):
    """A second registration of the same localUid is answered NOT_UNIQUE_PROVIDED_ID; the registry keeps one."""
    emu, mis = world()
    data = make_document("doc-twice")
    send(emu, mis, pki, "doc-twice", data=data)
    mis.wait_callbacks(1)
    send(emu, mis, pki, "doc-twice", data=data)
    first, second = mis.wait_callbacks(2)
    assert first.registered
    assert second.status == "error" and second.errors[0].code == "NOT_UNIQUE_PROVIDED_ID"
    assert first.registry_item.emdr_id in second.errors[0].message
    assert len(emu.registry.records()) == 1


def test_changed_bytes_under_a_registered_local_uid_are_refused_in_plain_words(world, pki):
    """Other bytes under a localUid already registered are NOT_UNIQUE_PROVIDED_ID whose message says the content
    differs and a changed СЭМД needs a new localUid (a resend of the same bytes is told apart)."""
    emu, mis = world()
    first = make_document("doc-edited")
    send(emu, mis, pki, "doc-edited", data=first)
    mis.wait_callbacks(1)
    edited = first.replace(b"</ClinicalDocument>", b"<!-- edited --></ClinicalDocument>")
    mis.files["doc-edited"] = edited
    send(emu, mis, pki, "doc-edited", data=edited, reg=make_registration(edited, pki))
    _, second = mis.wait_callbacks(2)
    assert [e.code for e in second.errors] == ["NOT_UNIQUE_PROVIDED_ID"]
    assert "другим содержимым" in second.errors[0].message and "новым localUid" in second.errors[0].message
    mis.files["doc-edited"] = first
    send(emu, mis, pki, "doc-edited", data=first)
    *_, third = mis.wait_callbacks(3)
    assert (
        third.errors[0].code == "NOT_UNIQUE_PROVIDED_ID"
        and "другим содержимым" not in third.errors[0].message
    )


def test_local_uid_is_unique_per_information_system(world, pki):
    """The same localUid registered by another information system is its own registration, not a duplicate."""
    emu, mis = world()
    data = make_document("doc-shared-uid")
    send(emu, mis, pki, "doc-shared-uid", data=data)
    [mine] = mis.wait_callbacks(1)
    emu.add_system(System.of("other", [pki["other_is"][1]]))
    other = FakeMis(*pki["other_is"], emu.certificate)
    try:
        send(
            emu,
            other,
            pki,
            "doc-shared-uid",
            data=data,
            client="other",
            key=pki["other_is"][0],
            certificate=pki["other_is"][1],
        )
        [theirs] = other.wait_callbacks(1)
    finally:
        other.close()
    assert mine.registered and theirs.registered
    assert mine.registry_item.emdr_id != theirs.registry_item.emdr_id and len(emu.registry.records()) == 2


def test_ips_variants_scenario_sends_every_shape_and_asks_again_by_emdr_id(world, pki):
    """ips-variants: a few registrations' callbacks come in SOAP 1.1 and 1.2, with unprefixed WS-Addressing, both
    anonymous URIs, every relatesToMessage spelling (each normalising to the request's MessageID), kind forms,
    registrationDate and ...DateTime, warnings; each registered document is then asked for by emdrId and served
    exactly its registered bytes."""
    from lab.emulator.variants import DIMENSIONS

    emu, mis = world("ips-variants")
    count = max(len(options) for options in DIMENSIONS.values())
    sent = [send(emu, mis, pki, f"doc-variant-{i}")[1] for i in range(count)]
    callbacks = mis.wait_callbacks(count)
    assert all(cb.registered for cb in callbacks)
    assert {normalize_message_id(cb.relates_to_message) for cb in callbacks} == set(sent)
    assert len({cb.relates_to_message for cb in callbacks}) == count  # spelled differently each time
    raw = b"".join(mis.raw_callbacks)
    assert n.NS_SOAP11.encode() in raw and n.NS_SOAP12.encode() in raw
    assert f'xmlns="{n.NS_WSA}"'.encode() in raw and n.WSA_ANONYMOUS_2004.encode() in raw
    kind = callbacks[0].kind
    assert (
        {cb.kind for cb in callbacks} == {kind}
        and f'kind code="{kind}"'.encode() in raw
        and b"<cb:kind><cb:code>" in raw
    )
    assert n.REGISTRATION_DATE.encode() + b">" in raw and n.REGISTRATION_DATE_TIME.encode() in raw
    assert any(cb.registry_item.warnings for cb in callbacks) and any(cb.document_status for cb in callbacks)
    entries = emu.registry.requests(operation="registerDocument")
    assert emu.registry.wait_for(
        lambda r: all(e.later_pull not in (None, "pending") for e in entries), timeout=WAIT
    )
    assert [e.later_pull for e in entries] == ["ok"] * count
    assert sum(1 for f in mis.file_requests if f.startswith("emdrId:")) >= count


def test_patient_snils_mismatch(world, pki):
    """A patient СНИЛС in the request that differs from the СЭМД is rejected naming the СНИЛС."""
    emu, mis = world()
    data = make_document("doc-snils")
    send(emu, mis, pki, "doc-snils", data=data, reg=make_registration(data, pki, snils="11122233344"))
    [cb] = mis.wait_callbacks(1)
    assert cb.status == "error" and [e.code for e in cb.errors] == ["VALIDATION_ERROR"]
    assert "СНИЛС пациента" in cb.errors[0].message


def test_local_uid_mismatch(world, pki):
    """A request localUid that is not the СЭМД's id is rejected."""
    emu, mis = world()
    data = make_document("doc-in-file")
    mis.files["doc-in-request"] = data
    send(
        emu,
        mis,
        pki,
        "doc-in-request",
        data=data,
        reg=make_registration(data, pki, local_uid="doc-in-request"),
    )
    [cb] = mis.wait_callbacks(1)
    assert cb.status == "error" and "Идентификатор документа" in cb.errors[0].message


def test_certificate_not_valid_on_creation_date(world, pki):
    """A doctor's certificate issued after the document was created gives PERSONAL_SIG_CERT_NOT_ACTUAL_ON_DOC_CREATION_DT."""
    emu, mis = world()
    data = make_document("doc-cert-date")
    send(emu, mis, pki, "doc-cert-date", data=data, reg=make_registration(data, pki, doctor="late_doctor"))
    [cb] = mis.wait_callbacks(1)
    assert [e.code for e in cb.errors] == ["PERSONAL_SIG_CERT_NOT_ACTUAL_ON_DOC_CREATION_DT"]


def test_signing_time_order(world, pki):
    """An organisation signature older than the doctor's breaks the order doctor ≤ organisation."""
    emu, mis = world()
    data = make_document("doc-order")
    now = dt.datetime.now(dt.UTC)
    reg = make_registration(
        data, pki, doctor_time=now - dt.timedelta(minutes=1), org_time=now - dt.timedelta(hours=1)
    )
    send(emu, mis, pki, "doc-order", data=data, reg=reg)
    [cb] = mis.wait_callbacks(1)
    assert cb.status == "error" and "позже подписи МО" in cb.errors[0].message


def test_missing_organization_signature_is_a_sync_error(world, pki):
    """A kind that needs the МО signature, sent without it, is refused synchronously with no callback."""
    emu, mis = world()
    data = make_document("doc-no-org")
    answer, _ = send(emu, mis, pki, "doc-no-org", data=data, reg=make_registration(data, pki, org=False))
    assert isinstance(answer, soap.SyncAnswer) and not answer.accepted
    assert [e.code for e in answer.errors] == ["ORG_SIGNATURE_OCCURRENCE_MISMATCH"]
    assert mis.file_requests == []


def test_callback_retried_when_mis_answers_5xx(world, pki):
    """The result callback is retried while the МИС answers 503, and delivered once it answers 200."""
    emu, mis = world()
    mis.fail_callbacks = 2
    send(emu, mis, pki, "doc-retry")
    [cb] = mis.wait_callbacks(1)
    assert cb.registered
    entry = emu.registry.requests()[0]
    emu.registry.wait_for(lambda r: entry.finished_at is not None, timeout=WAIT)
    assert [a.get("http_status") for a in entry.callbacks] == [503, 503, 200]


# --- fault injection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,check",
    [
        ("http_error", lambda r, e: r.status_code == 503),
        ("malformed", lambda r, e: r.status_code == 200 and _not_xml(r.content)),
        ("rate_limit", lambda r, e: soap.parse_answer(r.content).errors[0].code == "RATE_LIMIT"),
        ("soap_fault", lambda r, e: soap.parse_answer(r.content).ips_fault == "SystemFault"),
    ],
)
def test_sync_faults_answer_as_configured(world, pki, fault, check):
    """Each answered fault kind comes back as configured and the request is not processed."""
    emu, mis = world()
    emu.faults.add([Rule(fault=fault, local_uid="doc-f")])
    data = make_document("doc-f")
    mis.files["doc-f"] = data
    k, c = pki["is"]
    xml, _ = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=k,
        certificate=c,
    )
    r = httpx.post(emu.url, content=xml, timeout=10)
    assert check(r, emu)
    assert emu.registry.requests()[0].outcome == f"injected:{fault}"
    assert mis.file_requests == [] and emu.registry.records() == []


def _not_xml(body: bytes) -> bool:
    try:
        parse_xml(body)
    except PermanentError:
        return True
    return False


def test_timeout_and_reset_faults(world, pki):
    """A held connection times the client out; a reset is seen as a connection error; then it works."""
    emu, mis = world()
    emu.faults.add([Rule(fault="timeout", nth=1, delay=3.0), Rule(fault="reset", nth=2)])
    with pytest.raises(httpx.ReadTimeout):
        send(emu, mis, pki, "doc-t", timeout=0.5)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        send(emu, mis, pki, "doc-t")
    answer, _ = send(emu, mis, pki, "doc-t")
    assert answer.accepted
    assert mis.wait_callbacks(1)[0].registered


def test_latency_and_processed_but_lost_answer(world, pki):
    """latency still answers; an http_error with process=True registers the document although the МИС saw 503."""
    emu, mis = world()
    emu.faults.add([Rule(fault="latency", nth=1, delay=0.3), Rule(fault="http_error", nth=2, process=True)])
    answer, _ = send(emu, mis, pki, "doc-lat")
    assert answer.accepted
    data = make_document("doc-lost")
    mis.files["doc-lost"] = data
    k, c = pki["is"]
    xml, mid = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=k,
        certificate=c,
    )
    assert httpx.post(emu.url, content=xml).status_code == 503
    callbacks = mis.wait_callbacks(2)
    assert {cb.local_uid for cb in callbacks if cb.registered} == {"doc-lat", "doc-lost"}


def test_callback_faults(world, pki):
    """Lost, duplicated, out-of-order and early callbacks each happen as configured."""
    emu, mis = world()
    emu.faults.add(
        [
            Rule(fault="callback_lost", local_uid="lost"),
            Rule(fault="callback_duplicate", local_uid="dup"),
            Rule(fault="callback_out_of_order", local_uid="ooo"),
            Rule(fault="callback_early", local_uid="early"),
            Rule(fault="callback_late", local_uid="late", delay=0.5),
        ]
    )
    for uid in ("lost", "dup", "ooo", "late"):
        send(emu, mis, pki, uid)
    mis.wait_callbacks(5)  # dup ×2, ooo ×2, late ×1
    answer, _ = send(emu, mis, pki, "early")
    assert answer.accepted
    with mis.cond:  # the early callback was recorded before the synchronous answer came back
        assert "callback:success" == mis.events[-1] and len(mis.callbacks) == 6
    by_uid: dict[str, list[str]] = {}
    for cb in mis.callbacks:
        by_uid.setdefault(cb.local_uid, []).append(cb.status)
    assert "lost" not in by_uid
    assert by_uid["dup"] == ["success", "success"]
    assert by_uid["ooo"] == ["success", "error"]
    assert by_uid["late"] == ["success"] and by_uid["early"] == ["success"]
    assert len(emu.registry.records()) == 5  # the lost one is registered all the same: polling finds it


# --- scenarios ------------------------------------------------------------------------------------


def test_rejections_scenario_is_deterministic(world, pki):
    """In `rejections`, exactly the documents rejection_for() names are rejected, with that code."""
    uids = [f"rej-{i}" for i in range(40)]
    expected = {u: rejection_for(u) for u in uids}
    doomed = [u for u, e in expected.items() if e is not None]
    assert 0 < len(doomed) < 15 and expected == {u: rejection_for(u) for u in uids}
    emu, mis = world("rejections")
    picked = doomed[:2] + [u for u in uids if u not in doomed][:2]
    for uid in picked:
        send(emu, mis, pki, uid)
    mis.wait_callbacks(len(picked))
    for cb in mis.callbacks:
        if cb.local_uid in doomed:
            assert [e.code for e in cb.errors] == [expected[cb.local_uid].code]
        else:
            assert cb.registered


def test_outage_scenario_503_then_back(world, pki):
    """`outage` answers 503 from the first request for the configured time, then registers normally."""
    emu, mis = world("outage", outage_seconds=1.0)
    data = make_document("doc-outage")
    mis.files["doc-outage"] = data
    k, c = pki["is"]
    xml, _ = soap.build_register_document(
        make_registration(data, pki),
        client_entity_id=CLIENT,
        to=emu.url,
        reply_to=mis.url,
        key=k,
        certificate=c,
    )
    r = httpx.post(emu.url, content=xml)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert emu.registry.requests()[0].outcome == "injected:outage" and mis.file_requests == []
    while emu.outage.down():
        time.sleep(0.1)
    assert soap.parse_answer(httpx.post(emu.url, content=xml).content).accepted
    assert mis.wait_callbacks(1)[0].registered


def test_outage_refused_mode(world, pki):
    """In refused mode the port stops listening during the outage and listens again afterwards."""
    emu, mis = world("outage", outage_seconds=1.0, outage_from="start", outage_mode="refused")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.base_url}/_emulator/health", timeout=2)
    while emu.outage.down():
        time.sleep(0.1)
    for _ in range(50):
        try:
            assert httpx.get(f"{emu.base_url}/_emulator/health", timeout=2).json()["status"] == "ok"
            break
        except httpx.ConnectError:
            time.sleep(0.1)
    else:
        pytest.fail("the emulator did not come back")


@pytest.mark.integration
def test_list_scenarios_cli():
    """`emd emulator --list-scenarios` prints every scenario, one line each."""
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "emulator", "--list-scenarios"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)


@pytest.mark.integration
def test_emulator_runs_as_a_subprocess(tmp_path, pki):
    """`emd emulator --port P --systems FILE` serves until terminated and loads the systems file."""
    (tmp_path / "is.pem").write_bytes(pki["is"][1].to_pem())
    (tmp_path / "systems.json").write_text(
        json.dumps({"systems": [{"clientEntityId": CLIENT, "name": "dental", "certificates": ["is.pem"]}]})
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "emulator",
            "--port",
            str(port),
            "--systems",
            str(tmp_path / "systems.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        health = httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=5).json()
        assert health["scenario"] == "ok"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_flaky_scenario_a_retrying_client_registers_everything_once(world, pki):
    """Under `flaky`, a client that retries transient failures gets every document registered exactly once."""
    emu, mis = world("flaky", seed=3)
    uids = [f"flaky-{i}" for i in range(8)]
    message_ids: dict[str, set[str]] = {u: set() for u in uids}
    for uid in uids:
        data = make_document(uid)
        mis.files[uid] = data
        reg = make_registration(data, pki)
        for _attempt in range(30):
            k, c = pki["is"]
            xml, mid = soap.build_register_document(
                reg, client_entity_id=CLIENT, to=emu.url, reply_to=mis.url, key=k, certificate=c
            )
            message_ids[uid].add(mid)
            try:
                r = httpx.post(emu.url, content=xml, timeout=1.0)
                answer = soap.parse_answer(r.content)
            except (httpx.HTTPError, PermanentError):
                continue
            if isinstance(answer, soap.SyncAnswer) and answer.accepted:
                break
            assert (
                isinstance(answer, soap.SoapFault)
                and answer.server_side
                or [e.code for e in answer.errors] == ["RATE_LIMIT"]
            ), answer
        else:
            pytest.fail(f"{uid} never accepted")
    assert emu.registry.wait_for(lambda r: len(r.records()) == len(uids), timeout=WAIT)
    injected = [f for e in emu.registry.requests() for f in e.faults]
    assert injected, "the scenario injected nothing"
    records = {r.local_uid: r for r in emu.registry.records()}
    assert set(records) == set(uids)
    for uid, record in records.items():
        assert record.message_id in message_ids[uid]
    with mis.cond:
        assert mis.cond.wait_for(
            lambda: {c.local_uid for c in mis.callbacks if c.registered} == set(uids), WAIT
        )
        codes = {e.code for cb in mis.callbacks for e in cb.errors}
    assert codes <= {"NOT_UNIQUE_PROVIDED_ID"}


def test_a_restarted_emulator_keeps_its_registry_and_finishes_what_it_accepted(world, pki, tmp_path):
    """With a state dir, a registration whose callback was pending when the emulator stopped is called back by
    the next start, once and as registered — without pulling the file again, so a МИС that cannot serve it then
    does not turn it into an error — and the registry still refuses a second registration of that localUid."""
    identity = pki["ca"].issue(subject=SubjectInfo(family="", common_name="ИПС (эмулятор)", org="emulator"))
    emu, mis = world(key=identity[0], certificate=identity[1], state_dir=tmp_path)
    emu.faults.add([Rule(fault="callback_late", local_uid="doc-kept", delay=120)])
    data = make_document("doc-kept")
    answer, mid = send(emu, mis, pki, "doc-kept", data=data)
    assert answer.accepted and emu.registry.wait_for(lambda r: len(r.records()) == 1, timeout=WAIT)
    emu.stop()  # as a restart would: the callback has not left
    assert mis.callbacks == [] and mis.file_requests == ["doc-kept"]
    mis.files.pop("doc-kept")  # the МИС could not serve it now

    again, _ = world(key=identity[0], certificate=identity[1], state_dir=tmp_path)
    [first] = mis.wait_callbacks(1)
    assert first.registered and normalize_message_id(first.relates_to_message) == mid
    assert mis.file_requests == ["doc-kept"]
    mis.files["doc-kept"] = data
    send(again, mis, pki, "doc-kept", data=data)
    second = mis.wait_callbacks(2)[1]
    assert second.status == "error" and second.errors[0].code == "NOT_UNIQUE_PROVIDED_ID"
    assert [r.emdr_id for r in again.registry.records()] == [first.registry_item.emdr_id]


def test_without_a_state_dir_a_restart_forgets(world, pki):
    """The default emulator is a fresh test stand at every start: nothing registered before is known."""
    emu, mis = world()
    send(emu, mis, pki, "doc-forgotten")
    mis.wait_callbacks(1)
    emu.stop()
    fresh, _ = world()
    assert fresh.registry.records() == []


def test_state_dir_skips_a_registration_cut_short_by_a_kill(tmp_path):
    """A registry line torn by kill -9 is left out on restart (its callback never left); whole lines are kept."""
    from lab.emulator.state import StateDir

    state = StateDir(tmp_path)
    state.append_record({"local_uid": "a"})
    with state.registry_file.open("a") as f:
        f.write('{"local_uid": "b", "emdr')
    assert StateDir(tmp_path).records() == [{"local_uid": "a"}]


def test_a_signature_from_an_unaccredited_ca_is_rejected_when_accredited_cas_are_given(world, pki):
    """With accredited CAs, a doctor's certificate issued by any other CA gets CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT;
    one of theirs registers."""
    foreign = DevCA.create("foreign CA")
    doctor = foreign.issue(
        subject=SubjectInfo("Вайнулина", "Лариса Ивановна", snils=pki["doctor"][1].snils),
        not_before=VALID_FROM,
    )
    emu, mis = world(accredited=[pki["ca"].certificate])
    data = make_document("doc-foreign-ca")
    send(
        emu,
        mis,
        pki,
        "doc-foreign-ca",
        data=data,
        reg=make_registration(data, {**pki, "stranger": doctor}, doctor="stranger"),
    )
    send(emu, mis, pki, "doc-accredited")
    by_uid = {cb.local_uid: cb for cb in mis.wait_callbacks(2)}
    assert [e.code for e in by_uid["doc-foreign-ca"].errors] == [
        "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT"
    ]
    assert by_uid["doc-accredited"].registered
