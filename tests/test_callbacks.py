"""The callback protocol (services.pipeline.callbacks) without HTTP: verification, persistence before ack, files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree
from structlog.testing import capture_logs

from lab.dev.pki import DevCA, SubjectInfo
from producer.errors import PermanentError
from services.pipeline.callbacks import (
    CallbackService,
    ReplayCache,
    ReplyCredential,
    ReplyKeys,
    RequestTooLarge,
    read_limited,
)
from services.remd import names as n
from services.remd import soap
from services.remd.soap import RegisterResult, RegistryItem
from services.remd.wssec import sign_envelope, verify_envelope

REPLY_REFS = ("Body", "Timestamp", "MessageID", "Action")


@pytest.fixture(scope="module")
def pki():
    ca = DevCA.create("callbacks test CA")
    return {
        "ips": ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ")),
        "mis": ca.issue(subject=SubjectInfo(family="", common_name="МИС", org="Клиника")),
        "rogue": ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ")),
    }


class Harness:
    def __init__(
        self, pki, *, broker_down: bool = False, files: dict | None = None, registered: dict | None = None
    ):
        self.published: list[tuple[str, bytes]] = []
        self.broker_down = broker_down
        self.files = files or {}
        self.registered = registered or {}  # emdrId → localUid

        async def publish(key, value):
            if self.broker_down:
                raise ConnectionError("broker unreachable")
            self.published.append((key, value))

        async def lookup(local_uid):
            return self.files.get(local_uid)

        async def by_emdr_id(emdr_id):
            return self.registered.get(emdr_id)

        self.service = CallbackService(
            trusted_certificates=[pki["ips"][1]],
            key=pki["mis"][0],
            certificate=pki["mis"][1],
            publish=publish,
            lookup_file=lookup,
            lookup_emdr_id=by_emdr_id,
        )

    def handle(self, body):
        return asyncio.run(self.service.handle(body))


def result_body(
    pki, signer="ips", *, relates="URN:UUID:5F0C1E2A-0000-4000-8000-000000000001", status="success"
):
    key, cert = pki[signer]
    item = (
        RegistryItem(emdr_id="16.62.1", registration_date_time="2026-01-01T10:00:00+03:00")
        if status == "success"
        else None
    )
    return soap.build_register_result(
        RegisterResult(relates_to_message=relates, status=status, local_uid="d-1", registry_item=item),
        to="http://mis/cb",
        key=key,
        certificate=cert,
    )


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


def _registry_answer(pki, signer="ips", relates="<5F0C1E2A-0000-4000-8000-000000000003>"):
    key, cert = pki[signer]
    return soap.build_registry_item_result(
        soap.RegistryItemResult(
            relates_to_message=relates,
            status="success",
            registry_item=RegistryItem(
                emdr_id="16.62.1",
                local_uid="d-1",
                registration_date_time="2023-09-22T09:27:02.104000+03:00",
                store_till_date="2048-09-22+03:00",
            ),
        ),
        to="http://mis/cb",
        key=key,
        certificate=cert,
    )


def test_a_registry_answer_is_persisted_then_acked_as_its_own_operation(pki):
    """A signed getRegistryItemResult is published under the normalised relatesToMessage (its mail-style spelling
    too), then acknowledged with a signed getRegistryItemResultResponse relating to its MessageID."""
    h = Harness(pki)
    body = _registry_answer(pki)
    reply = h.handle(body)
    assert reply.status == 200 and reply.outcome == "accepted"
    assert h.published == [("5f0c1e2a-0000-4000-8000-000000000003", body)]
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
    ack = soap.parse_callback_ack(reply.body)
    assert ack.headers.relates_to == soap.parse_registry_item_result(body).headers.message_id
    assert ack.headers.action == n.ACTION_GET_REGISTRY_ITEM_RESULT_RESPONSE


def test_a_forged_registry_answer_is_refused_and_not_published(pki):
    """A getRegistryItemResult signed by an unpinned certificate is a Client fault and never reaches the topic."""
    h = Harness(pki)
    reply = h.handle(_registry_answer(pki, "rogue"))
    assert reply.outcome == "forged" and h.published == []


@pytest.mark.parametrize("signer", ["rogue", None])
def test_forged_or_unsigned_callback_is_a_fault_and_not_published(pki, signer):
    """A callback signed by an unpinned certificate, or unsigned, gets a Client fault and is never published."""
    h = Harness(pki)
    if signer is None:
        body = soap.build_register_result(
            RegisterResult(relates_to_message="m", status="success"), to="x", key=None, certificate=None
        )
    else:
        body = result_body(pki, signer)
    with capture_logs() as logs:
        reply = h.handle(body)
    assert reply.status == 500 and reply.outcome == "forged"
    fault = soap.parse_fault(reply.body)
    assert fault.ips_fault == "AuthorizationFault"
    assert (
        b"SignatureValue" not in reply.body and fault.headers.relates_to is None
    )  # nothing signed, nothing echoed
    assert h.published == []
    [refused] = [e for e in logs if e["event"] == "callback refused: WS-Security"]
    assert refused["log_level"] == "warning" and refused["operation"] == "registerDocumentResult"
    assert refused["reason"] == ("WSS_MISSING" if signer is None else "WSS_UNTRUSTED_CERTIFICATE")


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
    req = soap.build_file_request(
        local_uid="d-1",
        to="http://mis/cb",
        key=pki["ips"][0],
        certificate=pki["ips"][1],
        reply_to=n.WSA_ANONYMOUS,
        message_id="0e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f",
    )
    reply = h.handle(req)
    assert reply.status == 200
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
    parsed = soap.parse_file_response(reply.body)
    assert parsed.data == data and parsed.checksum_ok
    assert parsed.headers.relates_to == "0e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f"


def test_get_document_file_unknown_local_uid_is_a_fault(pki):
    """An unknown localUid gets a Client fault naming DOCUMENT_NOT_FOUND."""
    h = Harness(pki)
    req = soap.build_file_request(
        local_uid="nope", to="http://mis/cb", key=pki["ips"][0], certificate=pki["ips"][1]
    )
    reply = h.handle(req)
    assert reply.status == 500 and reply.outcome == "unknown_document"
    assert soap.parse_fault(reply.body).detail_code == "DOCUMENT_NOT_FOUND"


def test_forged_file_request_reveals_nothing(pki):
    """A getDocumentFile signed by an unpinned certificate is refused before any lookup."""
    h = Harness(pki, files={"d-1": b"secret"})
    req = soap.build_file_request(local_uid="d-1", to="x", key=pki["rogue"][0], certificate=pki["rogue"][1])
    reply = h.handle(req)
    assert reply.outcome == "forged" and b"c2VjcmV0" not in reply.body


# --- replies signed with the key of the information system the request is for -----------------------------

ORG_A, ORG_B = "1.2.643.5.1.13.13.12.2.77.1", "1.2.643.5.1.13.13.12.2.77.2"
MID_B = "7a1c0e2a-0000-4000-8000-0000000000b2"


@pytest.fixture(scope="module")
def systems():
    ca = DevCA.create("two clinics CA")
    return {
        "a": ca.issue(subject=SubjectInfo(family="", common_name="МИС А", org="Клиника А")),
        "b": ca.issue(subject=SubjectInfo(family="", common_name="МИС Б", org="Клиника Б")),
    }


class TwoClinics:
    """A callback service for two ИС (clientEntityId mis-a / mis-b, one organisation each, different keys)."""

    def __init__(self, pki, systems, *, documents=None, sent=None, credentials=("a", "b")):
        self.published = []
        self.documents = documents or {"doc-a": (ORG_A, b"<a/>"), "doc-b": (ORG_B, b"<b/>")}
        self.sent = sent or {MID_B: ORG_B}

        async def publish(key, value):
            self.published.append((key, value))

        async def lookup_file(uid):
            return self.documents[uid][1] if uid in self.documents else None

        async def lookup_organization(message_id, uid):
            return self.sent.get(message_id) or (self.documents[uid][0] if uid in self.documents else None)

        creds = {
            "a": ReplyCredential(
                key=systems["a"][0],
                certificate=systems["a"][1],
                client_entity_id="mis-a",
                organizations=frozenset({ORG_A}),
            ),
            "b": ReplyCredential(
                key=systems["b"][0],
                certificate=systems["b"][1],
                client_entity_id="mis-b",
                organizations=frozenset({ORG_B}),
            ),
        }
        self.service = CallbackService(
            trusted_certificates=[pki["ips"][1]],
            publish=publish,
            lookup_file=lookup_file,
            lookup_organization=lookup_organization,
            reply_keys=ReplyKeys([creds[c] for c in credentials]),
        )

    def handle(self, body):
        return asyncio.run(self.service.handle(body))


def signed_by(reply, systems, which):
    """Whether the reply verifies with system ``which``'s certificate (and not with the other's)."""
    other = {"a": "b", "b": "a"}[which]
    verify_envelope(reply.body, trusted_certificates=[systems[which][1]], required=REPLY_REFS)
    with pytest.raises(PermanentError):
        verify_envelope(reply.body, trusted_certificates=[systems[other][1]], required=REPLY_REFS)
    return True


def with_client_entity_id(body, client_entity_id, key, cert):
    """The same unsigned ИПС message with transportHeader/authInfo/clientEntityId added, then signed."""
    root = etree.fromstring(body)
    header = root.find(f"{{{etree.QName(root).namespace}}}Header")
    th = etree.SubElement(header, f"{{{n.NS_EGISZ}}}{n.TRANSPORT_HEADER}")
    ai = etree.SubElement(th, f"{{{n.NS_EGISZ}}}{n.AUTH_INFO}")
    etree.SubElement(ai, f"{{{n.NS_EGISZ}}}{n.CLIENT_ENTITY_ID}").text = client_entity_id
    header.insert(0, th)
    return sign_envelope(root, key=key, certificate=cert)


def test_get_document_file_replies_are_signed_by_each_documents_information_system(pki, systems):
    """getDocumentFile for each clinic's document is answered signed with that clinic's ИС key, not the other's."""
    h = TwoClinics(pki, systems)
    for uid, which in (("doc-a", "a"), ("doc-b", "b")):
        req = soap.build_file_request(
            local_uid=uid, to="http://mis/cb", key=pki["ips"][0], certificate=pki["ips"][1]
        )
        reply = h.handle(req)
        assert reply.status == 200 and signed_by(reply, systems, which)
        assert soap.parse_file_response(reply.body).data == h.documents[uid][1]


