"""producer.events: the envelope and payload schemas, encoding, validation and headers."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from producer import events
from producer.errors import PermanentError

ROOT = Path(__file__).resolve().parent.parent
TYPES = list(events.EVENT_TYPES)


def _example(type_: str) -> dict:
    return copy.deepcopy(events.load_schema(type_)["examples"][0])


def _invalid(event: dict) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        events.decode(json.dumps(event).encode())
    assert info.value.reason == "EVENT_INVALID"
    return info.value


@pytest.fixture
def created() -> dict:
    return dict(events.new_event(events.CREATED, _example(events.CREATED), source="test-mis"))


def test_every_schema_is_valid_draft_2020_12_with_id_and_examples():
    """Each packaged schema is a valid 2020-12 schema with an $id, a description and examples."""
    files = events.schema_files()
    assert set(files) == {"envelope.schema.json"} | {f"{t.removeprefix('emd.')}.schema.json" for t in TYPES}
    for name in files:
        schema = events.load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(name) and schema["description"] and schema["examples"]


@pytest.mark.parametrize("type_", TYPES)
def test_schema_examples_validate_as_events(type_):
    """Each schema's own example is a valid payload inside a fresh envelope of its type."""
    event = events.new_event(type_, _example(type_), source="worker-x")
    assert events.decode(events.encode(event), expected_type=type_)["data"] == _example(type_)


def test_docs_schemas_is_the_packaged_folder():
    """docs/schemas is the same folder the code loads, so documentation and validation cannot drift."""
    docs = ROOT / "docs" / "schemas"
    packaged = ROOT / "producer" / "data" / "schemas"
    assert docs.resolve() == packaged.resolve()
    assert sorted(p.name for p in docs.iterdir()) == sorted(events.schema_files())


def test_new_event_envelope_fields(created):
    """new_event fills eventId (UUID), schemaVersion 1, UTC millisecond time, a 32-hex traceId and the source."""
    assert created["type"] == "emd.document.created" and created["schemaVersion"] == 1
    assert len(created["eventId"]) == 36 and created["time"].endswith("Z") and len(created["time"]) == 24
    assert len(created["traceId"]) == 32 and created["source"] == "test-mis"
    other = events.new_event(
        events.CREATED, _example(events.CREATED), source="m", trace_id=created["traceId"]
    )
    assert other["traceId"] == created["traceId"] and other["eventId"] != created["eventId"]


def test_new_event_rejects_invalid_payload():
    """new_event refuses to build an event whose payload breaks the schema."""
    data = _example(events.CREATED)
    data["kind"] = "not-a-code"
    with pytest.raises(PermanentError) as info:
        events.new_event(events.CREATED, data, source="m")
    assert info.value.details["field"] == "data.kind"


def test_encode_is_compact_utf8_with_cyrillic(created):
    """encode writes compact UTF-8 JSON keeping Cyrillic unescaped."""
    raw = events.encode(created)
    assert "Сельченков".encode() in raw and b", " not in raw


BROKEN = [
    (lambda e: e["data"]["patient"].__setitem__("snils", "123"), "data.patient.snils"),
    (lambda e: e["data"].pop("kind"), "data.kind"),
    (lambda e: e["data"].__setitem__("creation_time", "x"), "data.creation_time"),
    (lambda e: e["data"].__setitem__("creationTime", "2021-01-25T16:00:00"), "data.creationTime"),
    (lambda e: e["data"]["signers"][0].__setitem__("role", "nurse"), "data.signers[0].role"),
    (lambda e: e["data"].__setitem__("signers", []), "data.signers"),
    (lambda e: e["data"]["document"].__setitem__("sha256", "ABC"), "data.document.sha256"),
    (lambda e: e["data"]["document"].pop("ref"), "data.document.inline"),  # neither inline nor ref
    (lambda e: e["data"]["document"].__setitem__("ref", "http://x/y"), "data.document.ref"),
    (lambda e: e.__setitem__("schemaVersion", 2), "schemaVersion"),
    (lambda e: e.__setitem__("traceId", "xyz"), "traceId"),
    (lambda e: e.pop("eventId"), "eventId"),
    (lambda e: e.__setitem__("type", "emd.document.unknown"), "type"),
]


@pytest.mark.parametrize(("mutate", "field"), BROKEN)
def test_bad_events_fail_naming_the_field(created, mutate, field):
    """A broken envelope or payload is EVENT_INVALID and the error names the offending field."""
    mutate(created)
    err = _invalid(created)
    assert err.details["field"] == field
    assert field in err.message


@functools.cache
def _reference(name: str) -> Draft202012Validator:
    """The pure-Python reference implementation over the same packaged schemas: the compiled check is held to it."""
    registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in map(events.load_schema, events.schema_files())]
    )
    return Draft202012Validator(events.load_schema(name), registry=registry)


def _accepted_by(check, event: dict) -> bool:
    return (
        check("envelope.schema.json", event)
        and event.get("type") in TYPES
        and check(event["type"], event["data"])
    )


