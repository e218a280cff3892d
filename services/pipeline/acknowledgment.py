"""sent → acknowledged: what one registerDocumentResult callback (or a missing one) does to a document.

``on_callback(raw, store=..., ...)`` returns the outputs (the runtime produces them, then commits);
``handle_callback`` is the same for the status worker's event loop (it runs ``on_callback`` in a thread
and lets it ask РЭМД through the worker's async ``poll``):

* correlation: ``relatesToMessage`` is the MessageID of ANY attempt (the sender records it in the
  lifecycle store before the request leaves, so a callback that overtakes the ``sent`` event still
  matches), never a bare ``localUid`` (another МИС's document may share it); a document we already know as
  registered is also found by ``registryItem/emdrId``. Unknown → ``TransientError(CALLBACK_UNCORRELATED)``: retried in
  place until the document appears, dead-lettered after ``pending_limit`` seconds.
* first final state wins, per attempt: the attempt row records which callback decided it
  (``outcome`` = registered | rejected | transient | duplicate, ``message`` = ``callback <its MessageID>``).
  A second callback for a decided attempt, or any callback once the document is registered, changes
  nothing. The same callback re-delivered after a crash (same MessageID) re-emits its outputs:
  at-least-once, never a second decision.
* success → ``mark_registered`` + ``emd.document.acknowledged`` (signed payload + submission rebuilt
  from the attempts + registration) + ``emd.document.status`` ``registered``. This holds also for a
  document already dead-lettered (a rejection of another attempt, a NO_ACKNOWLEDGMENT): РЭМД registered
  it, so registered is the truth and the МИС is told so; the earlier dead letter is obsolete (it stays on
  the topic; replaying it is harmless, the sender re-emits ``sent`` for a registered document and never
  sends it again).
* error with ``NOT_UNIQUE_PROVIDED_ID`` (РЭМД already holds a document with this localUid) while another
  attempt of ours may have reached ИПС — no outcome recorded (a crash or a lost answer), accepted, or a
  sender-side transient outcome (a timeout or reset cannot be told from a refusal afterwards), i.e. anything
  but a definite rejection — is a *duplicate registration*, not a rejection: the resend of a document
  whose first registration went through. It is reconciled by asking РЭМД (``searchRegistryItem`` for the
  localUid, via ``registry_lookup``; on ИПС followed by ``getRegistryItem``, whose answer then decides, below):
  found → registered exactly as a success callback (the attempt
  recorded ``duplicate``; the acknowledged event names the earliest such other attempt as the one
  registered); not found yet (the first registration still running) → ``TransientError(
  REGISTRATION_UNCONFIRMED)``, asked again later until ``pending_limit`` after the callback; then the
  callback decides nothing and the document goes the normal way (the deadline poll, NO_ACKNOWLEDGMENT).
  ``NOT_UNIQUE_PROVIDED_ID`` with no such other attempt stays a rejection: someone else registered
  this localUid.
* error, transient class (remd_codes) → ``mark_failed`` (the lifecycle then allows a new attempt) and
  the signed record onto the sender's first retry tier (a new MessageID comes with the resend).
* error, otherwise → ``mark_failed`` + the signed record to ``emd.document.sent.dlt`` with MessageIDs,
  code, category and hint + status ``rejected``.

Callbacks are keyed by their MessageID, so two callbacks of one document (the duplicate's and the first
attempt's) may be handled at once; both may then emit ``acknowledged`` with the same emdrId — at-least-once,
downstream is idempotent by localUid.

``on_deadline`` handles a document with no callback after ``ack_timeout``: poll ``searchRegistryItem``
via ``poll(doc) -> RegistryItem | None``; not found → dead letter ``NO_ACKNOWLEDGMENT``; found → on ИПС its record
is asked for (``poll.ask``: ``getRegistryItem``, the MessageID stored first) and nothing is decided yet; on a
route that cannot be asked so (N3), registered at once, as above.

A ``getRegistryItemResult`` (``on_callback`` tells it from a registration's callback by its element) is matched by
``relatesToMessage`` to the question asked (``find_registry_request``); the first answer is recorded on the
question and decides: the record asked for → registered, as above (``via`` poll, or duplicate when it
reconciles a NOT_UNIQUE_PROVIDED_ID, whose attempt is then recorded ``duplicate``); the document registered
meanwhile → nothing; an error or another record → nothing, except at a deadline with a code retrying cannot
change, which dead-letters ``NO_ACKNOWLEDGMENT`` with that code. A second answer changes nothing; the same one
delivered again re-emits.

Metrics: ``emd_acknowledged_total{via}`` (callback, duplicate, poll) and ``emd_end_to_end_seconds`` are
counted where a registration is decided (a replayed callback re-emits its events but is not counted
again); ``emd_callbacks_duplicated_total`` counts callbacks about a document already decided;
``emd_awaiting_acknowledgment`` and ``emd_awaiting_acknowledgment_oldest_seconds`` are read from the
lifecycle store at each scrape (``AWAITING``), so every replica reports the same store-wide numbers: query
them with ``max``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from producer import events, topology
from producer.errors import PermanentError, TransientError
from producer.ids import normalize_message_id, same_message_id
from services import lifecycle as lc
from services import metrics, telemetry
from services.logs import get_logger
from services.messaging import deadletter as dl
from services.messaging.records import Output
from services.outcome import CALLBACK_DECIDED, Outcome
from services.pipeline.polling import DEADLINE as DEADLINE_QUESTION
from services.pipeline.polling import DUPLICATE as DUPLICATE_QUESTION
from services.pipeline.polling import POLL as POLL_QUESTION
from services.reasons import reason_info
from services.remd import soap

log = get_logger(__name__)

SOURCE = "emd-status"
NOT_UNIQUE = "NOT_UNIQUE_PROVIDED_ID"
#: the longest wait between two registry look-ups of one duplicate registration
RECONCILE_MAX_DEFER = 120.0

ACKNOWLEDGED = Counter(
    "emd_acknowledged",
    "Documents РЭМД registered, by how the status worker learnt it.",
    ["via"],
    registry=metrics.REGISTRY,
)
END_TO_END = Histogram(
    "emd_end_to_end_seconds",
    "From the МИС publishing the document (its created event; for documents signed before "
    "the signer carried that time on, their arrival at the sender) to the status worker learning РЭМД registered it.",
    registry=metrics.REGISTRY,
    buckets=(
        1,
        5,
        15,
        30,
        60,
        120,
        300,
        600,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86400,
        2 * 86400,
        7 * 86400,
    ),
)
DUPLICATED_CALLBACKS = Counter(
    "emd_callbacks_duplicated",
    "Callbacks about a document already decided (ИПС delivered "
    "one again, or a late callback of another attempt).",
    registry=metrics.REGISTRY,
)
for _via in ("callback", "duplicate", "poll"):
    ACKNOWLEDGED.labels(_via)


class AwaitingCollector:
    """``emd_awaiting_acknowledgment`` and the age of the oldest, from ``LifecycleStore.awaiting()`` at each scrape.

    Nothing is exported until ``watch(store)``; a store that cannot answer leaves the series out of that scrape
    (the gap is visible) rather than failing ``/metrics``.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.store: lc.LifecycleStore | None = None
        self.clock = clock

    def watch(self, store: lc.LifecycleStore) -> None:
        self.store = store

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "emd_awaiting_acknowledgment",
                "Documents РЭМД accepted and has not decided yet (the whole lifecycle store).",
            ),
            GaugeMetricFamily(
                "emd_awaiting_acknowledgment_oldest_seconds",
                "Age of the oldest document awaiting РЭМД's decision (0 when none waits).",
            ),
        ]

    def collect(self) -> list[GaugeMetricFamily]:
        if self.store is None:
            return []
        try:
            count, oldest = self.store.awaiting()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is away
            log.warning("awaiting-acknowledgment metrics unavailable", error=repr(exc))
            return []
        waiting, age = self._families()
        waiting.add_metric([], count)
        age.add_metric([], max(0.0, self.clock() - oldest.timestamp()) if oldest is not None else 0.0)
        return [waiting, age]


