"""The event contract: a versioned JSON envelope around a typed payload, validated by JSON Schema.

The schemas are normative and live in ONE place, ``producer/data/schemas/`` (packaged with the code);
``docs/schemas`` is a symlink to that folder, so the documentation cannot drift from what the code
enforces. ``envelope.schema.json`` validates the envelope, ``<type minus "emd.">.schema.json`` the
``data`` of that type (draft 2020-12; signed/sent/acknowledged extend created via ``$ref``).

Every event the pipeline emits is built here, once: :func:`new_event` makes the envelope,
:func:`status_data` the ``emd.document.status`` payload (every stage tells the МИС through it),
:func:`submission_data` the ``submission`` block of ``sent`` and ``acknowledged``, and :func:`timestamp`
writes every time the events carry, in one format. (The Kafka record around an event is
``services.messaging.records.Output.of_event``.)

``decode`` validates everything it returns: a producer bug or a foreign record on a topic becomes a
``PermanentError(reason="EVENT_INVALID", field=...)`` naming the offending field (``data.patient.snils``),
which the runtime dead-letters instead of letting it reach a handler.

Every event is checked by ``jsonschema-rs`` (the schemas compiled once per process, ~5× faster than the
pure-Python reference implementation, and one small wheel for a МИС to install); an invalid one is explained
by the same validator's errors: which field, which rule.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, NotRequired, TypedDict

import jsonschema_rs

from producer.errors import PermanentError

__all__ = [
    "SCHEMA_VERSION",
    "EVENT_TYPES",
    "CREATED",
    "SIGNED",
    "SENT",
    "ACKNOWLEDGED",
    "STATUS",
    "HEADER_EVENT_TYPE",
    "HEADER_TRACE_ID",
    "HEADER_SCHEMA_VERSION",
    "Envelope",
    "CreatedData",
    "PatientData",
    "SignerData",
    "DocumentData",
    "RecipientData",
    "AssociationData",
    "StatusData",
    "StatusWarning",
    "SubmissionData",
    "new_event",
    "new_trace_id",
    "encode",
    "decode",
    "validate",
    "headers_for",
    "read_headers",
    "schema_files",
    "load_schema",
    "compiled_validator",
    "timestamp",
    "status_data",
    "submission_data",
    "STATUS_SIGNED",
    "STATUS_SENT",
    "STATUS_RETRYING",
    "STATUS_REGISTERED",
    "STATUS_REJECTED",
    "STATUS_FAILED",
]

SCHEMA_VERSION = 1
CREATED = "emd.document.created"
SIGNED = "emd.document.signed"
SENT = "emd.document.sent"
ACKNOWLEDGED = "emd.document.acknowledged"
STATUS = "emd.document.status"
EVENT_TYPES = (CREATED, SIGNED, SENT, ACKNOWLEDGED, STATUS)

HEADER_EVENT_TYPE = "emd-event-type"
HEADER_TRACE_ID = "emd-trace-id"
HEADER_SCHEMA_VERSION = "emd-schema-version"

#: the signer role a doctor signs in when the МИС names none (the regional КРЭМД's doctor: role.code DOCTOR),
#: and the role dictionary version its platform input writes (docs/protocol.md, "Signer roles")
DEFAULT_SIGNER_ROLE = "DOCTOR"
DEFAULT_SIGNER_ROLE_VERSION = "2.4"
#: a recipient's kind in the created event (recipient.kind.code of registerDocument)
RECIPIENT_MEDICAL_ORGANIZATION = "MEDICAL_ORGANIZATION"
RECIPIENT_PATIENT_REPRESENTATIVE = "PATIENT_REPRESENTATIVE"

_TRACE = re.compile(r"^[0-9a-f]{32}$")

#: what ``emd.document.status`` tells the МИС (``status``); rejected = РЭМД refused it (a РЭМД code),
#: failed = the pipeline could not get it registered (our checks, configuration, no acknowledgment)
STATUS_SIGNED, STATUS_SENT, STATUS_RETRYING = "signed", "sent", "retrying"
STATUS_REGISTERED, STATUS_REJECTED, STATUS_FAILED = "registered", "rejected", "failed"
#: the longest ``message`` a status carries (a МИС screen, not a log)
MAX_STATUS_MESSAGE_CHARS = 500


class PatientData(TypedDict):
    snils: str | None
    localId: str | None
    family: str | None
    given: str | None
    patronymic: str | None
    gender: str | None
    birthDate: str | None


class SignerData(TypedDict):
    role: str
    snils: str | None
    family: str | None
    given: str | None
    patronymic: str | None
    localId: str | None
    positionCode: str | None
    specialityCode: str | None
    signature: NotRequired[str]
    positionCodeSystemVersion: NotRequired[str | None]
    specialityCodeSystemVersion: NotRequired[str | None]
    departmentOid: NotRequired[str | None]
    roleCode: NotRequired[str]
    roleCodeSystemVersion: NotRequired[str]


class RecipientData(TypedDict):
    kind: str  # MEDICAL_ORGANIZATION | PATIENT_REPRESENTATIVE
    organizationOid: NotRequired[str | None]
    snils: NotRequired[str | None]


class AssociationData(TypedDict):
    target: str
    type: str


class DocumentData(TypedDict):
    sha256: str
    size: int
    mediaType: str
    inline: NotRequired[str]
    ref: NotRequired[str]


class CreatedData(TypedDict):
    localUid: str
    kind: str
    organizationOid: str
    departmentOid: str | None
    systemId: str
    creationTime: str
    documentNumber: str | None
    patient: PatientData
    signers: list[SignerData]
    #: absent only from what ``producer.client.build_created_data`` returns while it checks a document not yet
    #: stored; every event has it (the schema requires it)
    document: NotRequired[DocumentData]
    recipient: NotRequired[RecipientData | None]
    associations: NotRequired[list[AssociationData]]


class StatusWarning(TypedDict):
    code: str
    message: str


class StatusData(TypedDict):
    """``data`` of ``emd.document.status``: what the МИС shows for its document (:func:`status_data`)."""

    localUid: str
    organizationOid: str | None  #: with localUid, the document's identity (None: a malformed event)
    misId: str  #: the МИС it is for: its topic is emd.document.status.<misId>
    status: str
    emdrId: str | None
    reason: str | None
    remdCode: str | None
    message: str | None
    messageIds: list[str]
    warnings: NotRequired[list[StatusWarning]]


class SubmissionData(TypedDict):
    """The ``submission`` block of ``sent`` and ``acknowledged`` (:func:`submission_data`)."""

    messageId: str
    messageIds: list[str]
    attempt: int
    sentAt: str
    acceptedAt: str | None
    endpoint: str
    environment: str


class Envelope(TypedDict):
    eventId: str
    type: str
    schemaVersion: int
    time: str
    traceId: str
    source: str
    data: dict[str, Any]


def schema_files() -> dict[str, Traversable]:
    """``{file name: Traversable}`` of every packaged schema."""
    folder = resources.files("producer").joinpath("data", "schemas")
    return {p.name: p for p in folder.iterdir() if p.name.endswith(".schema.json")}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by file name (``envelope.schema.json``) or event type (``emd.document.created``)."""
    if name in EVENT_TYPES:
        name = f"{name.removeprefix('emd.')}.schema.json"
    schema: dict[str, Any] = json.loads(schema_files()[name].read_text(encoding="utf-8"))
    return schema