def test_result_ack_is_signed_by_the_information_system_that_sent_the_document(pki, systems):
    """The ack of a callback for a MessageID clinic B sent is signed with B's ИС key, whichever comes first."""
    h = TwoClinics(pki, systems)
    reply = h.handle(result_body(pki, relates=f"urn:uuid:{MID_B}"))
    assert reply.outcome == "accepted" and signed_by(reply, systems, "b")


def test_client_entity_id_of_the_request_chooses_the_key(pki, systems):
    """A request whose transportHeader names clientEntityId mis-a is answered with A's key even for B's document."""
    h = TwoClinics(pki, systems)
    raw = soap.build_file_request(local_uid="doc-b", to="http://mis/cb", key=None, certificate=None)
    reply = h.handle(with_client_entity_id(raw, "mis-a", *pki["ips"]))
    assert reply.status == 200 and signed_by(reply, systems, "a")


def test_callback_names_its_organisation_when_the_store_does_not_know_it(pki, systems):
    """A result callback for a MessageID not in the store is signed by the ИС of the organisation it names."""
    h = TwoClinics(pki, systems, sent={})
    key, cert = pki["ips"]
    body = soap.build_register_result(
        RegisterResult(
            relates_to_message="urn:uuid:0-unknown",
            status="success",
            local_uid="elsewhere",
            organization=ORG_A,
            registry_item=RegistryItem(emdr_id="16.62.3"),
        ),
        to="http://mis/cb",
        key=key,
        certificate=cert,
    )
    reply = h.handle(body)
    assert reply.outcome == "accepted" and signed_by(reply, systems, "a")