AWAITING = AwaitingCollector()
metrics.REGISTRY.register(AWAITING)


def _acknowledged(doc: lc.Document, via: str) -> None:
    ACKNOWLEDGED.labels(via).inc()
    started = _published_at(doc) or doc.created_at
    if started is not None:
        END_TO_END.observe(
            max(0.0, (datetime.now(UTC) - started).total_seconds()), exemplar=telemetry.exemplar()
        )


def _published_at(doc: lc.Document) -> datetime | None:
    """When the МИС published the document (the signed event's ``publishedAt``), if the event says."""
    try:
        text = json.loads(doc.signed_event or b"{}").get("data", {}).get("publishedAt")
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except (ValueError, AttributeError):
        return None


RegistryLookup = Callable[[lc.Document], "soap.RegistryItem | None"]
#: ``(doc, item, *, purpose, attempt_message_id=None) -> bool``: ask for a found document's record on the callback
#: (``RegistryPoller.ask``, run from the callback thread); False when the route decides on the search's item
RegistryAsk = Callable[..., bool]
#: (organisation OID, the attempt's endpoint) → the РЭМД environment ("test" / "production"):
#: ``OrganizationsConfig.environment``
Environments = Callable[[str, "str | None"], str]


def _signed_event(doc: lc.Document) -> dict[str, Any]:
    if not doc.signed_event:
        raise PermanentError(
            f"{doc.local_uid}: the lifecycle store holds no signed event",
            reason="SIGNED_EVENT_MISSING",
            local_uid=doc.local_uid,
        )
    return json.loads(doc.signed_event)


def _status(
    doc: lc.Document,
    signed: Mapping[str, Any],
    status: str,
    ids: list[str],
    *,
    emdr_id: str | None = None,
    reason: str | None = None,
    code: str | None = None,
    message: str | None = None,
    warnings: Sequence[soap.RemdError] = (),
) -> Output:
    """The МИС's status for ``doc``, on the status topic of the МИС the signed event came from."""
    data = events.status_data(
        doc.local_uid,
        status,
        organization=doc.organization,
        mis_id=signed["data"]["misId"],
        emdr_id=emdr_id,
        reason=reason,
        remd_code=code,
        message=message,
        message_ids=ids,
        warnings=[(w.code, w.message) for w in warnings],
    )
    return Output.of_event(
        events.new_event(events.STATUS, data, source=SOURCE, trace_id=signed.get("traceId"))
    )