@cache
def compiled_validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """The check of every event: the schema compiled by jsonschema-rs, its ``$ref``s resolved from the packaged
    schemas (never fetched)."""
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in map(load_schema, schema_files())])
    return jsonschema_rs.Draft202012Validator(load_schema(name), registry=registry, offline=True)


def _deepest(error: jsonschema_rs.ValidationError) -> jsonschema_rs.ValidationError:
    """The most concrete error: ``oneOf``/``anyOf`` hide the useful one in their context."""
    while True:
        context = [e for branch in (getattr(error.kind, "context", None) or []) for e in branch]
        if not context:
            return error
        error = max(context, key=lambda e: len(e.instance_path))


def _field_of(error: jsonschema_rs.ValidationError, prefix: str) -> str:
    parts = [prefix] if prefix else []
    parts += [f"[{p}]" if isinstance(p, int) else str(p) for p in error.instance_path]
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        parts.append(str(kind.property))
    elif isinstance(
        kind,
        (
            jsonschema_rs.ValidationErrorKind.AdditionalProperties,
            jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
        ),
    ):
        parts.append(str(sorted(kind.unexpected)[0]))
    return ".".join(parts).replace(".[", "[")


#: the detail a failed keyword's error kind carries (its attribute), shown with the rule
_RULE_DETAIL = {"pattern": "pattern", "type": "types", "enum": "options", "const": "expected_value"}


def _rule_of(error: jsonschema_rs.ValidationError) -> str:
    """Which rule failed, never the value: it may be a СНИЛС or a name, and this message is logged."""
    keyword = str(error.schema_path[-1]) if error.schema_path else error.kind.name
    if keyword == "required":
        return "is required"
    if keyword in ("additionalProperties", "unevaluatedProperties"):
        return "is not a field of this schema"
    attribute = _RULE_DETAIL.get(keyword)
    try:
        value = json.dumps(getattr(error.kind, attribute), ensure_ascii=False)[:120] if attribute else ""
    except (AttributeError, TypeError):
        value = ""
    return f"violates {keyword} {value}".rstrip()


def _check(name: str, instance: Any, prefix: str) -> None:
    validator = compiled_validator(name)
    if validator.is_valid(instance):
        return
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.instance_path), e.message))
    err = _deepest(errors[0])
    field = _field_of(err, prefix) or prefix or "(root)"
    raise PermanentError(
        f"event invalid: {field} {_rule_of(err)}", reason="EVENT_INVALID", field=field, schema=name
    )


