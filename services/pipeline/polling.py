"""Asking РЭМД instead of waiting for it: the registry poll, and the deadline scanner that triggers it.

Callbacks drive acknowledgment (``services.pipeline.acknowledgment``). Two cases need a question instead:

* **a deadline**: a document accepted ``ack_timeout`` ago has had no ``registerDocumentResult``.
  :class:`DeadlineScanner` (a runtime ``Ticker`` of the status worker) finds such documents in the
  lifecycle store and writes one *deadline record* per document to ``emd.remd.callbacks`` (header
  ``emd-callback-kind: deadline``, key = its accepted MessageID, the document named by ``emd-organization`` and
  ``emd-local-uid``: a localUid alone names no document), so the poll and its outcome go through the
  runtime's produce-then-commit path like any callback. Several replicas may write the same deadline:
  harmless, the first handled decides and the others find the document decided.
* **a duplicate registration** (``NOT_UNIQUE_PROVIDED_ID`` for a resend): is the first one registered?
* **a route without callbacks** (N3.Health, ``Transport.has_callbacks`` False): :class:`PollScanner` writes a
  *poll record* (``emd-callback-kind: poll``) for each of its accepted documents every ``interval``; a poll
  that finds the document registers it, one that does not changes nothing (the next tick asks again), and
  the deadline above still ends the wait with NO_ACKNOWLEDGMENT. On N3 the question goes to the organisation's
  ``remd.n3.status_url`` ([G]: N3 publishes no status method, docs/transports.md); an N3 organisation without one
  is not polled, and only the deadline decides.

Both ask with :class:`RegistryPoller`: ``searchRegistryItem`` through the organisation's ``Transport``
(the same one the sender submits with, so an N3 clinic is asked through N3), as its information system.

On ИПС the search is only the first half. A document it finds is then asked for by its registry number
(:meth:`RegistryPoller.ask`, ``getRegistryItem``), which РЭМД answers **asynchronously**: the synchronous answer
only acknowledges the request, and the record (``status``, ``emdrId``, ``registrationDateTime``,
``storeTillDate``) arrives later on the МИС callback. The request's MessageID is stored in the lifecycle store
before it leaves (``record_registry_request``); the callback service persists the ``getRegistryItemResult``
to ``emd.remd.callbacks`` like any callback, and the status worker decides when it handles it
(``acknowledgment.on_callback``). A route whose transport cannot be asked so (N3) decides on the search's own
answer, as before. A deadline whose answer never comes (lost on the way) is asked again: the scanner writes a
document's deadline record once per ``timeout`` while it stays undecided.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from producer import topology
from producer.errors import PermanentError
from producer.ids import new_message_id
from services import lifecycle as lc
from services.logs import get_logger
from services.messaging.records import Output, Record
from services.pipeline.organizations import OrganizationsConfig
from services.remd import soap
from services.remd.transport import AsksRegistryItem, LookupRequest, RegistryItemRequest
from services.remd.transports import Transports

log = get_logger(__name__)

KIND_HEADER = "emd-callback-kind"
LOCAL_UID_HEADER = "emd-local-uid"
ORGANIZATION_HEADER = "emd-organization"
DEADLINE = "deadline"
POLL = "poll"
#: why a getRegistryItem was asked (kept on the lifecycle store's registry request): a deadline, a routine poll,
#: or the reconciliation of a NOT_UNIQUE_PROVIDED_ID (``DUPLICATE``, with the attempt it answers)
DUPLICATE = "duplicate"
#: how far around the document's creation the registry is searched (РЭМД dates registrations, not creation)
SEARCH_MARGIN = timedelta(days=1)


def deadline_record(
    organization: str, local_uid: str, accepted_message_id: str | None, *, kind: str = DEADLINE
) -> Output:
    """The record that asks the status worker to poll for the organisation's ``local_uid`` (keyed like its
    callbacks would be): a ``DEADLINE`` (the last question: not found → NO_ACKNOWLEDGMENT) or a ``POLL`` (not
    found → ask later)."""
    return Output(
        topology.CALLBACKS.name,
        b"",
        accepted_message_id or local_uid,
        {KIND_HEADER: kind, ORGANIZATION_HEADER: organization, LOCAL_UID_HEADER: local_uid},
    )


def _document_of(record: Record, kind: str) -> tuple[str, str] | None:
    if record.header(KIND_HEADER) != kind:
        return None
    return record.header(ORGANIZATION_HEADER) or "", record.header(LOCAL_UID_HEADER) or ""


def deadline_of(record: Record) -> tuple[str, str] | None:
    """(organisation, localUid) of the document a deadline record is for; ``None`` for a real callback or a poll
    record."""
    return _document_of(record, DEADLINE)


def poll_of(record: Record) -> tuple[str, str] | None:
    """(organisation, localUid) of the document a poll record is for; ``None`` otherwise."""
    return _document_of(record, POLL)


class DeadlineScanner:
    """Finds documents accepted ``timeout`` seconds ago and still undecided; one deadline record each, and another
    every ``again`` seconds while the document stays undecided (a registry answer that never came).

    :param store: the lifecycle store.
    :param timeout: seconds after acceptance without a result (``EMD_ACK_TIMEOUT_SECONDS``).
    :param again: seconds before an undecided document's deadline is asked again (default ``timeout``).
    :param clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        *,
        store: lc.LifecycleStore,
        timeout: float,
        again: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.again = timeout if again is None else again
        self.clock = clock
        self._fired: dict[tuple[str, str], float] = {}

    async def tick(self) -> list[Output]:
        before = datetime.now(UTC) - timedelta(seconds=self.timeout)
        overdue = await asyncio.to_thread(self.store.overdue, before)
        now = self.clock()
        # forget documents decided since: the map stays as small as the overdue list, not the history
        waiting = {(org, uid) for org, uid, _ in overdue}
        self._fired = {key: t for key, t in self._fired.items() if key in waiting}
        out = []
        for org, uid, mid in overdue:
            fired = self._fired.get((org, uid))
            if fired is None or now - fired >= self.again:
                self._fired[(org, uid)] = now
                out.append(deadline_record(org, uid, mid))
                log.info(
                    "acknowledgment overdue: polling" if fired is None else "still undecided: polling again",
                    local_uid=uid,
                    organization=org,
                    message_id=mid,
                )
        return out