def test_no_matching_key_is_a_clear_fault_and_nothing_is_published(pki, systems):
    """With two ИС and a callback no key matches (unknown MessageID, no organisation, no clientEntityId), the answer
    is a Server fault naming the missing key, and the callback is not published (ИПС will deliver it again)."""
    h = TwoClinics(pki, systems, sent={})
    reply = h.handle(result_body(pki, relates="urn:uuid:00000000-0000-4000-8000-00000000dead"))
    assert reply.status == 500 and reply.outcome == "no_signing_key" and h.published == []
    fault = soap.parse_fault(reply.body)
    assert fault.server_side and "no information-system key" in fault.reason


def test_single_information_system_signs_everything(pki, systems):
    """With one ИС configured its key signs every reply, even for a request no organisation matches."""
    h = TwoClinics(pki, systems, sent={}, credentials=("b",))
    reply = h.handle(result_body(pki, relates="urn:uuid:00000000-0000-4000-8000-00000000beef"))
    assert reply.outcome == "accepted"
    verify_envelope(reply.body, trusted_certificates=[systems["b"][1]], required=REPLY_REFS)


# --- as ИПС really sends them ----------------------------------------------------------------------

UUID = "5f0c1e2a-0000-4000-8000-000000000002"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize(
    "spelling", [UUID, f"urn:uuid:{UUID.upper()}", UUID.replace("-", "").upper(), f"uuid:{UUID}", f"<{UUID}>"]
)
def test_signed_variant_callbacks_are_verified_and_keyed_by_the_normalised_id(pki, version, spelling):
    """SOAP 1.1 or 1.2, unprefixed WS-Addressing with ИПС's fixed wsu:Ids and the 2004/08 anonymous ReplyTo, kind as a
    nested code, registrationDate: the signature verifies, the callback is published under the one normalised
    relatesToMessage whatever its spelling, and the ack relates to the callback's own MessageID as sent."""
    key, cert = pki["ips"]
    result = RegisterResult(
        relates_to_message=spelling,
        status="success",
        local_uid="d-1",
        kind="119",
        registry_item=RegistryItem(emdr_id="16.62.2", registration_date_time="2026-01-01"),
    )
    body = soap.build_register_result(
        result,
        to="http://mis/cb",
        key=key,
        certificate=cert,
        soap_version=version,
        wsa_prefix=False,
        fixed_ids=True,
        reply_to=n.WSA_ANONYMOUS_2004,
        kind_form="code",
        date_element=n.REGISTRATION_DATE,
        message_id=f"urn:uuid:{UUID.upper()}",
    )
    assert b"<wsa:" not in body and b'Id="id-messageid"' in body
    h = Harness(pki)
    reply = h.handle(body)
    assert reply.outcome == "accepted" and h.published == [(UUID, body)]
    ack = soap.parse_callback_ack(reply.body)
    assert ack.headers.relates_to == f"urn:uuid:{UUID.upper()}" and ack.headers.soap_version == version
    parsed = soap.parse_register_result(body)
    assert parsed.kind == "119" and parsed.registry_item.registration_date_time == "2026-01-01"


