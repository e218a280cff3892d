"""The lifecycle store's logic, written once in SQL both backends speak (``services.lifecycle``).

``SqlLifecycleStore`` holds every statement and every rule. A document is ``(organization, local_uid)``: every
statement names both, so one organisation's document is never read or changed through another's (the DDL and its
upgrades: ``services.lifecycle.schema``). What differs between SQLite and PostgreSQL is the store's ``db`` (``SqliteDatabase`` or ``PostgresDatabase``: the connection, its transactions and their
error mapping, the placeholder, ``FOR UPDATE``, how a timestamp is stored, whether a column exists), and
the subclass's table names and schema. Statements here are written with ``{documents}``, ``{attempts}``,
``{for_update}`` and ``?``, rendered once per backend. ``register`` is ``INSERT … ON CONFLICT DO NOTHING``
in both.

``database_location`` reads ``EMD_LIFECYCLE_STORE`` for every store kept in that database (this one and
the support tables', ``services.lifecycle.support_tables``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from producer.errors import ConfigurationError
from producer.ids import normalize_message_id
from services.lifecycle.model import (
    ACCEPTED,
    DECIDED_BY_ANSWER,
    DECIDED_BY_CALLBACK,
    FAILED,
    REGISTERED,
    SENDING,
    SIGNED,
    Attempt,
    Document,
    RegistryRequest,
    check_transition,
)
from services.lifecycle.schema import SCHEMA_LOCK as _SCHEMA_LOCK
from services.lifecycle.schema import ensure as _ensure_schema
from services.outcome import Outcome

_DOCUMENT_TIMES = ("created_at", "updated_at", "accepted_at", "registered_at", "failed_at")
_ATTEMPT_TIMES = ("sent_at", "finished_at")

#: pg_advisory_xact_lock key serialising the lifecycle schema's creation (``services.lifecycle.schema``)
SCHEMA_LOCK = _SCHEMA_LOCK


def database_location(data_dir: Path | str, url: str = "") -> tuple[str, str]:
    """Where ``EMD_LIFECYCLE_STORE`` (``url``) keeps the database: ``("sqlite", file)`` for an empty URL
    (``<data_dir>/lifecycle.sqlite3``) or ``sqlite:///path``, ``("postgresql", url)`` for ``postgresql://…``;
    any other scheme is a ``ConfigurationError``."""
    if not url:
        return "sqlite", str(Path(data_dir) / "lifecycle.sqlite3")
    if url.startswith("sqlite:///"):
        return "sqlite", url[len("sqlite:///") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    raise ConfigurationError(
        f"unknown lifecycle store URL scheme: {url.split(':', 1)[0]!r}", reason="LIFECYCLE_BACKEND_UNKNOWN"
    )


@functools.cache
def _render(
    template: str,
    documents: str,
    attempts: str,
    registry_requests: str,
    leases: str,
    for_update: str,
    placeholder: str,
) -> str:
    sql = template.format(
        documents=documents,
        attempts=attempts,
        registry_requests=registry_requests,
        leases=leases,
        for_update=for_update,
    )
    return sql.replace("?", placeholder)


def _now() -> datetime:
    return datetime.now(UTC)


class SqlLifecycleStore:
    """The ``LifecycleStore`` of both backends; a subclass opens ``db`` and names its tables."""

    documents_table: ClassVar[str]
    attempts_table: ClassVar[str]
    registry_requests_table: ClassVar[str]
    leases_table: ClassVar[str]
    #: the dialect's DDL (``services.lifecycle.schema``)
    schema: ClassVar[str]
    #: SqliteDatabase or PostgresDatabase, opened by the subclass
    db: Any

    def close(self) -> None:
        self.db.close()

    def _q(self, template: str) -> str:
        return _render(
            template,
            self.documents_table,
            self.attempts_table,
            self.registry_requests_table,
            self.leases_table,
            self.db.for_update,
            self.db.placeholder,
        )

    @property
    def tables(self) -> list[str]:
        """Every table of the lifecycle store (what ``emd lifecycle migrate --grant`` grants on)."""
        return [self.documents_table, self.attempts_table, self.registry_requests_table, self.leases_table]

    def _upgrade(self, db: Any) -> None:
        """What an older database lacks (idempotent; run inside the opening transaction)."""
        _ensure_schema(
            self.db,
            db,
            tables=(self.documents_table, self.attempts_table, self.registry_requests_table),
            schema=self.schema,
        )

    def _time(self, value: Any) -> datetime | None:
        return None if value is None else self.db.from_db(value)

    def _document(self, row: Any) -> Document | None:
        if row is None:
            return None
        d = dict(row)
        if d["signed_event"] is not None:
            d["signed_event"] = bytes(d["signed_event"])  # PostgreSQL may hand back a memoryview
        for k in _DOCUMENT_TIMES:
            d[k] = self._time(d[k])
        return Document(**d)

    def _registry_request(self, row: Any) -> RegistryRequest:
        d = dict(row)
        for k in ("asked_at", "answered_at"):
            d[k] = self._time(d[k])
        return RegistryRequest(**d)

    def _attempt(self, row: Any) -> Attempt:
        d = dict(row)
        for k in _ATTEMPT_TIMES:
            d[k] = self._time(d[k])
        return Attempt(**d)

    def _get(self, db: Any, organization: str, local_uid: str, *, lock: bool = False) -> Document | None:
        sql = "SELECT * FROM {documents} WHERE organization = ? AND local_uid = ?" + (
            " {for_update}" if lock else ""
        )
        return self._document(db.execute(self._q(sql), (organization, local_uid)).fetchone())

    def _updated(self, db: Any, organization: str, local_uid: str) -> Document:
        """The document this transaction has just updated (its transition check found it)."""
        doc = self._get(db, organization, local_uid)
        if doc is None:
            raise LookupError(f"document {local_uid} vanished inside its own transaction")
        return doc

    # --- the LifecycleStore interface -------------------------------------------------------------

    def _insert(
        self,
        db: Any,
        local_uid: str,
        *,
        organization: str,
        kind: str,
        signed_event: bytes | None = None,
        signed_ref: str | None = None,
        document_ref: str | None = None,
    ) -> None:
        at = self.db.to_db(_now())
        db.execute(
            self._q(
                "INSERT INTO {documents} (local_uid, organization, kind, state, signed_event, signed_ref,"
                " document_ref, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (organization, local_uid) DO NOTHING"
            ),
            (local_uid, organization, kind, SIGNED, signed_event, signed_ref, document_ref, at, at),
        )

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
        with self.db.transaction() as db:
            self._insert(
                db,
                local_uid,
                organization=organization,
                kind=kind,
                signed_event=signed_event,
                signed_ref=signed_ref,
                document_ref=document_ref,
            )
            doc = self._get(db, organization, local_uid)
        assert doc is not None
        return doc

    def get(self, local_uid: str, *, organization: str) -> Document | None:
        with self.db.reading() as db:
            return self._get(db, organization, local_uid)

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
        mid = normalize_message_id(message_id)
        sent = self.db.to_db(sent_at or _now())
        with self.db.transaction() as db:
            if register is not None:
                self._insert(db, local_uid, organization=organization, **register)
            # replicas on one document queue here (PostgreSQL: the row lock; SQLite: the database lock)
            check_transition(self._get(db, organization, local_uid, lock=True), local_uid, SENDING)
            n = db.execute(
                self._q(
                    "SELECT COALESCE(MAX(attempt), 0) + 1 AS n FROM {attempts}"
                    " WHERE organization = ? AND local_uid = ?"
                ),
                (organization, local_uid),
            ).fetchone()["n"]
            db.execute(
                self._q(
                    "INSERT INTO {attempts} (message_id, organization, local_uid, attempt, endpoint, sent_at)"
                    " VALUES (?,?,?,?,?,?)"
                ),
                (mid, organization, local_uid, n, endpoint, sent),
            )
            db.execute(
                self._q(
                    "UPDATE {documents} SET state = ?, updated_at = ? WHERE organization = ? AND local_uid = ?"
                ),
                (SENDING, sent, organization, local_uid),
            )
        return Attempt(
            local_uid=local_uid,
            organization=organization,
            message_id=mid,
            attempt=n,
            endpoint=endpoint,
            sent_at=self.db.from_db(sent),
        )

    def _set_outcome(
        self,
        db: Any,
        mid: str,
        *,
        outcome: str,
        decided_by: str,
        code: str | None,
        message: str | None,
        at: Any,
    ) -> None:
        """The attempt's outcome; a synchronous answer never overrides what a callback already decided (РЭМД's
        callback can overtake the answer to the same request)."""
        db.execute(
            self._q(
                "UPDATE {attempts} SET outcome = ?, decided_by = ?, code = ?, message = ?,"
                " finished_at = ? WHERE message_id = ? AND NOT (COALESCE(decided_by, '') = ? AND ? = ?)"
            ),
            (outcome, decided_by, code, message, at, mid, DECIDED_BY_CALLBACK, decided_by, DECIDED_BY_ANSWER),
        )

    def record_outcome(
        self,
        message_id: str,
        *,
        outcome: str,
        decided_by: str,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        with self.db.transaction() as db:
            self._set_outcome(
                db,
                normalize_message_id(message_id),
                outcome=outcome,
                decided_by=decided_by,
                code=code,
                message=message,
                at=self.db.to_db(_now()),
            )

    def find_by_message_id(self, message_id: str) -> tuple[Document, Attempt] | None:
        # one transaction: the attempt and its document from the same moment
        with self.db.transaction(write=False) as db:
            row = db.execute(
                self._q("SELECT * FROM {attempts} WHERE message_id = ?"), (normalize_message_id(message_id),)
            ).fetchone()
            if row is None:
                return None
            attempt = self._attempt(row)
            doc = self._get(db, attempt.organization, attempt.local_uid)
        assert doc is not None
        return doc, attempt

    def find_by_emdr_id(self, emdr_id: str) -> Document | None:
        if not emdr_id:
            return None
        with self.db.reading() as db:
            # emdrId is set only by mark_registered, which refuses a second one: at most one row in practice
            return self._document(
                db.execute(
                    self._q("SELECT * FROM {documents} WHERE emdr_id = ? ORDER BY registered_at LIMIT 1"),
                    (emdr_id.strip(),),
                ).fetchone()
            )

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
        at = self.db.to_db(accepted_at or _now())
        mid = normalize_message_id(message_id)
        with self.db.transaction() as db:
            doc = check_transition(self._get(db, organization, local_uid, lock=True), local_uid, ACCEPTED)
            decided = db.execute(
                self._q("SELECT decided_by FROM {attempts} WHERE message_id = ?"), (mid,)
            ).fetchone()
            by_callback = decided is not None and decided["decided_by"] == DECIDED_BY_CALLBACK
            if (
                not by_callback
            ):  # the answer's outcome on its attempt, in the same transaction as the acceptance
                self._set_outcome(
                    db,
                    mid,
                    outcome=Outcome.ACCEPTED,
                    decided_by=DECIDED_BY_ANSWER,
                    code=code,
                    message=message,
                    at=at,
                )
            if doc.state == REGISTERED or by_callback:
                # a late sync answer: РЭМД's callback for this attempt came first and decided it (registered,
                # or an error the status worker has acted on: a resend, a dead letter), so it stays decided
                return doc
            db.execute(
                self._q(
                    "UPDATE {documents} SET state = ?, accepted_message_id = ?, accepted_at = ?,"
                    " updated_at = ? WHERE organization = ? AND local_uid = ?"
                ),
                (ACCEPTED, mid, at, at, organization, local_uid),
            )
            return self._updated(db, organization, local_uid)

    def mark_registered(
        self,
        local_uid: str,
        emdr_id: str,
        *,
        organization: str,
        registered_at: datetime | None = None,
        store_till_date: str | None = None,
    ) -> Document:
        at = self.db.to_db(registered_at or _now())
        with self.db.transaction() as db:
            check_transition(
                self._get(db, organization, local_uid, lock=True), local_uid, REGISTERED, emdr_id=emdr_id
            )
            # the first registration's time and storeTillDate stay: a re-emission says what the first did
            db.execute(
                self._q(
                    "UPDATE {documents} SET state = ?, emdr_id = ?,"
                    " registered_at = COALESCE(registered_at, ?),"
                    " store_till_date = COALESCE(store_till_date, ?), updated_at = ?"
                    " WHERE organization = ? AND local_uid = ?"
                ),
                (REGISTERED, emdr_id, at, store_till_date, at, organization, local_uid),
            )
            return self._updated(db, organization, local_uid)

    def mark_failed(
        self,
        local_uid: str,
        *,
        organization: str,
        reason: str,
        code: str | None = None,
        message: str | None = None,
    ) -> Document:
        at = self.db.to_db(_now())
        with self.db.transaction() as db:
            check_transition(self._get(db, organization, local_uid, lock=True), local_uid, FAILED)
            db.execute(
                self._q(
                    "UPDATE {documents} SET state = ?, failure_reason = ?, failure_code = ?,"
                    " failure_message = ?, failed_at = ?, updated_at = ? WHERE organization = ? AND local_uid = ?"
                ),
                (FAILED, reason, code, message, at, at, organization, local_uid),
            )
            return self._updated(db, organization, local_uid)

    def resubmit(
        self,
        local_uid: str,
        *,
        organization: str,
        kind: str,
        signed_event: bytes,
        document_ref: str | None = None,
    ) -> Document:
        at = self.db.to_db(_now())
        with self.db.transaction() as db:
            check_transition(self._get(db, organization, local_uid, lock=True), local_uid, SIGNED)
            db.execute(
                self._q(
                    "UPDATE {documents} SET state = ?, kind = ?, signed_event = ?, document_ref = ?,"
                    " signed_ref = NULL, accepted_message_id = NULL, accepted_at = NULL, failure_reason = NULL,"
                    " failure_code = NULL, failure_message = NULL, failed_at = NULL, updated_at = ?"
                    " WHERE organization = ? AND local_uid = ?"
                ),
                (SIGNED, kind, signed_event, document_ref, at, organization, local_uid),
            )
            return self._updated(db, organization, local_uid)

    def history(self, local_uid: str, *, organization: str) -> list[Attempt]:
        with self.db.reading() as db:
            rows = db.execute(
                self._q("SELECT * FROM {attempts} WHERE organization = ? AND local_uid = ? ORDER BY attempt"),
                (organization, local_uid),
            ).fetchall()
        return [self._attempt(r) for r in rows]

    def overdue(
        self, accepted_before: datetime, *, organizations: Collection[str] | None = None
    ) -> list[tuple[str, str, str | None]]:
        only = sorted(organizations or ())
        where = f" AND organization IN ({','.join('?' * len(only))})" if only else ""
        with self.db.reading() as db:
            rows = db.execute(
                self._q(
                    "SELECT organization, local_uid, accepted_message_id FROM {documents}"
                    " WHERE state = ? AND accepted_at < ?" + where + " ORDER BY accepted_at"
                ),
                (ACCEPTED, self.db.to_db(accepted_before), *only),
            ).fetchall()
        return [(r["organization"], r["local_uid"], r["accepted_message_id"]) for r in rows]

    def documents_of(self, local_uid: str) -> list[Document]:
        """Every organisation's document under ``local_uid``: for support, who searches by the localUid alone
        (``emd status``, ``emd dlq show``) and then chooses the organisation; never for the pipeline's decisions."""
        with self.db.reading() as db:
            rows = db.execute(
                self._q("SELECT * FROM {documents} WHERE local_uid = ? ORDER BY organization"), (local_uid,)
            ).fetchall()
        return [d for d in map(self._document, rows) if d is not None]

    def awaiting(self) -> tuple[int, datetime | None]:
        """How many documents РЭМД accepted and has not decided yet, and when the oldest was accepted."""
        with self.db.reading() as db:
            row = db.execute(
                self._q("SELECT COUNT(*) AS n, MIN(accepted_at) AS oldest FROM {documents} WHERE state = ?"),
                (ACCEPTED,),
            ).fetchone()
        return int(row["n"]), self._time(row["oldest"])

    def message_ids(self, local_uid: str, *, organization: str) -> list[str]:
        return [a.message_id for a in self.history(local_uid, organization=organization)]

    # --- registry look-ups answered on the callback (getRegistryItem) ---------------------------------

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
        mid = normalize_message_id(message_id)
        attempt = normalize_message_id(attempt_message_id) if attempt_message_id else None
        at = self.db.to_db(asked_at or _now())
        with self.db.transaction() as db:
            if self._get(db, organization, local_uid) is None:
                raise KeyError(local_uid)
            db.execute(
                self._q(
                    "INSERT INTO {registry_requests} (message_id, organization, local_uid, emdr_id, purpose,"
                    " attempt_message_id, asked_at) VALUES (?,?,?,?,?,?,?)"
                ),
                (mid, organization, local_uid, emdr_id, purpose, attempt, at),
            )
        return RegistryRequest(
            message_id=mid,
            organization=organization,
            local_uid=local_uid,
            emdr_id=emdr_id,
            purpose=purpose,
            attempt_message_id=attempt,
            asked_at=self.db.from_db(at),
        )

    def find_registry_request(self, message_id: str) -> tuple[Document, RegistryRequest] | None:
        with self.db.transaction(write=False) as db:
            row = db.execute(
                self._q("SELECT * FROM {registry_requests} WHERE message_id = ?"),
                (normalize_message_id(message_id),),
            ).fetchone()
            if row is None:
                return None
            request = self._registry_request(row)
            doc = self._get(db, request.organization, request.local_uid)
        assert doc is not None
        return doc, request

    def record_registry_answer(
        self, message_id: str, *, outcome: str, decided_by: str, code: str | None = None
    ) -> RegistryRequest | None:
        with self.db.transaction() as db:
            mid = normalize_message_id(message_id)
            db.execute(
                self._q(
                    "UPDATE {registry_requests} SET outcome = ?, decided_by = ?, code = ?, answered_at = ?"
                    " WHERE message_id = ? AND outcome IS NULL"
                ),
                (outcome, decided_by, code, self.db.to_db(_now()), mid),
            )
            row = db.execute(
                self._q("SELECT * FROM {registry_requests} WHERE message_id = ?"), (mid,)
            ).fetchone()
        return self._registry_request(row) if row is not None else None

    def registry_requests(self, local_uid: str, *, organization: str) -> list[RegistryRequest]:
        with self.db.reading() as db:
            rows = db.execute(
                self._q(
                    "SELECT * FROM {registry_requests} WHERE organization = ? AND local_uid = ? ORDER BY asked_at"
                ),
                (organization, local_uid),
            ).fetchall()
        return [self._registry_request(r) for r in rows]

    # --- leases and retention ---------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        now = _now()
        at, until = self.db.to_db(now), self.db.to_db(now + timedelta(seconds=ttl))
        with self.db.transaction() as db:
            # taken when free, renewed by its holder, taken over once its holder let it expire
            db.execute(
                self._q(
                    "INSERT INTO {leases} (name, holder, expires_at) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE"
                    " SET holder = excluded.holder, expires_at = excluded.expires_at"
                    " WHERE {leases}.holder = excluded.holder OR {leases}.expires_at < ?"
                ),
                (name, holder, until, at),
            )
            row = db.execute(self._q("SELECT holder FROM {leases} WHERE name = ?"), (name,)).fetchone()
        return row is not None and row["holder"] == holder

    def release_lease(self, name: str, holder: str) -> None:
        with self.db.transaction() as db:
            db.execute(self._q("DELETE FROM {leases} WHERE name = ? AND holder = ?"), (name, holder))

    def prune(self, decided_before: datetime) -> tuple[int, int]:
        before = self.db.to_db(decided_before)
        decided = (
            " WHERE (organization, local_uid) IN"
            " (SELECT organization, local_uid FROM {documents} WHERE state IN (?, ?) AND updated_at < ?)"
        )
        with self.db.transaction() as db:
            # a decided document's registry questions and attempts go with it (they reference it)
            db.execute(self._q("DELETE FROM {registry_requests}" + decided), (REGISTERED, FAILED, before))
            attempts = db.execute(
                self._q("DELETE FROM {attempts}" + decided),
                (REGISTERED, FAILED, before),
            ).rowcount
            documents = db.execute(
                self._q("DELETE FROM {documents} WHERE state IN (?, ?) AND updated_at < ?"),
                (REGISTERED, FAILED, before),
            ).rowcount
        return documents, attempts
