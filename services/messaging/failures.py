"""Failure routing: given a record, what its handler raised and the stage's policy, the records to produce.

Pure: no I/O, no clock but the ``now`` it is given. The runtime produces what ``route`` returns, waits for the
broker's acknowledgement, and only then marks the record done:

* ``TransientError`` on a stage with retry tiers → the record, unchanged, on the tier of its next attempt, with a
  due time (exponential backoff with jitter, at least the error's ``defer``), its origin and every MessageID so
  far (``deadletter.retry_headers``); once ``max_attempts`` are used up → the dead letter ``RETRIES_EXHAUSTED``;
* ``TransientError`` on a stage without tiers: the runtime retries in place (``InPlaceRetry``), and calls
  ``route`` once that time is over → the dead letter with the error's own reason;
* ``PermanentError``, or any other exception (a bug) → the dead letter (``deadletter.dead_letter_headers``),
  together with the stage's ``on_dead_letter`` outputs (the МИС's ``failed`` status).

A failure's category (who must act) and hint come from the РЭМД code table when the failure carries a РЭМД code,
else from ``services/reasons.py``. A hook that raises (``describe_failure``, ``on_dead_letter``) never loses the
dead letter: it is logged and left out.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from producer.errors import EmdError, TransientError
from services.logs import get_logger
from services.messaging import deadletter as dl
from services.messaging.records import Output, Record
from services.reasons import reason_info

log = get_logger(__name__)

#: ``(record, exception) -> extra dead-letter fields`` (local_uid, kind, organization, remd_code, hint...)
DescribeFailure = Callable[[Record, BaseException], Mapping[str, Any]]
#: ``(record, failure) -> outputs`` produced together with the dead letter (the МИС's status)
OnDeadLetter = Callable[[Record, dl.Failure], Sequence[Output]]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Non-blocking retries through tier topics, exponential backoff with jitter.

    :param topics: the tier topics, shortest delay first (``producer.topology.SENDER_RETRIES``).
    :param base_delay: seconds before the first retry (default 60).
    :param max_delay: the longest wait between attempts (default 6 h).
    :param max_attempts: attempts in all, the first included, before the dead letter (default 12).
    :param jitter: ± fraction of the delay, so a burst of failures does not come back as a burst.
    """

    topics: tuple[str, ...]
    base_delay: float = 60.0
    max_delay: float = 6 * 3600.0
    max_attempts: int = 12
    jitter: float = 0.2

    def delay(
        self, attempt: int, *, at_least: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds before ``attempt`` (1 = the first retry), jittered, never under ``at_least``."""
        d = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        uniform = rng.uniform if rng is not None else random.uniform
        d *= 1 + uniform(-self.jitter, self.jitter)
        return max(d, at_least or 0.0)

    def topic_for(self, attempt: int) -> str:
        return self.topics[min(attempt - 1, len(self.topics) - 1)]


@dataclass(frozen=True, kw_only=True)
class InPlaceRetry:
    """How a stage without retry tiers retries a transient failure: in place, with backoff, for a bounded time.

    The partition's other records go on meanwhile; a record that never succeeds must not hold its
    partition's commits forever, so after ``max_seconds`` it is dead-lettered with its reason.
    """

    max_seconds: float
    first_delay: float = 1.0
    max_delay: float = 60.0

    def next_delay(self, delay: float) -> float:
        return min(delay * 2, self.max_delay)


@dataclass(frozen=True, kw_only=True)
class FailurePolicy:
    """What a stage does with a failed record.

    :param stage: the stage name (dead-letter header, logs).
    :param group_id: its consumer group (dead-letter header).
    :param dead_letter_topic: where failures go.
    :param retry: the retry tiers; ``None``: transient failures are retried in place, then dead-lettered.
    :param describe_failure: extra dead-letter fields of a record.
    :param on_dead_letter: outputs produced together with the dead letter; ``failure.message_ids`` holds every
        MessageID so far.
    """

    stage: str
    group_id: str
    dead_letter_topic: str
    retry: RetryPolicy | None = None
    describe_failure: DescribeFailure | None = None
    on_dead_letter: OnDeadLetter | None = None


@dataclass(frozen=True, kw_only=True)
class Routed:
    """What to produce for a failed record, and what to say about it."""

    outcome: Literal["retry", "dead_letter"]
    outputs: tuple[Output, ...]
    reason: str
    #: the dead letter's failure (``outcome == "dead_letter"``)
    failure: dl.Failure | None = None
    #: the retry's attempt number and its delay in seconds (``outcome == "retry"``)
    attempt: int | None = None
    delay: float | None = None
    message_ids: tuple[str, ...] = ()


def route(
    record: Record, exc: BaseException, policy: FailurePolicy, *, now: float, rng: random.Random | None = None
) -> Routed:
    """The outputs that settle ``record`` after ``exc`` (``now``: epoch seconds, the retry's due time is from it)."""
    if isinstance(exc, TransientError) and policy.retry is not None:
        attempt = record.attempt + 1
        if attempt < policy.retry.max_attempts:
            return _retry(record, exc, policy.retry, attempt=attempt, now=now, rng=rng)
        return dead_letter(record, exc, policy, reason="RETRIES_EXHAUSTED", attempts=attempt, now=now)
    return dead_letter(record, exc, policy, now=now)


def _retry(
    record: Record,
    exc: TransientError,
    retry: RetryPolicy,
    *,
    attempt: int,
    now: float,
    rng: random.Random | None,
) -> Routed:
    delay = retry.delay(attempt, at_least=exc.defer, rng=rng)
    ids = dl.merge_ids(dl.split_ids(record.headers.get(dl.MESSAGE_IDS)), message_ids_of(exc))
    headers = dl.retry_headers(
        record.headers,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        delay=delay,
        reason=exc.reason,
        attempt=attempt,
        message_ids=ids,
        now=now,
    )
    return Routed(
        outcome="retry",
        outputs=(Output(retry.topic_for(attempt), record.value, record.key, headers),),
        reason=exc.reason,
        attempt=attempt,
        delay=delay,
        message_ids=tuple(ids),
    )


def dead_letter(
    record: Record,
    exc: BaseException,
    policy: FailurePolicy,
    *,
    now: float,
    reason: str | None = None,
    attempts: int | None = None,
) -> Routed:
    """The dead letter of ``record`` (its reason: ``reason``, else the error's, else ``UNEXPECTED_ERROR``)."""
    details: dict[str, Any] = dict(exc.details) if isinstance(exc, EmdError) else {}
    if policy.describe_failure is not None:
        try:
            details = {**policy.describe_failure(record, exc), **details}
        except Exception:  # describing must never lose the dead letter
            log.exception("describe_failure failed", stage=policy.stage)
    code = reason or (exc.reason if isinstance(exc, EmdError) else None) or "UNEXPECTED_ERROR"
    # who must act: the РЭМД code's own category when the failure carries one, else the catalogue's
    known = reason_info(code) or reason_info("UNEXPECTED_ERROR")
    failure = dl.Failure(
        stage=policy.stage,
        reason=code,
        message=str(exc) or exc.__class__.__name__,
        exception_fqcn=f"{type(exc).__module__}.{type(exc).__qualname__}",
        remd_code=_text(details.get("remd_code")),
        remd_message=_text(details.get("remd_message")),
        category=_text(details.get("category")) or (known.category if known else None),
        hint=_text(details.get("hint")) or (known.hint if known else None),
        message_ids=tuple(message_ids_of(exc)),
        local_uid=_text(details.get("local_uid")) or record.key,
        kind=_text(details.get("kind")),
        organization=_text(details.get("organization")),
        at=dl.utc(now),
    )
    headers = dict(
        dl.dead_letter_headers(
            original_headers=record.headers,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            consumer_group=policy.group_id,
            failure=failure,
        )
    )
    headers[dl.ATTEMPTS] = str(attempts if attempts is not None else record.attempt + 1).encode()
    ids = tuple(dl.split_ids(headers.get(dl.MESSAGE_IDS)))
    extra: Sequence[Output] = ()
    if policy.on_dead_letter is not None:
        try:
            extra = policy.on_dead_letter(record, dataclasses.replace(failure, message_ids=ids)) or ()
        except Exception:  # the hook must never lose the dead letter
            log.exception("on_dead_letter failed", stage=policy.stage, local_uid=record.key)
    return Routed(
        outcome="dead_letter",
        outputs=(Output(policy.dead_letter_topic, record.value, record.key, headers), *extra),
        reason=code,
        failure=failure,
        message_ids=ids,
    )


def own_dead_letters(outputs: Sequence[Output], dead_letter_topic: str) -> list[str]:
    """The categories of the dead letters a handler returned itself (the status worker's РЭМД rejections)."""
    categories = []
    for out in outputs:
        if out.topic == dead_letter_topic:
            raw = out.headers.get(dl.CATEGORY)
            categories.append((raw.decode() if isinstance(raw, bytes) else raw) or "unknown")
    return categories


def message_ids_of(exc: BaseException) -> list[str]:
    """The SOAP MessageIDs an error carries (``message_ids`` and ``message_id`` details), oldest first."""
    details: Mapping[str, Any] = exc.details if isinstance(exc, EmdError) else {}
    ids = [str(i) for i in details.get("message_ids") or ()]
    if details.get("message_id"):
        ids.append(str(details["message_id"]))
    return ids


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)