def registered_outputs(
    store: lc.LifecycleStore,
    doc: lc.Document,
    *,
    emdr_id: str,
    message_id: str,
    environments: Environments,
    warnings: Sequence[soap.RemdError] = (),
) -> list[Output]:
    """``acknowledged`` (the signed payload, the submission rebuilt from the attempts, the registration) and
    the МИС's ``registered`` status (with РЭМД's registrationWarnings, if any)."""
    signed = _signed_event(doc)
    attempts = store.history(doc.local_uid, organization=doc.organization)
    ids = [a.message_id for a in attempts]
    current = next(
        (a for a in attempts if same_message_id(a.message_id, message_id)), attempts[-1] if attempts else None
    )
    data = dict(signed["data"])
    data["submission"] = events.submission_data(
        message_id=message_id,
        message_ids=ids,
        attempt=current.attempt if current else 1,
        sent_at=current.sent_at if current else (doc.created_at or datetime.now(UTC)),
        accepted_at=doc.accepted_at,
        endpoint=current.endpoint if current else "",
        environment=environments(doc.organization, current.endpoint if current else None),
    )
    data["registration"] = {
        "emdrId": emdr_id,
        # РЭМД's registrationDateTime, kept to the microsecond it gives
        "registrationTime": events.timestamp(doc.registered_at, microseconds=True),
        "messageId": message_id,
    }
    if doc.store_till_date:
        data["registration"]["storeTillDate"] = doc.store_till_date
    trace = signed.get("traceId")
    ack = events.new_event(events.ACKNOWLEDGED, data, source=SOURCE, trace_id=trace)
    return [
        Output.of_event(ack),
        _status(doc, signed, events.STATUS_REGISTERED, ids, emdr_id=emdr_id, warnings=warnings),
    ]


def _warnings(item: soap.RegistryItem | None) -> Sequence[soap.RemdError]:
    return tuple(getattr(item, "warnings", None) or ())


def registered_at(item: soap.RegistryItem | None) -> datetime:
    """When РЭМД registered the document, as its registry item says (to the microsecond; a time without an offset
    is UTC); now when it says nothing usable. ``mark_registered`` keeps the first one, so a re-emission says the
    same."""
    when = item.registered_at if item is not None else None
    return when if when is not None else datetime.now(UTC)


def store_till(item: soap.RegistryItem | None) -> str | None:
    """РЭМД's storeTillDate, read and written back as an xs:date with its offset (``2048-09-22+03:00``)."""
    if item is None:
        return None
    day = item.store_till
    if day is None and item.store_till_date:
        log.warning("storeTillDate not understood: not kept", store_till_date=item.store_till_date)
    return day.isoformat() if day is not None else None


def _mark_registered(store: lc.LifecycleStore, doc: lc.Document, item: soap.RegistryItem) -> lc.Document:
    """``mark_registered`` of the organisation's document with what the registry item says: its emdrId,
    registration time and storeTillDate."""
    return store.mark_registered(
        doc.local_uid,
        item.emdr_id or "",
        organization=doc.organization,
        registered_at=registered_at(item),
        store_till_date=store_till(item),
    )


def _dead_letter(
    doc: lc.Document,
    signed: dict[str, Any],
    ids: list[str],
    *,
    reason: str,
    code: str | None,
    message: str,
    category: str | None,
    hint: str | None,
    group: str,
) -> Output:
    known = reason_info(reason)
    failure = dl.Failure(
        stage="acknowledger",
        reason=reason,
        message=message,
        exception_fqcn=__name__,
        remd_code=code,
        remd_message=message,
        category=category or (known.category if known else None),
        hint=hint or (known.hint if known else None),
        message_ids=tuple(ids),
        local_uid=doc.local_uid,
        kind=doc.kind,
        organization=doc.organization,
    )
    headers = dl.dead_letter_headers(
        original_headers=dict(events.headers_for(signed)),
        topic=topology.SENT.name,
        partition=-1,
        offset=-1,
        timestamp_ms=int(time.time() * 1000),
        consumer_group=group,
        failure=failure,
    )
    return Output(topology.SENT_DLT.name, doc.signed_event or b"", doc.local_uid, dict(headers))


def correlate(
    store: lc.LifecycleStore, result: soap.RegisterResult
) -> tuple[lc.Document, lc.Attempt | None] | None:
    """The document and attempt a callback is about: by its relatesToMessage, the MessageID of one of our
    attempts. Never by its bare ``localUid``: a localUid is the МИС's own id, another МИС's document may carry
    the same one, and a callback ИПС signed for that document must not decide ours. A registered document is
    also found by its emdrId (a registry number is unique, and a registered document changes no more)."""
    found = store.find_by_message_id(result.relates_to_message)
    if found is not None:
        return found
    emdr_id = result.registry_item.emdr_id if result.registry_item is not None else None
    if emdr_id:  # last fallback: a document we already hold as registered under that number
        doc = store.find_by_emdr_id(emdr_id)
        if doc is not None:
            return doc, None
    return None


