"""The lifecycle's states, records and rules, and the interface every backend implements."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from producer.errors import EmdError

SIGNED, SENDING, ACCEPTED, REGISTERED, FAILED = "signed", "sending", "accepted", "registered", "failed"
STATES = (SIGNED, SENDING, ACCEPTED, REGISTERED, FAILED)
#: states in which the document must never be sent again
DONE_STATES = (ACCEPTED, REGISTERED)

#: who decided an attempt's outcome: РЭМД's synchronous answer to the sender, or a registerDocumentResult callback
DECIDED_BY_ANSWER, DECIDED_BY_CALLBACK = "answer", "callback"


class LifecycleConflict(EmdError):
    """A transition the lifecycle does not allow (registered is final; no send after acceptance).

    Between replicas it means "another one decided first": the sender and the status worker catch it
    and treat the document as already handled."""

    reason = "LIFECYCLE_CONFLICT"


@dataclass(frozen=True, kw_only=True)
class Attempt:
    local_uid: str
    organization: str
    message_id: str
    attempt: int
    endpoint: str
    sent_at: datetime
    outcome: str | None = None
    code: str | None = None
    message: str | None = None
    finished_at: datetime | None = None
    decided_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class RegistryRequest:
    """One question to the registry answered on the callback (``getRegistryItem``), by its MessageID.

    ``(organization, local_uid)`` is the document it is about. ``purpose`` says why it was asked (the status
    worker's ``deadline`` or ``poll``, or ``duplicate`` with ``attempt_message_id`` the attempt whose
    NOT_UNIQUE_PROVIDED_ID it reconciles); ``outcome``, ``decided_by`` (``callback <its MessageID>``) and ``code``
    are set by the first answer."""

    message_id: str
    organization: str
    local_uid: str
    emdr_id: str
    purpose: str
    asked_at: datetime
    attempt_message_id: str | None = None
    outcome: str | None = None
    decided_by: str | None = None
    code: str | None = None
    answered_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Document:
    """One document: ``(organization, local_uid)`` is its identity (two organisations may share a localUid)."""

    local_uid: str
    organization: str
    kind: str
    state: str
    signed_event: bytes | None = None
    signed_ref: str | None = None
    document_ref: str | None = None
    emdr_id: str | None = None
    accepted_message_id: str | None = None
    failure_reason: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    accepted_at: datetime | None = None
    registered_at: datetime | None = None
    failed_at: datetime | None = None
    #: РЭМД's storeTillDate as it wrote it, an xs:date with its offset ("2048-09-22+03:00")
    store_till_date: str | None = None


class LifecycleStore(Protocol):
    """What the sender and status workers need; every method is one committed transaction.

    A document is ``(organization, local_uid)``: every method about one document takes both, so no
    organisation's document is read or changed through another's (docs/security.md, "Tenants in the state").
    MessageIDs and registry numbers are unique across organisations (ours and РЭМД's)."""

    def register(
        self,
        local_uid: str,
        *,
        organization: str,
        kind: str,
        signed_event: bytes | None = None,
        signed_ref: str | None = None,
        document_ref: str | None = None,
    ) -> Document:
        """Create the document in state ``signed`` if unknown; return it as stored (never overwrites state)."""

    def get(self, local_uid: str, *, organization: str) -> Document | None: ...

    def documents_of(self, local_uid: str) -> list[Document]:
        """Every organisation's document under ``local_uid`` (support's search; never a pipeline decision)."""
        ...

    def record_attempt(
        self,
        local_uid: str,
        message_id: str,
        *,
        organization: str,
        endpoint: str,
        sent_at: datetime | None = None,
        register: Mapping[str, Any] | None = None,
    ) -> Attempt:
        """Number and store an attempt (state → ``sending``); refuses once accepted or registered.
        ``register``: :meth:`register`'s keyword arguments but ``organization``, the document created if unknown in
        the same transaction (the sender's first attempt is one commit)."""

    def record_outcome(
        self,
        message_id: str,
        *,
        outcome: str,
        decided_by: str,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Store an attempt's outcome and who decided it (``DECIDED_BY_ANSWER`` or ``DECIDED_BY_CALLBACK``)."""

    def find_by_message_id(self, message_id: str) -> tuple[Document, Attempt] | None: ...

    def find_by_emdr_id(self, emdr_id: str) -> Document | None:
        """The document registered under this РЭМД registry number (the callbacks' last correlation fallback)."""

    def mark_accepted(
        self,
        local_uid: str,
        *,
        organization: str,
        message_id: str,
        accepted_at: datetime | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> Document:
        """State ``accepted`` and the attempt's outcome (``code``, ``message``: the answer's) in one transaction."""

    def mark_registered(
        self,
        local_uid: str,
        emdr_id: str,
        *,
        organization: str,
        registered_at: datetime | None = None,
        store_till_date: str | None = None,
    ) -> Document:
        """State ``registered`` under ``emdr_id``; the first ``registered_at`` (РЭМД's registrationDateTime, to the
        microsecond) and ``store_till_date`` (its storeTillDate with offset) are kept."""

    def mark_failed(
        self,
        local_uid: str,
        *,
        organization: str,
        reason: str,
        code: str | None = None,
        message: str | None = None,
    ) -> Document: ...

    def resubmit(
        self,
        local_uid: str,
        *,
        organization: str,
        kind: str,
        signed_event: bytes,
        document_ref: str | None = None,
    ) -> Document:
        """A corrected document under the localUid of a failed one: its content replaces the failed one's and the
        state goes back to ``signed`` (the failure and the acceptance cleared); the attempts stay, so every
        MessageID ever sent for the localUid is kept. Only from ``failed`` (``LifecycleConflict`` otherwise):
        whether РЭМД allows it is the sender's decision (``services.pipeline.submission``)."""
        ...

    def history(self, local_uid: str, *, organization: str) -> list[Attempt]: ...

    def message_ids(self, local_uid: str, *, organization: str) -> list[str]:
        """Every MessageID sent for the document, oldest first (what a dead letter and СТП need)."""
        ...

    def record_registry_request(
        self,
        message_id: str,
        local_uid: str,
        *,
        organization: str,
        emdr_id: str,
        purpose: str,
        attempt_message_id: str | None = None,
        asked_at: datetime | None = None,
    ) -> RegistryRequest:
        """Store a registry question about a known document **before it is sent**: its answer comes on the
        callback, and may come before the request's own synchronous answer. ``KeyError`` for an unknown one."""
        ...

    def find_registry_request(self, message_id: str) -> tuple[Document, RegistryRequest] | None:
        """The registry question a callback answers (any spelling of its MessageID), with its document."""
        ...

    def record_registry_answer(
        self, message_id: str, *, outcome: str, decided_by: str, code: str | None = None
    ) -> RegistryRequest | None:
        """Record the first answer to a registry question (a later one changes nothing); the question as stored
        after the call, so the caller sees which answer decided it. None for an unknown question."""
        ...

    def registry_requests(self, local_uid: str, *, organization: str) -> list[RegistryRequest]:
        """Every registry question about the document, oldest first."""
        ...

    def awaiting(self) -> tuple[int, datetime | None]:
        """(documents accepted and not yet decided, when the oldest of them was accepted)."""
        ...

    def overdue(
        self, accepted_before: datetime, *, organizations: Collection[str] | None = None
    ) -> list[tuple[str, str, str | None]]:
        """(organisation, localUid, accepted MessageID) of documents accepted before then and still without a
        result (of those ``organizations`` only, when given)."""
        ...

    @property
    def tables(self) -> list[str]:
        """The store's tables (``emd lifecycle migrate --grant`` grants on them)."""
        ...

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl`` seconds; False while another holder's has
        not expired (one replica at a time runs what the lease guards: ``services.pipeline.lease``)."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (only ``holder``'s own), so another replica takes it over at once."""
        ...

    def prune(self, decided_before: datetime) -> tuple[int, int]:
        """Delete documents decided (registered or failed) before then, with their attempts and registry questions:
        (documents, attempts) deleted. A document on its way is never touched (retention, ``emd lifecycle prune``)."""
        ...

    def close(self) -> None: ...


def check_transition(
    doc: Document | None, local_uid: str, target: str, *, emdr_id: str | None = None
) -> Document:
    """The lifecycle's rules, for both backends: the document (read under the transaction's lock) as it may move
    to ``target``, or ``KeyError`` (unknown) / ``LifecycleConflict`` (forbidden). ``accepted`` after
    ``registered`` is allowed here and left a no-op by ``mark_accepted`` (a late sync answer)."""
    if doc is None:
        raise KeyError(
            f"unknown document {local_uid!r}: register it first" if target == SENDING else local_uid
        )
    if target == SENDING and doc.state in DONE_STATES:
        raise LifecycleConflict(f"{local_uid} is already {doc.state}; it must not be sent again")
    if target == REGISTERED and doc.state == REGISTERED and doc.emdr_id not in (None, emdr_id):
        raise LifecycleConflict(f"{local_uid} is registered as {doc.emdr_id}, not {emdr_id}")
    if target == FAILED and doc.state == REGISTERED:
        raise LifecycleConflict(f"{local_uid} is registered; it cannot fail")
    if target == SIGNED and doc.state != FAILED:
        raise LifecycleConflict(f"{local_uid} is {doc.state}: only a failed document takes new content")
    return doc