def _file_request(pki, **key):
    k, c = pki["ips"]
    return soap.build_file_request(to="http://mis/cb", key=k, certificate=c, message_id=f"uuid:{UUID}", **key)


def test_file_request_by_emdr_id_returns_the_signed_bytes(pki):
    """getDocumentFile by emdrId (another ИС asks for a registered document later) returns exactly the signed bytes,
    as the same request by localUid does."""
    document = "<ClinicalDocument>Тот самый документ</ClinicalDocument>".encode()
    for key in ({"emdr_id": "16.62.23.09.000014523"}, {"local_uid": "d-7"}):
        h = Harness(pki, files={"d-7": document}, registered={"16.62.23.09.000014523": "d-7"})
        reply = h.handle(_file_request(pki, **key))
        assert reply.status == 200 and reply.outcome == "served", key
        verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
        answer = soap.parse_file_response(reply.body)
        assert answer.data == document and answer.checksum_ok and answer.headers.relates_to == f"uuid:{UUID}"


def test_file_request_for_an_unknown_emdr_id_is_a_client_fault(pki):
    """An emdrId we never registered gets a signed soap:Client fault DOCUMENT_NOT_FOUND naming it."""
    h = Harness(pki, files={"d-7": b"<x/>"}, registered={"16.62.1": "d-7"})
    reply = h.handle(_file_request(pki, emdr_id="16.62.999"))
    fault = soap.parse_fault(reply.body)
    assert reply.status == 500 and reply.outcome == "unknown_document" and not fault.server_side
    assert fault.detail_code == "DOCUMENT_NOT_FOUND" and "16.62.999" in fault.reason
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)