def _definitely_not_taken(a: lc.Attempt) -> bool:
    """The attempt got a definite "no": refused synchronously, or an error callback decided it."""
    if a.outcome in (Outcome.PERMANENT, Outcome.REJECTED):
        return True
    return a.outcome == Outcome.TRANSIENT and a.decided_by == lc.DECIDED_BY_CALLBACK


def duplicate_candidates(store: lc.LifecycleStore, doc: lc.Document, message_id: str) -> list[lc.Attempt]:
    """Our other attempts of this document that ИПС may have taken (so may be the registered one), oldest first."""
    return [
        a
        for a in store.history(doc.local_uid, organization=doc.organization)
        if not same_message_id(a.message_id, message_id) and not _definitely_not_taken(a)
    ]


def _wait_defer(waited: float, cap: float) -> float:
    return min(cap, 1.0 + waited / 10)


def _decided_elsewhere(conflict: lc.LifecycleConflict, **where: Any) -> list[Output]:
    """Another replica moved the document while this one decided (a redelivery after a rebalance): its
    decision stands and it emitted the outputs; two different emdrIds for one localUid are worth a look."""
    log.warning("lifecycle conflict: already decided by another replica", conflict=conflict.message, **where)
    return []


def on_callback(
    raw: bytes,
    *,
    store: lc.LifecycleStore,
    received_ms: int,
    pending_limit: float = 24 * 3600.0,
    retry_delay: float = 60.0,
    environments: Environments,
    group: str = "emd-acknowledger",
    registry_lookup: RegistryLookup | None = None,
    registry_ask: RegistryAsk | None = None,
) -> list[Output]:
    """The outputs of one persisted callback: a ``registerDocumentResult`` or a ``getRegistryItemResult``.

    ``registry_lookup(doc)`` asks РЭМД whether the localUid is registered (``TransientError`` when it cannot be
    asked now); without it a duplicate registration is never confirmed and waits for the deadline poll.
    ``registry_ask(doc, item, purpose=…, attempt_message_id=…)`` asks for a found document's record on the
    callback (``RegistryPoller.ask``): True when asked, and the record's callback then decides."""
    callback = soap.parse_callback(raw)
    try:
        if isinstance(callback, soap.RegistryItemResult):
            return _on_registry_result(
                callback,
                store=store,
                received_ms=received_ms,
                pending_limit=pending_limit,
                environments=environments,
                group=group,
            )
        return _on_callback(
            callback,
            store=store,
            received_ms=received_ms,
            pending_limit=pending_limit,
            retry_delay=retry_delay,
            environments=environments,
            group=group,
            registry_lookup=registry_lookup,
            registry_ask=registry_ask,
        )
    except lc.LifecycleConflict as conflict:
        return _decided_elsewhere(conflict)


def _on_callback(
    result: soap.RegisterResult,
    *,
    store: lc.LifecycleStore,
    received_ms: int,
    pending_limit: float,
    retry_delay: float,
    environments: Environments,
    group: str,
    registry_lookup: RegistryLookup | None,
    registry_ask: RegistryAsk | None,
) -> list[Output]:
    callback_id = normalize_message_id(result.headers.message_id) or "?"
    waited = time.time() - received_ms / 1000
    doc, attempt = _correlated(store, result, waited=waited, pending_limit=pending_limit)
    mid = attempt.message_id if attempt else normalize_message_id(result.relates_to_message)
    mark = f"callback {callback_id}"
    replay = attempt is not None and attempt.outcome in CALLBACK_DECIDED and attempt.message == mark
    if doc.state == lc.REGISTERED:
        return _on_registered_document(
            store,
            doc,
            attempt,
            result,
            replay=replay,
            mid=mid,
            callback_id=callback_id,
            environments=environments,
        )
    if not replay and attempt is not None and attempt.outcome in CALLBACK_DECIDED:
        DUPLICATED_CALLBACKS.inc()
        log.info(
            "duplicate or late callback ignored",
            local_uid=doc.local_uid,
            message_id=mid,
            callback_id=callback_id,
            state=doc.state,
            status=result.status,
        )
        return []
    if result.registered:
        return _registered_by_callback(
            store, doc, attempt, result, mid=mid, mark=mark, environments=environments
        )
    errors = result.errors or (soap.RemdError("UNKNOWN_ERROR", "status error without errors"),)
    if any(e.code == NOT_UNIQUE for e in errors):
        others = duplicate_candidates(store, doc, mid)
        if others:
            return _reconcile(
                store,
                doc,
                attempt,
                mid=mid,
                mark=mark,
                others=others,
                waited=waited,
                pending_limit=pending_limit,
                lookup=registry_lookup,
                ask=registry_ask,
                environments=environments,
            )
    first = errors[0]
    info = first.info
    text = "; ".join(f"{e.code}: {e.message}" for e in errors)
    transient = all(e.info.transient for e in errors)
    if attempt is not None:
        store.record_outcome(
            mid,
            outcome=Outcome.TRANSIENT if transient else Outcome.REJECTED,
            decided_by=lc.DECIDED_BY_CALLBACK,
            code=first.code,
            message=mark,
        )
    signed = _signed_event(doc)
    ids = store.message_ids(doc.local_uid, organization=doc.organization)
    if doc.state != lc.FAILED:
        doc = store.mark_failed(
            doc.local_uid,
            organization=doc.organization,
            reason="REMD_TRANSIENT" if transient else "REMD_REJECTED",
            code=first.code,
            message=text[:2000],
        )
    if transient:
        # the signed record back on the sender's first retry tier: a resend, with a new MessageID
        headers = dl.retry_headers(
            dict(events.headers_for(signed)),
            topic=topology.SIGNED.name,
            delay=max(retry_delay, info.retry_after or 0.0),
            reason=f"REMD_{first.code}",
            attempt=len(ids),
            message_ids=ids,
        )
        log.warning(
            "transient error callback: resending", local_uid=doc.local_uid, code=first.code, message_id=mid
        )
        return [
            Output(topology.SENDER_RETRIES[0].name, doc.signed_event or b"", doc.local_uid, headers),
            _status(
                doc,
                signed,
                events.STATUS_RETRYING,
                ids,
                reason="REMD_TRANSIENT",
                code=first.code,
                message=text,
            ),
        ]
    log.warning("rejected by РЭМД", local_uid=doc.local_uid, code=first.code, message_id=mid)
    return [
        _dead_letter(
            doc,
            signed,
            ids,
            reason="REMD_REJECTED",
            code=first.code,
            message=text[:2000],
            category=info.category,
            hint=info.hint,
            group=group,
        ),
        _status(
            doc,
            signed,
            events.STATUS_REJECTED,
            ids,
            reason="REMD_REJECTED",
            code=first.code,
            message=text,
        ),
    ]


