"""The record contract at the door: what a record on ``emd.document.created.<misId>`` must be.

The JSON Schemas (``producer.events``) say what the value is. A Kafka record is more than its value, and the rest
is contract too (docs/asyncapi.yaml, docs/integration.md):

* **key** = the document's ``localUid`` (UTF-8), the ``data.localUid`` of its value: every event of one document
  stays in one partition, in order, through every stage. A record keyed otherwise would still register, but its
  later events could overtake each other (``KEY_NOT_LOCAL_UID``);
* **headers** ``emd-event-type`` = the event's ``type``, ``emd-trace-id`` = its ``traceId``,
  ``emd-schema-version`` = its ``schemaVersion``: what a consumer, a tracer or an operator reads without parsing
  the value (``HEADER_MISSING``, ``HEADER_MISMATCH``). Other headers are allowed and ignored;
* **kind registrable on the creation date**: РЭМД refuses a document whose НСИ 1520 kind is not in force on its
  ``creationTime`` (START_DATE … END_DATE; ``NO_DOCUMENT_KIND_ON_DATE``); so does the door, before anything is
  signed (``KIND_NOT_VALID_ON_DATE``). A kind the shipped НСИ 1520 does not know is left to РЭМД.

One set of checks, three callers: the signer (``services.pipeline.document_signer``) before anything is fetched
or signed, the МИС library (``producer.client.DocumentPublisher.send``) before anything is sent, and
``emd publish --dry-run`` (a СЭМД file, or a record a МИС in another language would send: ``--record``).
Every failure is a ``PermanentError`` whose ``reason`` is one of the codes above and whose ``field`` names what
is wrong (``key``, ``headers.emd-trace-id``, ``kind``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from producer import events, nsi
from producer.errors import PermanentError

__all__ = [
    "REQUIRED_HEADERS",
    "check_headers",
    "check_key",
    "check_kind_on_date",
    "check_record",
    "kind_date_problem",
    "read_record",
]

#: the headers every record of the pipeline carries, each equal to a field of the value
REQUIRED_HEADERS = (events.HEADER_EVENT_TYPE, events.HEADER_TRACE_ID, events.HEADER_SCHEMA_VERSION)

Headers = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def _as_dict(headers: Headers | None) -> dict[str, str | None]:
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    out: dict[str, str | None] = {}
    for name, value in items:
        out.setdefault(name, _text(value))  # the first of repeated headers, as Kafka clients read them
    return out


def check_headers(headers: Headers | None, event: Mapping[str, Any]) -> None:
    """Each of :data:`REQUIRED_HEADERS` present and equal to the field of ``event`` it mirrors."""
    found = _as_dict(headers)
    expected = {name: _text(value) for name, value in events.headers_for(event)}
    for name in REQUIRED_HEADERS:
        value = found.get(name)
        if not value:
            raise PermanentError(
                f"the record has no header {name} (every record carries {', '.join(REQUIRED_HEADERS)})",
                reason="HEADER_MISSING",
                field=f"headers.{name}",
            )
        if value != expected[name]:
            raise PermanentError(
                f"header {name} is {value[:80]!r}, the event says {expected[name]!r}",
                reason="HEADER_MISMATCH",
                field=f"headers.{name}",
            )


def check_key(key: bytes | str | None, event: Mapping[str, Any]) -> None:
    """The record's key is the event's ``data.localUid``."""
    local_uid = event["data"]["localUid"]
    text = _text(key)
    if text != local_uid:
        shown = "no key" if text is None else f"key {text[:80]!r}"
        raise PermanentError(
            f"the record has {shown}, not the document's localUid {local_uid!r}: every event of a document is "
            "keyed by its localUid",
            reason="KEY_NOT_LOCAL_UID",
            field="key",
        )


def _creation_date(creation_time: str) -> date | None:
    try:
        return datetime.fromisoformat(creation_time).date()  # the day as the document writes it
    except ValueError:
        return None


def kind_date_problem(kind: str, creation_time: str) -> str | None:
    """Why РЭМД would refuse a document of ``kind`` created at ``creation_time`` (ISO 8601) for its date, or None
    (registrable then, or a kind the shipped НСИ 1520 does not know)."""
    row = nsi.kind_by_code(kind)
    day = _creation_date(creation_time)
    if row is None or day is None or row.registrable_on(day):
        return None
    window = f"{row.start_date or '…'} – {row.end_date or '…'}"
    return (
        f"kind {row.code} ({row.name}) is registrable for documents created {window} (НСИ 1520, "
        f"{nsi.describe_version(row)}); this one was created on {day.isoformat()}"
    )


def check_kind_on_date(data: Mapping[str, Any]) -> None:
    """The ``created`` payload's kind is in force on its creation date (НСИ 1520), else ``KIND_NOT_VALID_ON_DATE``."""
    problem = kind_date_problem(str(data["kind"]), str(data["creationTime"]))
    if problem is not None:
        raise PermanentError(problem, reason="KIND_NOT_VALID_ON_DATE", field="kind", kind=data["kind"])


def check_record(key: bytes | str | None, headers: Headers | None, event: Mapping[str, Any]) -> None:
    """Everything but the value's schema: the headers, the key, the kind on its date (a created event)."""
    check_headers(headers, event)
    check_key(key, event)
    if event["type"] == events.CREATED:
        check_kind_on_date(event["data"])


def read_record(
    key: bytes | str | None, headers: Headers | None, value: bytes, *, expected_type: str = events.CREATED
) -> dict[str, Any]:
    """The event of a record as a consumer at the door reads it: the value decoded and validated against the
    schemas (``EVENT_INVALID``), then :func:`check_record`."""
    event = events.decode(value, expected_type=expected_type)
    check_record(key, headers, event)
    return event