class PollScanner:
    """Documents of callback-less routes (N3) accepted at least ``interval`` ago and undecided: a poll record each,
    at most one per document per ``interval``.

    :param store: the lifecycle store.
    :param organizations: the organisations whose route has no callbacks (nothing to do when empty).
    :param interval: seconds between two polls of one document (``EMD_POLL_INTERVAL_SECONDS``).
    """

    def __init__(self, *, store: lc.LifecycleStore, organizations: frozenset[str], interval: float) -> None:
        self.store, self.organizations, self.interval = store, organizations, interval
        self._last: dict[tuple[str, str], float] = {}

    async def tick(self) -> list[Output]:
        if not self.organizations:
            return []
        now = time.monotonic()
        before = datetime.now(UTC) - timedelta(seconds=self.interval)
        waiting = await asyncio.to_thread(self.store.overdue, before, organizations=self.organizations)
        keys = {(org, uid) for org, uid, _ in waiting}
        self._last = {key: t for key, t in self._last.items() if key in keys}
        out = []
        for org, uid, mid in waiting:
            if now - self._last.get((org, uid), -self.interval) >= self.interval:
                self._last[(org, uid)] = now
                out.append(deadline_record(org, uid, mid, kind=POLL))
        if out:
            log.info("polling routes without callbacks", documents=len(out))
        return out


def callbackless(config: OrganizationsConfig, transports: Transports) -> frozenset[str]:
    """The organisations whose route does not call back (their documents are polled)."""
    return frozenset(
        oid
        for oid, org in config.organizations.items()
        if org.remd is not None
        and not getattr(transports.get(org.remd.transport), "has_callbacks", True)
        and (org.remd.n3 is None or org.remd.n3.status_url)
    )