def _correlated(
    store: lc.LifecycleStore, result: soap.RegisterResult, *, waited: float, pending_limit: float
) -> tuple[lc.Document, lc.Attempt | None]:
    """The document (and attempt) a callback answers; until ``pending_limit`` seconds an unknown one waits (it
    may have overtaken its document), after that it is a dead letter."""
    found = correlate(store, result)
    if found is None:
        _uncorrelated(
            result.relates_to_message,
            waited=waited,
            pending_limit=pending_limit,
            never=f"callback for MessageID {result.relates_to_message} matches no document",
            early="callback arrived before its document is known; waiting",
        )
    return found


def _uncorrelated(
    message_id: str, *, waited: float, pending_limit: float, never: str, early: str
) -> NoReturn:
    """An answer naming a request we do not know: it may have overtaken its request's record, so it waits (``early``)
    until ``pending_limit`` seconds, then it is a dead letter (``never``)."""
    if waited > pending_limit:
        raise PermanentError(never, reason="CALLBACK_UNCORRELATED", message_id=message_id)
    raise TransientError(early, reason="CALLBACK_UNCORRELATED", defer=_wait_defer(waited, 30.0))


def _on_registered_document(
    store: lc.LifecycleStore,
    doc: lc.Document,
    attempt: lc.Attempt | None,
    result: soap.RegisterResult,
    *,
    replay: bool,
    mid: str,
    callback_id: str,
    environments: Environments,
) -> list[Output]:
    """A callback for a document already registered: its own redelivery outputs again, any other is ignored."""
    if (
        replay
        and attempt is not None
        and attempt.outcome in (Outcome.REGISTERED, Outcome.DUPLICATE)
        and doc.emdr_id
    ):
        return registered_outputs(
            store,
            doc,
            emdr_id=doc.emdr_id,
            message_id=_registering_id(store, doc, attempt),
            environments=environments,
            warnings=_warnings(result.registry_item),
        )
    emdr = result.registry_item.emdr_id if result.registry_item is not None else None
    DUPLICATED_CALLBACKS.inc()
    log.info(
        "callback for a registered document ignored",
        local_uid=doc.local_uid,
        message_id=mid,
        callback_id=callback_id,
        status=result.status,
        emdr_id=doc.emdr_id,
    )
    if emdr and emdr != doc.emdr_id:
        log.warning(
            "callback names another emdrId than the registered one",
            local_uid=doc.local_uid,
            emdr_id=doc.emdr_id,
            callback_emdr_id=emdr,
            message_id=mid,
        )
    return []


