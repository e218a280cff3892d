"""Dead letters as support reads them: one model over the three DLT topics, filters, newest first, masking, exports.

A :class:`DeadLetter` is built from a dead-letter record (``services.messaging.deadletter`` writes the headers)
and the lenient reading of its value (the original event). Nothing here talks to Kafka: ``reader`` brings
the records, ``emd dlq`` and the console call these functions.

Masking (``mask_xml``, ``mask_event``): what support shows by default carries no patient data — СНИЛС,
names and birth dates are replaced (the doctor's too: a masked screen is shareable). ``--unmask`` (logged
in the desk's audit log) shows the bytes as they were.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from producer import topology
from producer.xmlsafe import parse_xml
from services.logs import is_secret_key, mask_text, redact_value
from services.messaging import deadletter as dl
from services.remd import n3_names as n3n
from services.remd import names as n
from services.timestamps import for_people

MOSCOW = ZoneInfo("Europe/Moscow")
#: dead-letter topic → the stage that wrote it
STAGE_OF_TOPIC = {
    topology.CREATED_DLT.name: "signer",
    topology.SIGNED_DLT.name: "sender",
    topology.SENT_DLT.name: "acknowledger",
}
TOPIC_OF_STAGE = {stage: topic for topic, stage in STAGE_OF_TOPIC.items()}
#: ФРМО OIDs are 1.2.643.5.1.13.13.12.2.<subject of the Federation>.<number>
_FRMO = re.compile(r"^1\.2\.643\.5\.1\.13\.13\.12\.2\.(\d+)\.")
EXPORT_FIELDS = (
    "messageId",
    "failedAtUtc",
    "failedAtMoscow",
    "system",
    "organization",
    "region",
    "kind",
    "localUid",
    "stage",
    "reason",
    "code",
    "message",
)


def region_of(oid: str | None) -> str | None:
    """The subject-of-the-Federation code of a ФРМО OID (``…12.2.77.…`` → ``77``), None for another OID."""
    m = _FRMO.match(oid or "")
    return m.group(1) if m else None


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record: where it is, its bytes, its headers (decoded text)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    value: bytes = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
        *,
        timestamp_ms: int | None = None,
    ) -> DeadLetter:
        return cls(
            topic,
            partition,
            offset,
            timestamp_ms,
            key.decode("utf-8", "replace") if key is not None else None,
            value or b"",
            {k: v.decode("utf-8", "replace") for k, v in headers if v is not None},
        )

    def header(self, name: str) -> str | None:
        return self.headers.get(name) or None

    @property
    def stage(self) -> str:
        return self.header(dl.STAGE) or STAGE_OF_TOPIC.get(self.topic, "?")

    @property
    def reason(self) -> str | None:
        return self.header(dl.REASON)

    @property
    def code(self) -> str | None:
        return self.header(dl.REMD_CODE)

    @property
    def category(self) -> str | None:
        return self.header(dl.CATEGORY)

    @property
    def hint(self) -> str | None:
        return self.header(dl.HINT)

    @property
    def local_uid(self) -> str | None:
        return self.header(dl.LOCAL_UID) or self.key or self.data.get("localUid")

    @property
    def kind(self) -> str | None:
        return self.header(dl.KIND) or self.data.get("kind")

    @property
    def organization(self) -> str | None:
        return self.header(dl.ORGANIZATION) or self.data.get("organizationOid")

    @property
    def system(self) -> str | None:
        return self.data.get("systemId")

    @property
    def message(self) -> str:
        return self.header(dl.REMD_MESSAGE) or self.header(dl.EXCEPTION_MESSAGE) or ""

    @property
    def message_ids(self) -> list[str]:
        return dl.split_ids(self.header(dl.MESSAGE_IDS))

    @property
    def message_id(self) -> str | None:
        """The request РЭМД answered with the error: the last MessageID (the one СТП asks for)."""
        ids = self.message_ids
        return ids[-1] if ids else None

    @property
    def replay_count(self) -> int:
        try:
            return int(self.header(dl.REPLAY_COUNT) or 0)
        except ValueError:
            return 0

    @cached_property
    def failed_at(self) -> dt.datetime:
        """When it was dead-lettered (the last failure; the record's timestamp when the header is missing)."""
        return _time(self.header(dl.LAST_FAILURE)) or dt.datetime.fromtimestamp(
            (self.timestamp_ms or 0) / 1000, dt.UTC
        )

    @property
    def first_failed_at(self) -> dt.datetime | None:
        return _time(self.header(dl.FIRST_FAILURE))

    @cached_property
    def event(self) -> dict[str, Any]:
        """The original event, read leniently ({} when the value is not one of ours)."""
        try:
            parsed = json.loads(self.value.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @property
    def data(self) -> dict[str, Any]:
        d = self.event.get("data")
        return d if isinstance(d, dict) else {}

    def summary(self) -> dict[str, Any]:
        """The JSON form of ``emd dlq list --json`` and ``GET /api/dead-letters``: no value, no patient data."""
        return {
            "localUid": self.local_uid,
            "stage": self.stage,
            "reason": self.reason,
            "code": self.code,
            "category": self.category,
            "hint": self.hint,
            "message": mask_text(self.message),
            "messageId": self.message_id,
            "messageIds": self.message_ids,
            "organization": self.organization,
            "region": region_of(self.organization),
            "kind": self.kind,
            "system": self.system,
            "failedAt": for_people(self.failed_at),
            "firstFailedAt": for_people(self.first_failed_at),
            "replayCount": self.replay_count,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }

    def export_row(self) -> dict[str, str]:
        """One row of ``emd dlq export``: what a ticket to СТП needs, nothing about the patient."""
        return {
            "messageId": self.message_id or "",
            "failedAtUtc": for_people(self.failed_at) or "",
            "failedAtMoscow": for_people(self.failed_at, MOSCOW) or "",
            "system": self.system or "",
            "organization": self.organization or "",
            "region": region_of(self.organization) or "",
            "kind": self.kind or "",
            "localUid": self.local_uid or "",
            "stage": self.stage,
            "reason": self.reason or "",
            "code": self.code or "",
            "message": mask_text(self.message),
        }


@dataclass(frozen=True, kw_only=True)
class Filters:
    """What ``emd dlq`` and the console filter on; every given field must match (AND)."""

    stage: str | None = None
    reason: str | None = None
    code: str | None = None
    category: str | None = None
    organization: str | None = None
    kind: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    message_id: str | None = None
    local_uid: str | None = None

    def topics(self) -> list[str]:
        return [TOPIC_OF_STAGE[self.stage]] if self.stage else list(TOPIC_OF_STAGE.values())

    def matches(self, d: DeadLetter) -> bool:
        if self.stage and d.stage != self.stage:
            return False
        for wanted, have in (
            (self.reason, d.reason),
            (self.code, d.code),
            (self.category, d.category),
            (self.organization, d.organization),
            (self.kind, d.kind),
            (self.local_uid, d.local_uid),
        ):
            if wanted and have != wanted:
                return False
        if self.since and d.failed_at < self.since:
            return False
        if self.until and d.failed_at >= self.until:
            return False
        if self.message_id:
            from producer.ids import normalize_message_id

            wanted_id = normalize_message_id(self.message_id)
            if wanted_id not in {normalize_message_id(m) for m in d.message_ids}:
                return False
        return True

    def key(self) -> str:
        """A stable text of the filters (the replay's consumer group is one per filter)."""
        return json.dumps(
            [
                self.stage,
                self.reason,
                self.code,
                self.category,
                self.organization,
                self.kind,
                for_people(self.since),
                for_people(self.until),
                self.message_id,
                self.local_uid,
            ]
        )


def newest_first(
    letters: Iterable[DeadLetter], filters: Filters | None = None, *, limit: int | None = None
) -> list[DeadLetter]:
    """The dead letters that match, newest failure first (ties: topic, partition, offset, for a stable order)."""
    found = [d for d in letters if filters is None or filters.matches(d)]
    found.sort(key=lambda d: (d.failed_at, d.topic, d.partition, d.offset), reverse=True)
    return found if limit is None else found[:limit]


def export_csv(letters: Sequence[DeadLetter]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for d in letters:
        writer.writerow(d.export_row())
    return out.getvalue()


def export_jsonl(letters: Sequence[DeadLetter]) -> str:
    return "".join(json.dumps(d.export_row(), ensure_ascii=False) + "\n" for d in letters)


# --- masking ---------------------------------------------------------------------------------------------
#: elements holding a person's data in a РЭМД or N3 message (the names live in services.remd.names and
#: n3_names; the older spellings stay so a request kept before a rename is masked too), compared lower-case
_PERSONAL_ELEMENTS = frozenset(
    e.lower()
    for e in (
        n.SNILS,
        n.SURNAME,
        n.NAME,
        n.PATR_NAME,
        n.BIRTH_DATE,
        n.PATIENT_SNILS,
        "family",
        "given",
        "patronymic",
        "birthDate",
        "birthTime",
        # N3.Health: names, birth dates, the СНИЛС as an identity document, and the attached СЭМД itself
        n3n.FAMILY_NAME,
        n3n.GIVEN_NAME,
        n3n.MIDDLE_NAME,
        n3n.BIRTH_DATE,
        "Birthdate",
        n3n.DOC_N,
        n3n.DATA,
    )
)
#: elements holding a secret: N3's ``guid`` is the clinic's auth token; any name saying password/secret/token
_SECRET_ELEMENTS = frozenset({n3n.GUID.lower()})
_XML_PERSONAL = re.compile(
    r"(<(?:[\w.-]+:)?(?:"
    + "|".join(map(re.escape, sorted(_PERSONAL_ELEMENTS | _SECRET_ELEMENTS)))
    + r")(?:\s[^>]*)?>)([^<]+)(</)",
    re.I,
)
_B64_TEXT = re.compile(r"^[A-Za-z0-9+/=\s]{100,}$")


def _blob(text: str) -> str:
    """What a base64 value is, by size, never its content: a signature's certificate names the doctor (name,
    СНИЛС), an МЧД names the head and the representative, a document the patient."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, binascii.Error):
        return mask_text(text)
    if raw[:1] == b"\x30":
        what = "CMS signature or certificate (DER)"
    elif raw.lstrip()[:1] == b"<":
        what = "XML document"
    else:
        what = "binary data"
    return f"[{what}, {len(raw)} bytes, base64: not shown]"


def _mask_element_text(element: Any) -> None:
    local = etree.QName(element).localname.lower() if isinstance(element.tag, str) else ""
    text = element.text
    if text is None or not text.strip():
        pass
    elif local in _PERSONAL_ELEMENTS or local in _SECRET_ELEMENTS or is_secret_key(local):
        element.text = "***"
    elif _B64_TEXT.match(text):
        element.text = _blob(text)
    elif text.lstrip().startswith("<"):  # an XML document carried as escaped text: masked in turn
        element.text = mask_xml(text.encode("utf-8")) or ""
    else:
        element.text = mask_text(text)
    for name, value in element.attrib.items():
        element.set(name, "***" if is_secret_key(str(name)) else mask_text(value))


def mask_xml(data: bytes | None) -> str | None:
    """A SOAP message as text with every personal and secret element's value replaced, every base64 value
    (signatures, the МЧД, the document) described by size instead of shown, and СНИЛС / names / dates in the
    remaining text masked. Bytes that do not parse as XML are masked as text."""
    if data is None:
        return None
    try:
        root = parse_xml(data)
    except Exception:  # noqa: BLE001 - a truncated or odd exchange is still shown, masked as text
        text = data.decode("utf-8", "replace")
        text = re.sub(r"[A-Za-z0-9+/=]{100,}", lambda m: _blob(m.group(0)), text)
        return mask_text(_XML_PERSONAL.sub(lambda m: f"{m.group(1)}***{m.group(3)}", text))
    for element in root.iter():
        _mask_element_text(element)
        if element.tail and element.tail.strip():
            element.tail = mask_text(element.tail)
    return etree.tostring(root, encoding="unicode")


_BASE64_BLOB = re.compile(r"^[A-Za-z0-9+/=\s]{200,}$")


def mask_event(event: Mapping[str, Any]) -> Any:
    """The original event with personal fields masked; the inline СЭМД and other base64 blobs (signatures, the
    МЧД, which name people too) are summarised by size."""

    def shorten(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        if isinstance(v, list):
            return [shorten(x) for x in v]
        if isinstance(v, str) and _BASE64_BLOB.match(v):
            return f"<{len(v)} characters of base64, not shown>"
        if isinstance(v, str) and v.lstrip().startswith("<"):  # an XML document (an МЧД) carried as text
            return mask_xml(v.encode("utf-8"))
        return v

    return redact_value(shorten(json.loads(json.dumps(event))))