class RegistryPoller:
    """``await poller(doc)``: РЭМД's registry entry for the document, or ``None`` when it holds none (yet);
    ``await poller.ask(doc, item, purpose=…)``: the registry record asked for on the callback (getRegistryItem).

    :param config: the organisations (their ``remd`` settings say where and as whom to ask).
    :param transports: the process's transports (shared with the sender when both run in one process).
    :param store: the lifecycle store the asked MessageIDs are kept in (without one, ``ask`` asks nothing and
        the search's answer decides).
    """

    def __init__(
        self, *, config: OrganizationsConfig, transports: Transports, store: lc.LifecycleStore | None = None
    ) -> None:
        self.config = config
        self.transports = transports
        self.store = store

    async def ask(
        self,
        doc: lc.Document,
        item: soap.RegistryItem,
        *,
        purpose: str,
        attempt_message_id: str | None = None,
    ) -> bool:
        """Ask РЭМД for ``item``'s record (``getRegistryItem``), the answer to come on the callback: True once asked
        (the request's MessageID stored first, then the request acknowledged); False when this route's registry is
        not asked so (N3, no callback address, no store), and the search's own ``item`` must decide.
        ``TransientError(REGISTRY_LOOKUP_FAILED)`` when РЭМД cannot be asked now."""
        org = self.config.organization(doc.organization)
        remd = org.remd
        if (
            self.store is None
            or remd is None
            or remd.system is None
            or not remd.callback_url
            or not item.emdr_id
        ):
            return False
        transport = self.transports.get(remd.transport)
        if not isinstance(transport, AsksRegistryItem):
            return False
        message_id = new_message_id()
        # stored before it leaves: the result may come back on the callback before the request's own answer
        await asyncio.to_thread(
            self.store.record_registry_request,
            message_id,
            doc.local_uid,
            organization=doc.organization,
            emdr_id=item.emdr_id,
            purpose=purpose,
            attempt_message_id=attempt_message_id,
        )
        await transport.ask_registry_item(
            RegistryItemRequest(
                emdr_id=item.emdr_id,
                message_id=message_id,
                endpoint=remd.endpoint,
                reply_to=remd.callback_url,
                client_entity_id=remd.client_entity_id or "",
                key=remd.system.signer(),
                certificate=remd.system.certificate,
            )
        )
        log.info(
            "registry record asked for: the answer comes on the callback",
            local_uid=doc.local_uid,
            emdr_id=item.emdr_id,
            message_id=message_id,
            purpose=purpose,
        )
        return True

    async def __call__(self, doc: lc.Document) -> soap.RegistryItem | None:
        org = self.config.organization(doc.organization)
        remd = org.remd
        created = doc.created_at or datetime.now(UTC)
        since = (created - SEARCH_MARGIN).date()
        until = (datetime.now(UTC) + SEARCH_MARGIN).date()
        if remd is not None and remd.n3 is not None:  # N3: the [G] status method, with the clinic's GUID
            if not remd.n3.status_url:
                return None  # nothing to ask: the deadline decides
            request = LookupRequest(
                local_uid=doc.local_uid,
                organization=doc.organization,
                kind=doc.kind,
                since=since,
                until=until,
                endpoint=remd.n3.status_url,
                auth_token=remd.n3.token,
            )
        elif remd is not None and remd.system is not None:
            request = LookupRequest(
                local_uid=doc.local_uid,
                organization=doc.organization,
                kind=doc.kind,
                since=since,
                until=until,
                endpoint=remd.endpoint,
                client_entity_id=remd.client_entity_id or "",
                key=remd.system.signer(),
                certificate=remd.system.certificate,
            )
        else:
            raise PermanentError(
                f"{doc.organization}: no remd settings to poll with",
                reason="REMD_NOT_CONFIGURED",
                organization=doc.organization,
            )
        return await self.transports.get(remd.transport).lookup(request)