def _registered_by_callback(
    store: lc.LifecycleStore,
    doc: lc.Document,
    attempt: lc.Attempt | None,
    result: soap.RegisterResult,
    *,
    mid: str,
    mark: str,
    environments: Environments,
) -> list[Output]:
    """A success callback: the attempt's outcome, the document registered (even after a dead letter), and
    the acknowledged event and status."""
    item = result.registry_item
    assert item is not None and item.emdr_id
    if attempt is not None:
        store.record_outcome(
            mid,
            outcome=Outcome.REGISTERED,
            decided_by=lc.DECIDED_BY_CALLBACK,
            code=item.emdr_id,
            message=mark,
        )
    if doc.state == lc.FAILED:
        log.warning(
            "registered after a dead letter: the dead letter is obsolete",
            local_uid=doc.local_uid,
            emdr_id=item.emdr_id,
            message_id=mid,
            failure_reason=doc.failure_reason,
        )
    doc = _mark_registered(store, doc, item)
    _acknowledged(doc, "callback")
    log.info("registered", local_uid=doc.local_uid, emdr_id=item.emdr_id, message_id=mid)
    return registered_outputs(
        store,
        doc,
        emdr_id=item.emdr_id,
        message_id=mid,
        environments=environments,
        warnings=item.warnings,
    )


def _registering_id(store: lc.LifecycleStore, doc: lc.Document, attempt: lc.Attempt) -> str:
    """The MessageID the acknowledged event names: the callback's own attempt when it registered, else (a
    duplicate) the earliest other attempt ИПС may have taken."""
    if attempt.outcome == Outcome.REGISTERED:
        return attempt.message_id
    others = duplicate_candidates(store, doc, attempt.message_id)
    return others[0].message_id if others else attempt.message_id


def _reconcile(
    store: lc.LifecycleStore,
    doc: lc.Document,
    attempt: lc.Attempt | None,
    *,
    mid: str,
    mark: str,
    others: list[lc.Attempt],
    waited: float,
    pending_limit: float,
    lookup: RegistryLookup | None,
    ask: RegistryAsk | None,
    environments: Environments,
) -> list[Output]:
    """NOT_UNIQUE_PROVIDED_ID for a document another attempt of ours may have registered: ask РЭМД. On ИПС the
    search that finds it is followed by getRegistryItem, whose answer on the callback decides."""
    item = lookup(doc) if lookup is not None else None
    if item is not None and item.emdr_id and item.local_uid in (None, doc.local_uid):
        if ask is not None and ask(doc, item, purpose=DUPLICATE_QUESTION, attempt_message_id=mid):
            log.info(
                "duplicate registration found by the search: its record is asked for",
                local_uid=doc.local_uid,
                emdr_id=item.emdr_id,
                message_id=mid,
            )
            return []
        registering = others[0].message_id
        if attempt is not None:
            store.record_outcome(
                mid,
                outcome=Outcome.DUPLICATE,
                decided_by=lc.DECIDED_BY_CALLBACK,
                code=NOT_UNIQUE,
                message=mark,
            )
        doc = _mark_registered(store, doc, item)
        _acknowledged(doc, "duplicate")
        log.info(
            "registered (duplicate registration reconciled)",
            local_uid=doc.local_uid,
            emdr_id=item.emdr_id,
            message_id=mid,
            registered_by=registering,
        )
        return registered_outputs(
            store,
            doc,
            emdr_id=item.emdr_id,
            message_id=registering,
            environments=environments,
            warnings=_warnings(item),
        )
    if waited <= pending_limit:
        raise TransientError(
            "NOT_UNIQUE_PROVIDED_ID for a document we may have registered: waiting for РЭМД "
            "to show the registration",
            reason="REGISTRATION_UNCONFIRMED",
            defer=_wait_defer(waited, RECONCILE_MAX_DEFER),
            local_uid=doc.local_uid,
            message_ids=[a.message_id for a in others],
        )
    log.warning(
        "duplicate registration not confirmed in time: left to the deadline poll",
        local_uid=doc.local_uid,
        message_id=mid,
        state=doc.state,
        candidates=[a.message_id for a in others],
    )
    return []


# --- getRegistryItemResult: the record a status question asked for --------------------------------------

#: a registry question's outcome: its answer registered the document, found it registered already, or did not
#: give the record asked for (an error, or another record)
ANSWER_REGISTERED, ANSWER_CONFIRMED, ANSWER_ERROR = "registered", "confirmed", "error"


def _answer_of(
    doc: lc.Document, asked: lc.RegistryRequest, result: soap.RegistryItemResult
) -> tuple[str, str | None]:
    """What a registry answer says about the question it answers: (outcome, code)."""
    item = result.registry_item
    if not result.found or item is None:
        errors = result.errors or (soap.RemdError("UNKNOWN_ERROR", "status error without errors"),)
        return ANSWER_ERROR, errors[0].code
    if (item.emdr_id or "").strip() != asked.emdr_id.strip() or item.local_uid not in (None, doc.local_uid):
        return ANSWER_ERROR, None  # another record than the one asked for
    return (ANSWER_CONFIRMED if doc.state == lc.REGISTERED else ANSWER_REGISTERED), None


