"""The event contract: a versioned JSON envelope around a typed payload, validated by JSON Schema.

The schemas are normative and live in ONE place, ``services/data/schemas/`` (packaged with the code);
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
reference implementation); only an event it finds invalid goes through ``jsonschema``, which says which field
and which rule, and is the judge: what it accepts passes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, NotRequired, TypedDict

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from services.errors import PermanentError

__all__ = [
    "SCHEMA_VERSION", "EVENT_TYPES", "CREATED", "SIGNED", "SENT", "ACKNOWLEDGED", "STATUS",
    "HEADER_EVENT_TYPE", "HEADER_TRACE_ID", "HEADER_SCHEMA_VERSION",
    "Envelope", "CreatedData", "PatientData", "SignerData", "DocumentData", "RecipientData", "AssociationData",
    "new_event", "new_trace_id", "encode", "decode", "validate", "headers_for", "read_headers",
    "schema_files", "load_schema", "compiled_validator", "reference_validator", "timestamp", "status_data", "submission_data",
    "STATUS_SIGNED", "STATUS_SENT", "STATUS_RETRYING", "STATUS_REGISTERED", "STATUS_REJECTED", "STATUS_FAILED",
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
    document: DocumentData
    recipient: NotRequired[RecipientData | None]
    associations: NotRequired[list[AssociationData]]


class Envelope(TypedDict):
    eventId: str
    type: str
    schemaVersion: int
    time: str
    traceId: str
    source: str
    data: dict[str, Any]


def schema_files() -> dict[str, Any]:
    """``{file name: Traversable}`` of every packaged schema."""
    folder = resources.files("services").joinpath("data", "schemas")
    return {p.name: p for p in folder.iterdir() if p.name.endswith(".schema.json")}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by file name (``envelope.schema.json``) or event type (``emd.document.created``)."""
    if name in EVENT_TYPES:
        name = f"{name.removeprefix('emd.')}.schema.json"
    return json.loads(schema_files()[name].read_text(encoding="utf-8"))


@cache
def _registry() -> Registry:
    resources_ = [(s["$id"], Resource.from_contents(s)) for s in map(load_schema, schema_files())]
    return Registry().with_resources(resources_)


@cache
def reference_validator(name: str) -> Draft202012Validator:
    """jsonschema's validator of the schema: it explains what the compiled check refuses (field and rule)
    and has the last word; the tests hold the two to the same verdicts."""
    return Draft202012Validator(load_schema(name), registry=_registry())


@cache
def compiled_validator(name: str) -> Any:
    """The fast check of every event: the schema compiled by jsonschema-rs, its ``$ref``s resolved from the packaged schemas (never fetched)."""
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in map(load_schema, schema_files())])
    return jsonschema_rs.Draft202012Validator(load_schema(name), registry=registry, offline=True)


def _field_of(error: ValidationError, prefix: str) -> str:
    parts = [prefix] if prefix else []
    parts += [f"[{p}]" if isinstance(p, int) else str(p) for p in error.absolute_path]
    if error.validator == "required":
        m = re.match(r"'([^']+)' is a required property", error.message)
        if m:
            parts.append(m.group(1))
    elif error.validator in ("additionalProperties", "unevaluatedProperties"):
        m = re.search(r"'([^']+)' (?:was|were) unexpected", error.message) or re.search(r"\('([^']+)'", error.message)
        if m:
            parts.append(m.group(1))
    return ".".join(parts).replace(".[", "[")


