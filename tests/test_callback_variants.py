"""registerDocumentResult and getDocumentFile as ИПС really sends them (docs/protocol.md#callback-shapes).

Each test is a hand-written message of one variant: SOAP 1.1 or 1.2, WS-Addressing with or without a prefix,
either anonymous URI, ``kind`` in each of its forms, ``registrationDate`` or ``registrationDateTime``,
``documentStatus``, ``registrationWarnings``, and the MessageID spellings gateways use. Each asserts the parsed
values and the one normalised MessageID.
"""

from __future__ import annotations

import pytest

from producer.ids import normalize_message_id
from services.remd import names as n
from services.remd import soap
from services.remd.envelope import is_anonymous

UUID = "499c1284-ac8e-41d8-8957-b9b83de9a638"
CB = n.NS_EMDR_CALLBACK


def _soap11(header: str, body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{n.NS_SOAP11}" '
        f'xmlns:wsu="{n.NS_WSU}"><soapenv:Header>{header}</soapenv:Header><soapenv:Body wsu:Id="body">'
        f"{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


def _soap12(header: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{n.NS_SOAP12}" xmlns:a="{n.NS_WSA}"><s:Header>{header}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def test_soap11_unprefixed_addressing_old_anonymous_uri_kind_as_text():
    """SOAP 1.1 with unprefixed WS-Addressing, ИПС's fixed wsu:Ids and the 2004/08 anonymous ReplyTo; kind as
    text and registrationDateTime: every header and value is read, the bare-UUID relatesToMessage normalises."""
    header = (
        f'<MessageID xmlns="{n.NS_WSA}" wsu:Id="id-messageid">cb-{UUID[3:]}</MessageID>'
        f'<ReplyTo xmlns="{n.NS_WSA}" wsu:Id="id-replyto"><Address>{n.WSA_ANONYMOUS_2004}</Address></ReplyTo>'
        f'<To xmlns="{n.NS_WSA}" wsu:Id="id-to">https://mis.example/emdr/callback</To>'
        f'<Action xmlns="{n.NS_WSA}" wsu:Id="id-action">sendRegisterDocumentResult</Action>'
    )
    body = (
        f'<registerDocumentResult xmlns="{CB}"><relatesToMessage>{UUID}</relatesToMessage><status>success</status>'
        f"<localUid>doc-1</localUid><kind>119</kind><organization>1.2.643.5.1.13.13.12.2.77.7831</organization>"
        f"<registryItem><emdrId>16.62.23.09.000014523</emdrId><registrationDateTime>2026-11-22T10:05:00+03:00"
        f"</registrationDateTime><storeTillDate>2126-11-22</storeTillDate></registryItem></registerDocumentResult>"
    )
    r = soap.parse_register_result(_soap11(header, body))
    h = r.headers
    assert (h.soap_version, h.action, h.to) == (
        "1.1",
        "sendRegisterDocumentResult",
        "https://mis.example/emdr/callback",
    )
    assert h.message_id == f"cb-{UUID[3:]}" and is_anonymous(h.reply_to)
    assert (r.status, r.local_uid, r.kind, r.organization) == (
        "success",
        "doc-1",
        "119",
        "1.2.643.5.1.13.13.12.2.77.7831",
    )
    assert r.registry_item.emdr_id == "16.62.23.09.000014523"
    assert r.registry_item.registration_date_time == "2026-11-22T10:05:00+03:00"
    assert r.registered and normalize_message_id(r.relates_to_message) == UUID


def test_soap12_prefixed_addressing_kind_nested_code_registration_date_document_status():
    """SOAP 1.2, prefixed WS-Addressing; kind/code with codeSystem and displayName, the older registrationDate,
    documentStatus "Зарегистрировано"; an urn:uuid: upper-case relatesToMessage normalises to the same id."""
    header = (
        f"<a:MessageID>urn:uuid:{UUID.upper()}</a:MessageID><a:ReplyTo><a:Address>{n.WSA_ANONYMOUS}"
        f"</a:Address></a:ReplyTo><a:Action>sendRegisterDocumentResult</a:Action>"
    )
    body = (
        f'<cb:registerDocumentResult xmlns:cb="{CB}"><cb:relatesToMessage>urn:uuid:{UUID.upper()}'
        f"</cb:relatesToMessage><cb:status>success</cb:status><cb:documentStatus>Зарегистрировано</cb:documentStatus>"
        f"<cb:kind><cb:code>58</cb:code><cb:codeSystem>1.2.643.5.1.13.13.11.1520</cb:codeSystem>"
        f"<cb:displayName>Протокол</cb:displayName></cb:kind><cb:registryItem><cb:emdrId>1.2.3</cb:emdrId>"
        f"<cb:registrationDate>2026-11-22</cb:registrationDate></cb:registryItem></cb:registerDocumentResult>"
    )
    r = soap.parse_register_result(_soap12(header, body))
    assert r.headers.soap_version == "1.2" and is_anonymous(r.headers.reply_to)
    assert normalize_message_id(r.headers.message_id) == UUID
    assert (r.kind, r.document_status) == ("58", "Зарегистрировано")
    assert r.registry_item.registration_date_time == "2026-11-22"
    assert r.registered and normalize_message_id(r.relates_to_message) == UUID


def test_kind_as_attribute_status_ok_warnings_and_creation_time_in_registry_item():
    """kind as a code attribute, status "OK", registryItem/registrationWarnings (kept, in order) and the
    creationDateTime one peer puts in registryItem; an upper-case hyphenless MessageID normalises."""
    compact = UUID.replace("-", "").upper()
    header = f'<wsa:MessageID xmlns:wsa="{n.NS_WSA}">{compact}</wsa:MessageID>'
    body = (
        f'<registerDocumentResult xmlns="{CB}"><relatesToMessage>{compact}</relatesToMessage><status>OK</status>'
        f'<kind code="119"/><registryItem><emdrId>9.9</emdrId><creationDateTime>2026-11-22T09:30:00+03:00'
        f"</creationDateTime><registrationDateTime>2026-11-22T10:00:00+03:00</registrationDateTime>"
        f"<registrationWarnings><item><code>IPS_VALIDATION_WARNING</code><message>Замечание 1</message></item>"
        f"<item><code>INVALID_ELEMENT_VALUE_NAME</code><message>Замечание 2</message></item>"
        f"</registrationWarnings></registryItem></registerDocumentResult>"
    )
    r = soap.parse_register_result(_soap11(header, body))
    assert r.kind == "119" and r.registered
    item = r.registry_item
    assert item.creation_date_time == "2026-11-22T09:30:00+03:00"
    assert [(w.code, w.message) for w in item.warnings] == [
        ("IPS_VALIDATION_WARNING", "Замечание 1"),
        ("INVALID_ELEMENT_VALUE_NAME", "Замечание 2"),
    ]
    assert normalize_message_id(r.relates_to_message) == UUID == normalize_message_id(r.headers.message_id)


def test_error_callback_with_uuid_prefix():
    """An error callback whose relatesToMessage uses the "uuid:" prefix: not registered, codes kept, id normalised."""
    body = (
        f'<registerDocumentResult xmlns="{CB}"><relatesToMessage>uuid:{UUID}</relatesToMessage>'
        f"<status>error</status><errors><item><code>NO_SNILS</code><message>нет СНИЛС</message></item></errors>"
        f"</registerDocumentResult>"
    )
    r = soap.parse_register_result(_soap11("", body))
    assert not r.registered and [e.code for e in r.errors] == ["NO_SNILS"]
    assert normalize_message_id(r.relates_to_message) == UUID


def test_success_status_with_errors_is_not_a_registration():
    """A callback saying success but carrying errors is not read as registered (the errors decide)."""
    body = (
        f'<registerDocumentResult xmlns="{CB}"><relatesToMessage>{UUID}</relatesToMessage><status>success</status>'
        f"<registryItem><emdrId>1.1</emdrId></registryItem><errors><item><code>RUNTIME_ERROR</code>"
        f"<message>x</message></item></errors></registerDocumentResult>"
    )
    assert not soap.parse_register_result(_soap11("", body)).registered


@pytest.mark.parametrize("envelope", [_soap11, _soap12])
@pytest.mark.parametrize("key,value", [(n.LOCAL_UID, "doc-1"), (n.EMDR_ID, "16.62.23.09.000014523")])
def test_get_document_file_by_local_uid_or_emdr_id(envelope, key, value):
    """getDocumentFile arrives keyed by localUid or by emdrId, in SOAP 1.1 or 1.2; the MessageID it carries is
    the one our reply must relate to."""
    header = f'<MessageID xmlns="{n.NS_WSA}">URN:UUID:{UUID.upper()}</MessageID>'
    request = soap.parse_file_request(
        envelope(header, f'<getDocumentFile xmlns="{CB}"><{key}>{value}</{key}></getDocumentFile>')
    )
    assert (request.local_uid if key == n.LOCAL_UID else request.emdr_id) == value
    assert (request.emdr_id if key == n.LOCAL_UID else request.local_uid) is None
    assert normalize_message_id(request.headers.message_id) == UUID


@pytest.mark.parametrize(
    "address,anonymous",
    [
        (n.WSA_ANONYMOUS, True),
        (n.WSA_ANONYMOUS_2004, True),
        (f" {n.WSA_ANONYMOUS_2004} ", True),
        ("https://ips.rosminzdrav.ru/0123456789abc", False),
        (None, False),
    ],
)
def test_both_anonymous_uris(address, anonymous):
    """Both WS-Addressing anonymous URIs (2005/08 and the old 2004/08) mean "reply on this exchange"."""
    assert is_anonymous(address) is anonymous