def _on_registry_result(
    result: soap.RegistryItemResult,
    *,
    store: lc.LifecycleStore,
    received_ms: int,
    pending_limit: float,
    environments: Environments,
    group: str,
) -> list[Output]:
    """A ``getRegistryItemResult``: correlated by the request's MessageID to the question the status worker
    asked; its first answer decides (recorded on the question, ``decided_by`` = this callback), and the same
    callback delivered again re-emits what it decided."""
    callback_id = normalize_message_id(result.headers.message_id) or "?"
    mark = f"callback {callback_id}"
    waited = time.time() - received_ms / 1000
    found = store.find_registry_request(result.relates_to_message)
    if found is None:
        _uncorrelated(
            result.relates_to_message,
            waited=waited,
            pending_limit=pending_limit,
            never=f"getRegistryItem result for MessageID {result.relates_to_message} answers no question we asked",
            early="registry answer arrived before its question is known; waiting",
        )
    doc, asked = found
    if asked.outcome is None:
        outcome, code = _answer_of(doc, asked, result)
        asked = (
            store.record_registry_answer(asked.message_id, outcome=outcome, decided_by=mark, code=code)
            or asked
        )
    if asked.decided_by != mark:
        DUPLICATED_CALLBACKS.inc()
        log.info(
            "duplicate registry answer ignored",
            local_uid=doc.local_uid,
            message_id=asked.message_id,
            callback_id=callback_id,
            decided_by=asked.decided_by,
        )
        return []
    item = result.registry_item
    if asked.outcome == ANSWER_CONFIRMED:
        log.info(
            "registry answer for a document already registered",
            local_uid=doc.local_uid,
            emdr_id=doc.emdr_id,
            message_id=asked.message_id,
        )
        return []
    if asked.outcome == ANSWER_REGISTERED and item is not None and item.emdr_id:
        return _registered_by_answer(store, doc, asked, item, mark=mark, environments=environments)
    return _registry_error(store, doc, asked, result, group=group)


def _registered_by_answer(
    store: lc.LifecycleStore,
    doc: lc.Document,
    asked: lc.RegistryRequest,
    item: soap.RegistryItem,
    *,
    mark: str,
    environments: Environments,
) -> list[Output]:
    duplicate = asked.purpose == DUPLICATE_QUESTION
    if duplicate and asked.attempt_message_id:
        store.record_outcome(
            asked.attempt_message_id,
            outcome=Outcome.DUPLICATE,
            decided_by=lc.DECIDED_BY_CALLBACK,
            code=NOT_UNIQUE,
            message=mark,
        )
    if doc.state != lc.REGISTERED:  # a redelivery after a crash finds it registered: only re-emitted
        if doc.state == lc.FAILED:
            log.warning(
                "registered after a dead letter: the dead letter is obsolete",
                local_uid=doc.local_uid,
                emdr_id=item.emdr_id,
                failure_reason=doc.failure_reason,
            )
        doc = _mark_registered(store, doc, item)
        _acknowledged(doc, "duplicate" if duplicate else "poll")
    if duplicate:
        others = duplicate_candidates(store, doc, asked.attempt_message_id or "")
        registering = others[0].message_id if others else asked.attempt_message_id or ""
    else:
        ids = store.message_ids(doc.local_uid, organization=doc.organization)
        registering = doc.accepted_message_id or (ids[-1] if ids else "")
    log.info(
        "registered (duplicate registration reconciled)" if duplicate else "registered (found by polling)",
        local_uid=doc.local_uid,
        emdr_id=item.emdr_id,
        message_id=registering,
        registry_message_id=asked.message_id,
    )
    return registered_outputs(
        store,
        doc,
        emdr_id=doc.emdr_id or item.emdr_id or "",
        message_id=registering,
        environments=environments,
        warnings=_warnings(item),
    )


def _registry_error(
    store: lc.LifecycleStore,
    doc: lc.Document,
    asked: lc.RegistryRequest,
    result: soap.RegistryItemResult,
    *,
    group: str,
) -> list[Output]:
    """The registry did not give the record asked for. At a deadline, with a code retrying cannot change (or another
    record than the one asked for), the wait ends: NO_ACKNOWLEDGMENT with РЭМД's code, for a person to look at
    (the search found the document, its record cannot be read). Otherwise nothing is decided: a poll or a later
    deadline asks again."""
    item = result.registry_item
    errors = result.errors
    if errors:
        said = "; ".join(f"{e.code}: {e.message}" for e in errors)
    elif item is not None:
        said = f"another record (emdrId {item.emdr_id}, localUid {item.local_uid})"
    else:
        said = f"status {result.status} without errors"
    first = errors[0] if errors else None
    final = asked.purpose == DEADLINE_QUESTION and not (errors and all(e.info.transient for e in errors))
    if (
        not final
        or doc.state not in (lc.ACCEPTED, lc.SENDING, lc.FAILED)
        or (doc.state == lc.FAILED and doc.failure_reason != "NO_ACKNOWLEDGMENT")
    ):
        log.warning(
            "registry answer without the record asked for: nothing decided",
            local_uid=doc.local_uid,
            emdr_id=asked.emdr_id,
            message_id=asked.message_id,
            code=first.code if first else None,
            purpose=asked.purpose,
        )
        return []
    code = first.code if first else None
    message = (
        f"no registerDocumentResult within the timeout; searchRegistryItem found it as {asked.emdr_id}, "
        f"but getRegistryItem answered {said}"
    )[:2000]
    if doc.state != lc.FAILED:
        doc = store.mark_failed(
            doc.local_uid,
            organization=doc.organization,
            reason="NO_ACKNOWLEDGMENT",
            code=code,
            message=message,
        )
    ids = store.message_ids(doc.local_uid, organization=doc.organization)
    log.warning(
        "no acknowledgment: the registry record could not be read, dead-lettered",
        local_uid=doc.local_uid,
        code=code,
        message_ids=ids,
        registry_message_id=asked.message_id,
    )
    signed = _signed_event(doc)
    return [
        _dead_letter(
            doc,
            signed,
            ids,
            reason="NO_ACKNOWLEDGMENT",
            code=code,
            message=message,
            category=first.info.category if first else None,
            hint=first.info.hint if first else None,
            group=group,
        ),
        _status(
            doc,
            signed,
            events.STATUS_FAILED,
            ids,
            reason="NO_ACKNOWLEDGMENT",
            code=code,
            message=message,
        ),
    ]