@pytest.mark.parametrize("operation", [n.SEND_NOTICE, n.SEND_DOCUMENT_FILE])
def test_related_document_notices_are_refused_with_a_documented_fault(pki, operation):
    """sendNotice and sendDocumentFile, correctly signed, are refused with a signed soap:Client fault
    NOTICE_NOT_ACCEPTED (never published); a forged one is refused as forged."""
    from services.remd.envelope import finish, new_envelope

    def notice(signer):
        env, body = new_envelope(
            soap_version="1.1",
            action=operation,
            message_id=UUID,
            to="http://mis/cb",
            body_ns=n.NS_EMDR_CALLBACK,
        )
        etree.SubElement(body, f"{{{n.NS_EMDR_CALLBACK}}}{operation}")
        return finish(env, *pki[signer], None)

    h = Harness(pki)
    reply = h.handle(notice("ips"))
    fault = soap.parse_fault(reply.body)
    assert reply.outcome == "refused" and fault.detail_code == "NOTICE_NOT_ACCEPTED" and not fault.server_side
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
    assert h.handle(notice("rogue")).outcome == "forged"
    assert h.published == []


def test_a_document_pulled_again_is_answered_from_its_kept_canonical_body(pki):
    """The second getDocumentFile of one document reuses the canonical Body made for the first, and both
    answers verify and carry exactly the stored bytes."""
    data = b"<ClinicalDocument>kept \xd0\x9f</ClinicalDocument>\n" * 500
    h = Harness(pki, files={"d-kept": data})
    soap.file_response_body.cache_clear()
    replies = []
    for message_id in ("1e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f", "2e7c6a39-3e55-4c41-9d9e-1b1d3c4b5a6f"):
        req = soap.build_file_request(
            local_uid="d-kept",
            to="http://mis/cb",
            key=pki["ips"][0],
            certificate=pki["ips"][1],
            reply_to=n.WSA_ANONYMOUS,
            message_id=message_id,
        )
        replies.append(h.handle(req))
    for reply, message_id in zip(replies, ("1e7c", "2e7c"), strict=True):
        assert reply.status == 200
        verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)
        parsed = soap.parse_file_response(reply.body)
        assert parsed.data == data and parsed.checksum_ok
        assert parsed.headers.relates_to.startswith(message_id)
    info = soap.file_response_body.cache_info()
    assert (info.misses, info.hits) == (1, 1)


# --- nothing is trusted, and nothing is signed, before the request is authenticated ------------------------

OURS = "https://mis.example.org/callback"