def validate(event: dict[str, Any], expected_type: str | None = None) -> dict[str, Any]:
    """Validate an envelope and its payload; raise ``PermanentError(EVENT_INVALID, field=...)``."""
    _check("envelope.schema.json", event, "")
    if expected_type is not None and event["type"] != expected_type:
        raise PermanentError(
            f"event type {event['type']!r}, expected {expected_type!r}", reason="EVENT_INVALID", field="type"
        )
    _check(event["type"], event["data"], "data")
    return event


def timestamp(when: datetime | None = None, *, microseconds: bool = False) -> str:
    """The one time format of every event: ISO 8601 in UTC with milliseconds and ``Z`` (now when ``None``).

    ``microseconds``: six fractional digits instead of three, for a time another system gave to the microsecond
    (РЭМД's registrationDateTime), which milliseconds would cut."""
    t = (when or datetime.now(UTC)).astimezone(UTC)
    fraction = f"{t.microsecond:06d}" if microseconds else f"{t.microsecond // 1000:03d}"
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


def status_data(
    local_uid: str,
    status: str,
    *,
    organization: str | None,
    mis_id: str,
    emdr_id: str | None = None,
    reason: str | None = None,
    remd_code: str | None = None,
    message: str | None = None,
    message_ids: Sequence[str] = (),
    warnings: Sequence[tuple[str, str]] = (),
) -> StatusData:
    """The ``emd.document.status`` payload: what the МИС shows for its document. The document is
    (``organization``, ``local_uid``); ``mis_id``: the МИС it is for, whose topic it goes to. ``warnings``: РЭМД's
    registrationWarnings as (code, message), remarks the МИС should show though the document is registered
    (the field is present only when there are some)."""
    data: StatusData = {
        "localUid": local_uid,
        "organizationOid": organization,
        "misId": mis_id,
        "status": status,
        "emdrId": emdr_id,
        "reason": reason,
        "remdCode": remd_code,
        "message": (message or "")[:MAX_STATUS_MESSAGE_CHARS] or None,
        "messageIds": list(message_ids),
    }
    if warnings:
        data["warnings"] = [{"code": code, "message": text} for code, text in warnings]
    return data


def submission_data(
    *,
    message_id: str,
    message_ids: Sequence[str],
    attempt: int,
    sent_at: datetime,
    accepted_at: datetime | None,
    endpoint: str,
    environment: str,
) -> SubmissionData:
    """The ``submission`` block of ``sent`` and ``acknowledged``: the accepted attempt, every MessageID, and
    the organisation's РЭМД environment (test or production). ``accepted_at`` is unknown (``None``) when the
    callback overtook the synchronous answer."""
    return {
        "messageId": message_id,
        "messageIds": list(message_ids),
        "attempt": attempt,
        "sentAt": timestamp(sent_at),
        "acceptedAt": timestamp(accepted_at) if accepted_at else None,
        "endpoint": endpoint,
        "environment": environment,
    }


def new_trace_id() -> str:
    return uuid.uuid4().hex


def new_event(type: str, data: Mapping[str, Any], *, source: str, trace_id: str | None = None) -> Envelope:
    """A fresh, validated envelope (new eventId, time = now UTC, new trace id unless one is carried on)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    if trace_id is not None and not _TRACE.match(trace_id):
        raise ValueError(f"trace id must be 32 lower-case hex characters, got {trace_id!r}")
    event: Envelope = {
        "eventId": str(uuid.uuid4()),
        "type": type,
        "schemaVersion": SCHEMA_VERSION,
        "time": timestamp(),
        "traceId": trace_id or new_trace_id(),
        "source": source,
        "data": dict(data),
    }
    validate(dict(event))
    return event


def encode(event: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON, compact, Cyrillic kept as is (smaller and readable in kcat)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(value: bytes, expected_type: str | None = None) -> dict[str, Any]:
    """Parse and validate a record value; anything malformed is ``PermanentError(EVENT_INVALID)``."""
    try:
        event = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(
            f"record value is not UTF-8 JSON: {exc}", reason="EVENT_INVALID", field="(value)"
        ) from None
    return validate(event, expected_type)


def headers_for(event: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka record headers every pipeline record carries."""
    return [
        (HEADER_EVENT_TYPE, event["type"].encode()),
        (HEADER_TRACE_ID, event["traceId"].encode()),
        (HEADER_SCHEMA_VERSION, str(event["schemaVersion"]).encode()),
    ]


def read_headers(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The ``emd-*`` headers of a record as strings (absent ones omitted)."""
    out: dict[str, str] = {}
    for key, value in headers or []:
        if key in (HEADER_EVENT_TYPE, HEADER_TRACE_ID, HEADER_SCHEMA_VERSION) and value is not None:
            out[key] = value.decode("utf-8", errors="replace")
    return out