async def handle_callback(
    raw: bytes,
    *,
    store: lc.LifecycleStore,
    poll: Callable[[lc.Document], Coroutine[Any, Any, soap.RegistryItem | None]],
    received_ms: int,
    **options: Any,
) -> list[Output]:
    """``on_callback`` off the event loop, its registry look-ups done by ``poll`` on the loop (and, when ``poll``
    can ask for a record on the callback — ``RegistryPoller.ask`` — that too)."""
    loop = asyncio.get_running_loop()
    asker = getattr(poll, "ask", None)

    def lookup(doc: lc.Document) -> soap.RegistryItem | None:
        return asyncio.run_coroutine_threadsafe(poll(doc), loop).result()

    def ask(doc: lc.Document, item: soap.RegistryItem, **why: Any) -> bool:
        assert asker is not None  # handed on only when the poll has one
        return bool(asyncio.run_coroutine_threadsafe(asker(doc, item, **why), loop).result())

    return await asyncio.to_thread(
        on_callback,
        raw,
        store=store,
        received_ms=received_ms,
        registry_lookup=lookup,
        registry_ask=ask if asker is not None else None,
        **options,
    )


async def on_deadline(
    local_uid: str,
    *,
    organization: str,
    store: lc.LifecycleStore,
    poll: Callable[[lc.Document], Awaitable[soap.RegistryItem | None]],
    environments: Environments,
    group: str = "emd-acknowledger",
    final: bool = True,
) -> list[Output]:
    """Ask the registry about the organisation's ``local_uid``: found → registered (on ИПС: its record asked for
    with getRegistryItem, whose answer on the callback registers it, ``on_callback``). Not found: a deadline
    (``final``) dead-letters NO_ACKNOWLEDGMENT; a routine poll of a route without callbacks (``final=False``)
    changes nothing."""
    # the store is blocking I/O: off the event loop, which both stages of the status worker share
    doc = await asyncio.to_thread(partial(store.get, local_uid, organization=organization))
    if doc is None or doc.state not in (lc.ACCEPTED, lc.SENDING):
        return []  # decided meanwhile
    item = await poll(doc)  # TransientError when РЭМД cannot be asked now: retried by the runtime
    found = item is not None and bool(item.emdr_id)
    if not final and not found:
        return []  # not registered yet: the next poll asks again
    asker = getattr(poll, "ask", None)
    if (
        found
        and asker is not None
        and await asker(doc, item, purpose=DEADLINE_QUESTION if final else POLL_QUESTION)
    ):
        return []  # the record comes on the callback, and decides there
    try:
        return await asyncio.to_thread(
            partial(_after_poll, doc, item, store=store, environments=environments, group=group)
        )
    except lc.LifecycleConflict as conflict:
        return _decided_elsewhere(conflict, local_uid=local_uid, organization=organization)


def _after_poll(
    doc: lc.Document,
    item: soap.RegistryItem | None,
    *,
    store: lc.LifecycleStore,
    environments: Environments,
    group: str,
) -> list[Output]:
    local_uid, organization = doc.local_uid, doc.organization
    ids = store.message_ids(local_uid, organization=organization)
    if item is not None and item.emdr_id:
        doc = _mark_registered(store, doc, item)
        _acknowledged(doc, "poll")
        log.info("registered (found by polling)", local_uid=local_uid, emdr_id=item.emdr_id)
        return registered_outputs(
            store,
            doc,
            emdr_id=item.emdr_id,
            message_id=doc.accepted_message_id or (ids[-1] if ids else ""),
            environments=environments,
            warnings=_warnings(item),
        )
    doc = store.mark_failed(
        local_uid,
        organization=organization,
        reason="NO_ACKNOWLEDGMENT",
        message="no callback and not found by polling",
    )
    log.warning("no acknowledgment: dead-lettered", local_uid=local_uid, message_ids=ids)
    signed = _signed_event(doc)
    return [
        _dead_letter(
            doc,
            signed,
            ids,
            reason="NO_ACKNOWLEDGMENT",
            code=None,
            message="no registerDocumentResult within the timeout and not found by searchRegistryItem",
            category=None,
            hint=None,
            group=group,
        ),
        _status(doc, signed, events.STATUS_FAILED, ids, reason="NO_ACKNOWLEDGMENT"),
    ]
