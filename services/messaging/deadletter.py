"""The dead-letter record format, one for every stage (docs/dead-letters.md).

A dead letter is the original record (key, value, headers) plus headers that say where it came from and
why it failed. Spring for Apache Kafka's names are used where they fit, so existing tooling reads them;
ours carry what СТП ЕГИСЗ (federal support) asks for: the SOAP MessageID of every attempt.

Re-dead-lettering a record (after a replay that failed again) *replaces* the failure headers instead of
appending a second set (Spring issue #1994: header pile-up until RecordTooLargeException); only the first
failure time and the MessageIDs of earlier attempts are carried forward.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from producer import events

#: Spring-compatible headers
ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"

#: ours
STAGE = "emd-dlt-stage"
REASON = "emd-dlt-reason"
REMD_CODE = "emd-dlt-remd-code"
REMD_MESSAGE = "emd-dlt-remd-message"
MESSAGE_IDS = "emd-message-ids"  # every SOAP MessageID sent for this document, oldest first
ATTEMPTS = "emd-attempt"  # attempts made so far (also used by the retry tiers)
FIRST_FAILURE = "emd-dlt-first-failure"
LAST_FAILURE = "emd-dlt-last-failure"
LOCAL_UID = "emd-dlt-local-uid"
KIND = "emd-dlt-kind"
ORGANIZATION = "emd-dlt-organization"
CATEGORY = "emd-dlt-category"  # transient | data | configuration | internal
HINT = "emd-dlt-hint"
REPLAY_COUNT = "emd-replay-count"  # set by `emd dlq replay`: a loop guard

#: where a record first entered the retry path (so a dead letter names the real origin, not a tier)
RETRY_ORIGINAL_TOPIC = "emd-retry-original-topic"
RETRY_ORIGINAL_PARTITION = "emd-retry-original-partition"
RETRY_ORIGINAL_OFFSET = "emd-retry-original-offset"
RETRY_DUE = "emd-retry-due"  # epoch milliseconds: not to be handled before
RETRY_REASON = "emd-retry-reason"


def retry_headers(
    headers: Mapping[str, bytes | str],
    *,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    delay: float,
    reason: str,
    attempt: int | None = None,
    message_ids: Sequence[str] = (),
    now: float | None = None,
) -> dict[str, bytes]:
    """Headers of a record going to a retry tier: the origin it first came from (kept across tiers), when it is
    due (``delay`` seconds after ``now``, epoch seconds, default the present), why, and (when given) its attempt
    count and every MessageID so far."""
    out = {k: v if isinstance(v, bytes) else str(v).encode() for k, v in headers.items()}
    out.setdefault(RETRY_ORIGINAL_TOPIC, topic.encode())
    if partition is not None:
        out.setdefault(RETRY_ORIGINAL_PARTITION, str(partition).encode())
    if offset is not None:
        out.setdefault(RETRY_ORIGINAL_OFFSET, str(offset).encode())
    out[RETRY_DUE] = str(int(((time.time() if now is None else now) + delay) * 1000)).encode()
    out[RETRY_REASON] = reason.encode()
    if attempt is not None:
        out[ATTEMPTS] = str(attempt).encode()
    if message_ids:
        out[MESSAGE_IDS] = ",".join(message_ids).encode()
    return out


#: every failure header starts with one of these (replaced, not appended, on a second dead letter)
FAILURE_PREFIXES = ("kafka_dlt-", "emd-dlt-")
MAX_MESSAGE_CHARS = 2000  # a header, not a log file: long stack texts made records too large elsewhere


@dataclass(frozen=True, kw_only=True)
class Failure:
    """Why a record is being dead-lettered."""

    stage: str
    reason: str
    message: str
    exception_fqcn: str
    remd_code: str | None = None
    remd_message: str | None = None
    category: str | None = None
    hint: str | None = None
    message_ids: tuple[str, ...] = ()
    local_uid: str | None = None
    kind: str | None = None
    organization: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def utc(epoch_seconds: float) -> datetime:
    """An epoch time as an aware UTC datetime (a failure's ``at``)."""
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def split_ids(value: bytes | str | None) -> list[str]:
    text = _s(value) or ""
    return [x for x in (p.strip() for p in text.split(",")) if x]


def merge_ids(*groups: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for g in groups:
        for i in g:
            if i and i not in seen:
                seen.append(i)
    return seen


def dead_letter_headers(
    *,
    original_headers: Mapping[str, bytes],
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    consumer_group: str,
    failure: Failure,
) -> list[tuple[str, bytes]]:
    """Headers of the dead-letter record: the original ones (minus old failure headers) plus this failure's."""
    previous_first = _s(original_headers.get(FIRST_FAILURE))
    ids = merge_ids(split_ids(original_headers.get(MESSAGE_IDS)), failure.message_ids)
    # A record that went through retry tiers names its real origin, not the tier topic.
    o_topic = _s(original_headers.get(RETRY_ORIGINAL_TOPIC)) or topic
    o_part = _s(original_headers.get(RETRY_ORIGINAL_PARTITION)) or str(partition)
    o_off = _s(original_headers.get(RETRY_ORIGINAL_OFFSET)) or str(offset)
    kept = [
        (k, v) for k, v in original_headers.items() if not k.startswith(FAILURE_PREFIXES) and k != MESSAGE_IDS
    ]
    now = events.timestamp(failure.at)
    ours: dict[str, str | None] = {
        ORIGINAL_TOPIC: o_topic,
        ORIGINAL_PARTITION: o_part,
        ORIGINAL_OFFSET: o_off,
        ORIGINAL_TIMESTAMP: str(timestamp_ms),
        ORIGINAL_CONSUMER_GROUP: consumer_group,
        EXCEPTION_FQCN: failure.exception_fqcn,
        EXCEPTION_MESSAGE: failure.message[:MAX_MESSAGE_CHARS],
        STAGE: failure.stage,
        REASON: failure.reason,
        REMD_CODE: failure.remd_code,
        REMD_MESSAGE: (failure.remd_message or "")[:MAX_MESSAGE_CHARS] or None,
        MESSAGE_IDS: ",".join(ids) or None,
        FIRST_FAILURE: previous_first or now,
        LAST_FAILURE: now,
        LOCAL_UID: failure.local_uid,
        KIND: failure.kind,
        ORGANIZATION: failure.organization,
        CATEGORY: failure.category,
        HINT: failure.hint,
    }
    return kept + [(k, v.encode()) for k, v in ours.items() if v is not None]


def describe(headers: Mapping[str, bytes]) -> dict[str, str]:
    """The failure headers of a dead letter as a plain dict (for `emd dlq` and support exports)."""
    return {
        k: _s(v) or ""
        for k, v in headers.items()
        if k.startswith(FAILURE_PREFIXES) or k in (MESSAGE_IDS, ATTEMPTS, REPLAY_COUNT)
    }