def _check(name: str, instance: Any, prefix: str) -> None:
    if compiled_validator(name).is_valid(instance):
        return
    errors = sorted(reference_validator(name).iter_errors(instance), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        # The deepest concrete error is the most useful one; `oneOf` and friends hide it in context.
        err = errors[0]
        while err.context:
            err = sorted(err.context, key=lambda e: -len(list(e.absolute_path)))[0]
        field = _field_of(err, prefix) or prefix or "(root)"
        # Say which rule failed, never the value: it may be a СНИЛС or a name, and this message is logged.
        if err.validator == "required":
            rule = "is required"
        elif err.validator in ("additionalProperties", "unevaluatedProperties"):
            rule = "is not a field of this schema"
        else:
            rule = f"violates {err.validator} {json.dumps(err.validator_value, ensure_ascii=False)[:120]}"
        raise PermanentError(f"event invalid: {field} {rule}", reason="EVENT_INVALID",
                             field=field, schema=name)


def validate(event: dict[str, Any], expected_type: str | None = None) -> dict[str, Any]:
    """Validate an envelope and its payload; raise ``PermanentError(EVENT_INVALID, field=...)``."""
    _check("envelope.schema.json", event, "")
    if expected_type is not None and event["type"] != expected_type:
        raise PermanentError(f"event type {event['type']!r}, expected {expected_type!r}",
                             reason="EVENT_INVALID", field="type")
    _check(event["type"], event["data"], "data")
    return event


def timestamp(when: datetime | None = None) -> str:
    """The one time format of every event: ISO 8601 in UTC with milliseconds and ``Z`` (now when ``None``)."""
    t = (when or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def status_data(local_uid: str, status: str, *, emdr_id: str | None = None, reason: str | None = None,
                remd_code: str | None = None, message: str | None = None, message_ids: Sequence[str] = (),
                warnings: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The ``emd.document.status`` payload: what the МИС shows for its document. ``warnings``: РЭМД's
    registrationWarnings as (code, message), remarks the МИС should show though the document is registered
    (the field is present only when there are some)."""
    data = {"localUid": local_uid, "status": status, "emdrId": emdr_id, "reason": reason, "remdCode": remd_code,
            "message": (message or "")[:MAX_STATUS_MESSAGE_CHARS] or None, "messageIds": list(message_ids)}
    if warnings:
        data["warnings"] = [{"code": code, "message": text} for code, text in warnings]
    return data


def submission_data(*, message_id: str, message_ids: Sequence[str], attempt: int, sent_at: datetime,
                    accepted_at: datetime | None, endpoint: str, environment: str) -> dict[str, Any]:
    """The ``submission`` block of ``sent`` and ``acknowledged``: the accepted attempt, every MessageID, and
    the organisation's РЭМД environment (test or production). ``accepted_at`` is unknown (``None``) when the
    callback overtook the synchronous answer."""
    return {"messageId": message_id, "messageIds": list(message_ids), "attempt": attempt,
            "sentAt": timestamp(sent_at), "acceptedAt": timestamp(accepted_at) if accepted_at else None,
            "endpoint": endpoint, "environment": environment}


def new_trace_id() -> str:
    return uuid.uuid4().hex


def new_event(type: str, data: dict[str, Any], *, source: str, trace_id: str | None = None) -> Envelope:
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
        "data": data,
    }
    validate(dict(event))
    return event


def encode(event: dict[str, Any]) -> bytes:
    """UTF-8 JSON, compact, Cyrillic kept as is (smaller and readable in kcat)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(value: bytes, expected_type: str | None = None) -> dict[str, Any]:
    """Parse and validate a record value; anything malformed is ``PermanentError(EVENT_INVALID)``."""
    try:
        event = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(f"record value is not UTF-8 JSON: {exc}", reason="EVENT_INVALID", field="(value)") from None
    return validate(event, expected_type)


def headers_for(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka record headers every pipeline record carries."""
    return [(HEADER_EVENT_TYPE, event["type"].encode()),
            (HEADER_TRACE_ID, event["traceId"].encode()),
            (HEADER_SCHEMA_VERSION, str(event["schemaVersion"]).encode())]


def read_headers(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The ``emd-*`` headers of a record as strings (absent ones omitted)."""
    out: dict[str, str] = {}
    for key, value in headers or []:
        if key in (HEADER_EVENT_TYPE, HEADER_TRACE_ID, HEADER_SCHEMA_VERSION) and value is not None:
            out[key] = value.decode("utf-8", errors="replace")
    return out