class Guarded(Harness):
    """A service that knows its own address, with a clock the test can move."""

    def __init__(self, pki, *, now=None, **kw):
        super().__init__(pki, **kw)
        self.now = now or datetime.now(UTC)
        self.service = CallbackService(
            trusted_certificates=[pki["ips"][1]],
            key=pki["mis"][0],
            certificate=pki["mis"][1],
            publish=self.service.publish,
            lookup_file=self.service.lookup_file,
            own_addresses=[OURS],
            max_age=300,
            max_skew=60,
            max_request_bytes=16384,
            clock=lambda: self.now,
        )


def signed_result(pki, *, to=OURS, created=None, ttl=300.0, drop=None, message_id=None):
    """A registerDocumentResult signed by the pinned ИПС key, optionally created at ``created``, without Expires
    (``ttl=None``), or without the element ``drop`` (removed before signing)."""
    unsigned = soap.build_register_result(
        RegisterResult(
            relates_to_message="5f0c1e2a-0000-4000-8000-000000000001",
            status="success",
            local_uid="d-1",
            registry_item=RegistryItem(emdr_id="16.62.1", registration_date_time="2026-01-01T10:00:00+03:00"),
        ),
        to=to,
        key=None,
        certificate=None,
        message_id=message_id,
    )
    if drop is not None:
        root = etree.fromstring(unsigned)
        for el in root.iter(f"{{{n.NS_EMDR_CALLBACK}}}{drop}"):
            el.getparent().remove(el)
        unsigned = etree.tostring(root)
    return sign_envelope(unsigned, key=pki["ips"][0], certificate=pki["ips"][1], ttl=ttl, now=created)


def _unsigned_refusal(reply) -> None:
    fault = soap.parse_fault(reply.body)
    assert b"SignatureValue" not in reply.body and fault.headers.relates_to is None


def test_a_replayed_callback_is_refused_unsigned_and_published_once(pki):
    """The same signed callback delivered twice: the first is taken, the replay refused without a signed reply."""
    h = Guarded(pki)
    body = signed_result(pki)
    assert h.handle(body).outcome == "accepted"
    again = h.handle(body)
    assert again.status == 500 and again.outcome == "replayed"
    _unsigned_refusal(again)
    assert len(h.published) == 1


def test_a_callback_we_failed_to_store_may_be_delivered_again(pki):
    """A MessageID answered with broker_unavailable is not a replay the next time ИПС delivers it."""
    h = Guarded(pki, broker_down=True)
    body = signed_result(pki)
    assert h.handle(body).outcome == "broker_unavailable"
    h.broker_down = False
    assert h.handle(body).outcome == "accepted" and len(h.published) == 1


def test_a_two_year_old_signed_callback_without_expires_is_refused(pki):
    """A correctly signed callback created two years ago, with no Expires, is stale: refused, not published."""
    h = Guarded(pki)
    body = signed_result(pki, created=h.now - timedelta(days=730), ttl=None)
    assert b"Expires" not in body
    reply = h.handle(body)
    assert reply.outcome == "forged" and h.published == []
    assert "WSS_STALE" in soap.parse_fault(reply.body).reason
    _unsigned_refusal(reply)


def test_an_expired_callback_is_refused_and_the_skew_window_is_kept(pki):
    """Expires passed beyond the skew: refused; a callback from a clock 50 s ahead (skew 60) is accepted."""
    h = Guarded(pki)
    expired = signed_result(pki, created=h.now - timedelta(seconds=200), ttl=30)
    assert h.handle(expired).outcome == "forged"
    ahead = signed_result(pki, created=h.now + timedelta(seconds=50))
    assert h.handle(ahead).outcome == "accepted"
    assert len(h.published) == 1


def test_a_callback_addressed_to_another_mis_is_refused(pki):
    """A callback ИПС signed for another МИС (its wsa:To) is refused and never published; ours is taken."""
    h = Guarded(pki)
    reply = h.handle(signed_result(pki, to="https://other-mis.example.org/callback"))
    assert reply.outcome == "misaddressed" and h.published == []
    _unsigned_refusal(reply)
    assert h.handle(signed_result(pki, to="HTTPS://MIS.example.org:443/callback/")).outcome == "accepted"