@pytest.mark.parametrize(("mutate", "field"), BROKEN)
def test_the_compiled_check_refuses_what_the_reference_refuses(created, mutate, field):
    """jsonschema-rs, the check every event passes first, refuses each broken event the reference jsonschema refuses."""
    mutate(created)
    assert not _accepted_by(lambda name, x: events.compiled_validator(name).is_valid(x), created)
    assert not _accepted_by(lambda name, x: _reference(name).is_valid(x), created)


@pytest.mark.parametrize("type_", TYPES)
def test_the_compiled_check_accepts_what_the_reference_accepts(type_):
    """Each schema's example, in a fresh envelope, passes both the compiled check and the reference."""
    event = dict(events.new_event(type_, _example(type_), source="worker-x"))
    assert _accepted_by(lambda name, x: events.compiled_validator(name).is_valid(x), event)
    assert _accepted_by(lambda name, x: _reference(name).is_valid(x), event)


def test_error_message_never_echoes_the_value(created):
    """The validation message names the field and rule but not the (possibly personal) value."""
    created["data"]["patient"]["snils"] = "Иванов Иван Иванович"
    err = _invalid(created)
    assert "Иванов" not in err.message


def test_signed_requires_signatures_and_keeps_created_fields():
    """A signed payload without signatures, or missing a created field, is invalid."""
    data = _example(events.SIGNED)
    event = dict(events.new_event(events.SIGNED, data, source="signer"))
    del event["data"]["signatures"]
    assert _invalid(event).details["field"] == "data.signatures"
    event["data"] = _example(events.SIGNED)
    del event["data"]["localUid"]
    assert _invalid(event).details["field"] == "data.localUid"


def test_decode_checks_expected_type_and_json(created):
    """decode rejects non-JSON bytes and an event of another type than expected."""
    with pytest.raises(PermanentError) as info:
        events.decode(b"\xff\xfe not json")
    assert info.value.reason == "EVENT_INVALID"
    with pytest.raises(PermanentError) as info:
        events.decode(events.encode(created), expected_type=events.SIGNED)
    assert info.value.details["field"] == "type"


def test_headers_round_trip(created):
    """headers_for emits the three emd-* headers and read_headers reads them back."""
    headers = events.headers_for(created)
    assert [k for k, _ in headers] == ["emd-event-type", "emd-trace-id", "emd-schema-version"]
    assert events.read_headers(headers + [("other", b"x")]) == {
        "emd-event-type": "emd.document.created",
        "emd-trace-id": created["traceId"],
        "emd-schema-version": "1",
    }


def test_every_time_an_event_carries_is_written_in_one_format():
    """timestamp() writes UTC with milliseconds and Z, whatever the offset of the time it is given."""
    moscow = dt.timezone(dt.timedelta(hours=3))
    assert (
        events.timestamp(dt.datetime(2026, 1, 2, 13, 4, 5, 678901, tzinfo=moscow))
        == "2026-01-02T10:04:05.678Z"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", events.timestamp())


def test_the_status_payload_is_schema_valid_and_its_message_short():
    """status_data gives a valid emd.document.status payload; a long message is cut for the МИС's screen."""
    doc = {"organization": "1.2.643.5.1.13.13.12.2.77.7831", "mis_id": "dental-mis"}
    data = events.status_data(
        "u1",
        events.STATUS_REJECTED,
        **doc,
        reason="REMD_REJECTED",
        remd_code="X",
        message="ы" * 2000,
        message_ids=("m-1",),
    )
    event = events.new_event(events.STATUS, data, source="t")
    assert len(event["data"]["message"]) == events.MAX_STATUS_MESSAGE_CHARS
    assert events.status_data("u1", events.STATUS_SENT, **doc)["message"] is None
    assert (data["organizationOid"], data["misId"]) == ("1.2.643.5.1.13.13.12.2.77.7831", "dental-mis")


def test_the_submission_block_has_the_environment_and_one_time_format():
    """submission_data carries the environment it is given; an unknown acceptance time is null."""
    sent = dt.datetime(2026, 1, 2, 10, 0, 0, 123456, tzinfo=dt.UTC)
    block = events.submission_data(
        message_id="m-2",
        message_ids=["m-1", "m-2"],
        attempt=2,
        sent_at=sent,
        accepted_at=None,
        endpoint="http://ips",
        environment="production",
    )
    assert block == {
        "messageId": "m-2",
        "messageIds": ["m-1", "m-2"],
        "attempt": 2,
        "sentAt": "2026-01-02T10:00:00.123Z",
        "acceptedAt": None,
        "endpoint": "http://ips",
        "environment": "production",
    }


def test_timestamp_with_microseconds_keeps_all_six_digits():
    """timestamp(microseconds=True) writes UTC with six fractional digits, for a time given to the microsecond."""
    moscow = dt.timezone(dt.timedelta(hours=3))
    when = dt.datetime(2023, 9, 22, 9, 27, 2, 104123, tzinfo=moscow)
    assert events.timestamp(when, microseconds=True) == "2023-09-22T06:27:02.104123Z"
