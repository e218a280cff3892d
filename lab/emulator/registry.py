"""The emulator's memory: registered documents and the log of every request it handled.

Both are plain thread-safe objects the HTTP handlers, the background workers and the tests share.
The request log lives in memory only. Registered documents do too, unless the registry is given a
``StateDir`` (``emd emulator --state``): then each registration is appended there and a restart starts
with them; ``POST /_emulator/reset`` empties both.

``emdrId`` format: ``<region>.<2 digits>.<yy>.<mm>.<9-digit sequence>`` — the shape of the registry
numbers seen in the wild (``16.62.23.09.000014523``, ``docs/protocol.md#callback-shapes`` [P]); the first
two parts are configurable, the year and month are those of registration.

Dates are written as РЭМД writes them (``docs/protocol.md#callback-shapes``): ``registrationDateTime`` to the
microsecond with the Moscow offset (``2023-09-22T09:27:02.104000+03:00``), ``storeTillDate`` a date with the
offset (``2048-09-22+03:00``).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from lab.emulator.state import StateDir
from services.timestamps import stored

__all__ = ["MOSCOW", "Registry", "RegistryRecord", "RequestEntry"]

#: the offset РЭМД writes its dates and times in
MOSCOW = timezone(timedelta(hours=3))


def _stored(when: datetime | None) -> str | None:
    return stored(when) if when is not None else None


@dataclass(slots=True)
class RegistryRecord:
    """One registered document, as ``getRegistryItem`` / ``searchRegistryItem`` answer it."""

    emdr_id: str
    local_uid: str
    organization: str
    kind: str
    message_id: str
    client_entity_id: str
    registration_date_time: datetime
    store_till_date: str
    patient_snils: str | None = None
    document_version: str = "1"
    digest: str | None = None  #: sha256 of the registered bytes: other bytes under this localUid are refused

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["registration_date_time"] = _stored(self.registration_date_time)
        return data

    @property
    def registration_text(self) -> str:
        """``registrationDateTime`` as РЭМД writes it: Moscow offset, microseconds."""
        return self.registration_date_time.astimezone(MOSCOW).isoformat(timespec="microseconds")

    @property
    def store_till_text(self) -> str:
        """``storeTillDate`` as РЭМД writes it: a date with the Moscow offset."""
        return f"{self.store_till_date[:10]}+03:00"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegistryRecord:
        return cls(
            **{**data, "registration_date_time": datetime.fromisoformat(data["registration_date_time"])}
        )


@dataclass(slots=True)
class RequestEntry:
    """What happened to one incoming request, kept for tests and for МИС teams debugging their client."""

    seq: int
    operation: str  # registerDocument, searchRegistryItem, getRegistryItem, unknown
    received_at: datetime
    message_id: str | None = None
    client_entity_id: str | None = None
    local_uid: str | None = None
    organization: str | None = None
    reply_to: str | None = None
    #: accepted | rejected | fault | answered | injected:<fault kind> ; then registered | error for async
    outcome: str = "received"
    sync_codes: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # codes of the asynchronous result
    emdr_id: str | None = None
    faults: list[str] = field(default_factory=list)  # fault kinds injected on this request
    file_requests: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # one per delivery attempt
    finished_at: datetime | None = None
    #: ips-variants: the later file request by emdrId — pending, ok, different_bytes, a code, gave_up
    later_pull: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["received_at"] = _stored(self.received_at)
        data["finished_at"] = _stored(self.finished_at)
        return data


class Registry:
    """Registered documents and the request log; thread-safe.

    A localUid is unique per information system (clientEntityId), as РЭМД checks it across the registering
    system's documents whatever their organisation (``docs/protocol.md#request-body`` [A]).
    """

    def __init__(
        self, *, emdr_prefix: str = "16.62", store_years: int = 5, state: StateDir | None = None
    ) -> None:
        self.emdr_prefix = emdr_prefix
        self.store_years = store_years
        self.state = state
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[tuple[str, str], RegistryRecord] = {}
        for data in state.records() if state is not None else ():
            record = RegistryRecord.from_json(data)
            self._records[(record.client_entity_id, record.local_uid)] = record
        last = max((int(r.emdr_id.rsplit(".", 1)[1]) for r in self._records.values()), default=14522)
        self._requests: list[RequestEntry] = []
        self._emdr_seq = itertools.count(last + 1)
        self._req_seq = itertools.count(1)

    # --- registry ---------------------------------------------------------------------------

    def register(
        self,
        *,
        local_uid: str,
        organization: str,
        kind: str,
        message_id: str,
        client_entity_id: str,
        patient_snils: str | None = None,
        digest: str | None = None,
        now: datetime | None = None,
    ) -> tuple[RegistryRecord | None, RegistryRecord | None]:
        """Register a document: (the new record, None), or (None, the record already holding this ИС's
        localUid) — NOT_UNIQUE_PROVIDED_ID; compare ``digest`` to tell a resend from changed content."""
        now = now or datetime.now(UTC)
        with self._lock:
            existing = self._records.get((client_entity_id, local_uid))
            if existing is not None:
                return None, existing
            emdr_id = f"{self.emdr_prefix}.{now:%y}.{now:%m}.{next(self._emdr_seq):09d}"
            record = RegistryRecord(
                emdr_id=emdr_id,
                local_uid=local_uid,
                organization=organization,
                kind=kind,
                message_id=message_id,
                client_entity_id=client_entity_id,
                registration_date_time=now,
                store_till_date=(now.astimezone(MOSCOW) + timedelta(days=365 * self.store_years))
                .date()
                .isoformat(),
                patient_snils=patient_snils,
                digest=digest,
            )
            if self.state is not None:  # on disk before its callback can leave
                self.state.append_record(record.to_json())
            self._records[(client_entity_id, local_uid)] = record
            self._changed.notify_all()
            return record, None

    def lookup(self, client_entity_id: str, local_uid: str) -> RegistryRecord | None:
        with self._lock:
            return self._records.get((client_entity_id, local_uid))

    def by_emdr_id(self, emdr_id: str) -> RegistryRecord | None:
        with self._lock:
            return next((r for r in self._records.values() if r.emdr_id == emdr_id), None)

    def records(self) -> list[RegistryRecord]:
        with self._lock:
            return list(self._records.values())

    def search(
        self,
        *,
        organization: str | None = None,
        kind: str | None = None,
        begin: datetime | None = None,
        end: datetime | None = None,
        patient_snils: str | None = None,
        client_entity_id: str | None = None,
    ) -> list[RegistryRecord]:
        """Records matching every given criterion (the ``searchRegistryItem`` semantics)."""
        with self._lock:
            out = []
            for r in self._records.values():
                if organization and r.organization != organization:
                    continue
                if kind and r.kind != kind:
                    continue
                if patient_snils and r.patient_snils != patient_snils:
                    continue
                if client_entity_id and r.client_entity_id != client_entity_id:
                    continue
                if begin and r.registration_date_time < begin:
                    continue
                if end and r.registration_date_time > end:
                    continue
                out.append(r)
            return out

    # --- request log ------------------------------------------------------------------------

    def log_request(self, operation: str, **fields: Any) -> RequestEntry:
        with self._lock:
            entry = RequestEntry(
                seq=next(self._req_seq), operation=operation, received_at=datetime.now(UTC), **fields
            )
            self._requests.append(entry)
            self._changed.notify_all()
            return entry

    def update(self, entry: RequestEntry, **fields: Any) -> None:
        """Change an entry under the lock (the background worker and the handler both write)."""
        with self._lock:
            for name, value in fields.items():
                setattr(entry, name, value)
            self._changed.notify_all()

    def append(self, entry: RequestEntry, name: str, value: Any) -> None:
        with self._lock:
            getattr(entry, name).append(value)
            self._changed.notify_all()

    def requests(self, *, operation: str | None = None) -> list[RequestEntry]:
        with self._lock:
            return [e for e in self._requests if operation is None or e.operation == operation]

    def wait_for(self, predicate: Any, *, timeout: float = 30.0) -> bool:
        """Block until ``predicate(registry)`` is true or ``timeout`` seconds pass (tests wait on this)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._requests.clear()
            if self.state is not None:
                self.state.clear()
            self._changed.notify_all()