def test_a_callback_without_wsa_to_is_refused_once_our_address_is_known(pki):
    """With our address configured, wsa:To must be there and signed: a callback without it is refused."""
    h = Guarded(pki)
    body = soap.build_register_result(
        RegisterResult(relates_to_message="m-1", status="success"),
        to="",
        key=None,
        certificate=None,
    )
    root = etree.fromstring(body)
    for el in root.iter(f"{{{n.NS_WSA}}}To"):
        el.getparent().remove(el)
    signed = sign_envelope(etree.tostring(root), key=pki["ips"][0], certificate=pki["ips"][1])
    reply = h.handle(signed)
    assert reply.outcome == "forged" and h.published == []


def test_a_forged_callback_gets_no_signed_reply(pki):
    """A callback signed by an unpinned key, with a RelatesTo of its choosing, gets an unsigned fault relating to
    nothing: our ИС key signs nothing for it."""
    h = Guarded(pki)
    body = result_body(pki, "rogue")
    reply = h.handle(body)
    assert reply.outcome == "forged"
    _unsigned_refusal(reply)
    with pytest.raises(PermanentError):
        verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)


@pytest.mark.parametrize(
    "body",
    [b"", b"not xml at all", b"<a/>", b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY y 'z'>]><x>&y;</x>"],
)
def test_a_malformed_request_gets_an_unsigned_soap_fault(pki, body):
    """Anything that is not a SOAP request is answered with an unsigned SOAP fault, never an exception."""
    reply = Guarded(pki).handle(body)
    assert reply.status == 500 and reply.outcome == "malformed"
    _unsigned_refusal(reply)


def test_a_signed_callback_without_status_gets_a_signed_soap_fault(pki):
    """A correctly signed registerDocumentResult without <status> is a signed soap:Client fault, not an HTTP 500."""
    h = Guarded(pki)
    reply = h.handle(signed_result(pki, drop="status"))
    assert reply.status == 500 and reply.outcome == "malformed" and h.published == []
    fault = soap.parse_fault(reply.body)
    assert not fault.server_side and fault.detail_code == "VALIDATION_ERROR"
    verify_envelope(reply.body, trusted_certificates=[pki["mis"][1]], required=REPLY_REFS)


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(pki):
    """A request over max_request_bytes is a 413 SOAP fault, whatever it holds."""
    reply = Guarded(pki).handle(signed_result(pki) + b" " * 16384)
    assert reply.status == 413 and reply.outcome == "too_large"
    _unsigned_refusal(reply)


def test_the_reader_stops_an_8_mib_body_after_the_limit_and_one_byte():
    """read_limited on an 8 MiB stream raises after reading at most limit + 1 bytes; a small body is read whole."""
    limit = 65536

    class Stream:
        def __init__(self, size):
            self.left, self.read_bytes = size, 0

        async def read(self, n):
            chunk = min(n, self.left, 16384)
            self.left -= chunk
            self.read_bytes += chunk
            return b"x" * chunk

    big = Stream(8 * 1024 * 1024)
    with pytest.raises(RequestTooLarge) as exc:
        asyncio.run(read_limited(big.read, limit))
    assert big.read_bytes <= limit + 1 and exc.value.read == big.read_bytes
    small = Stream(1000)
    assert asyncio.run(read_limited(small.read, limit)) == b"x" * 1000
    declared = Stream(8 * 1024 * 1024)
    with pytest.raises(RequestTooLarge):
        asyncio.run(read_limited(declared.read, limit, declared=8 * 1024 * 1024))
    assert declared.read_bytes == 0


def test_a_replay_cache_forgets_after_its_window():
    """A MessageID is refused within the window and accepted again once the window has passed."""
    now = [0.0]
    cache = ReplayCache(10, clock=lambda: now[0])
    assert cache.take("a") and not cache.take("a")
    now[0] = 11
    assert cache.take("a")
