"""The production lifecycle backend: PostgreSQL, shared by replicas of the workers on several hosts.

Same semantics as ``SqliteLifecycleStore``, method for method (``services/lifecycle/__init__.py`` holds the
interface, the states and ``POSTGRES_SCHEMA``). What replaces SQLite's database-wide write lock:

* every transition reads the document with ``SELECT … FOR UPDATE``, so two replicas handling the same
  document (a redelivery after a rebalance) queue on that row and the second one decides on what the
  first committed: an attempt is never numbered twice, never recorded after acceptance, and a late
  ``mark_failed`` never overwrites ``registered``;
* ``register`` is ``INSERT … ON CONFLICT DO NOTHING``; the schema is created on open under a transaction
  advisory lock, so replicas starting together do not race on ``CREATE TABLE IF NOT EXISTS``.

One connection per store (autocommit, explicit transactions), guarded by a lock because the workers call
the store from ``asyncio.to_thread``. A lost connection (server restart, network) raises
``TransientError(reason="LIFECYCLE_STORE_UNAVAILABLE")`` — the runtime retries the record — and the
next call reconnects. Timestamps come back in UTC, as the SQLite store's do.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from services.errors import TransientError
from services.ids import normalize_message_id
from services.lifecycle.model import (
    ACCEPTED,
    FAILED,
    OUTCOME_ACCEPTED,
    REGISTERED,
    SENDING,
    SIGNED,
    Attempt,
    Document,
    check_transition,
)
from services.logs import get_logger

log = get_logger(__name__)

#: the production schema (PostgreSQL 13+); same columns, native types
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS emd_documents (
    local_uid           text PRIMARY KEY,
    organization        text NOT NULL,
    kind                text NOT NULL,
    state               text NOT NULL CHECK (state IN ('signed','sending','accepted','registered','failed')),
    signed_event        bytea,
    signed_ref          text,
    document_ref        text,
    emdr_id             text,
    accepted_message_id text,                  -- normalised; not uuid: non-UUID ids are kept as sent
    failure_reason      text,
    failure_code        text,
    failure_message     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    accepted_at         timestamptz,
    registered_at       timestamptz,
    failed_at           timestamptz
);
CREATE TABLE IF NOT EXISTS emd_attempts (
    message_id   text PRIMARY KEY,                 -- normalised (normalize_message_id)
    local_uid    text NOT NULL REFERENCES emd_documents(local_uid),
    attempt      integer NOT NULL,
    endpoint     text NOT NULL,
    sent_at      timestamptz NOT NULL,
    outcome      text,
    code         text,
    message      text,
    finished_at  timestamptz,
    UNIQUE (local_uid, attempt)
);
CREATE INDEX IF NOT EXISTS emd_documents_by_emdr_id ON emd_documents(emdr_id);
CREATE INDEX IF NOT EXISTS emd_attempts_by_document ON emd_attempts(local_uid, attempt);
CREATE INDEX IF NOT EXISTS emd_documents_accepted ON emd_documents(accepted_at) WHERE state = 'accepted';
-- find_by_emdr_id: SELECT * FROM emd_documents WHERE emdr_id = %s ORDER BY registered_at LIMIT 1
-- every transition: SELECT … FROM emd_documents WHERE local_uid = %s FOR UPDATE; then the same checks
-- and writes as the SQLite backend, in one transaction (services/lifecycle/postgres.py).
"""

#: pg_advisory_xact_lock key serialising schema creation between replicas starting at once
_SCHEMA_LOCK = 0x454D_444C  # "EMDL"
#: the tables and indexes POSTGRES_SCHEMA creates
_SCHEMA_OBJECTS = re.findall(r"IF NOT EXISTS (\w+)", POSTGRES_SCHEMA)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime | None) -> datetime | None:
    # timestamptz comes back in the session's time zone: give it in UTC, as the SQLite store does
    return None if t is None else t.astimezone(UTC)


class PostgresLifecycleStore:
    """The lifecycle store in PostgreSQL (13+): tables ``emd_documents`` and ``emd_attempts``.

    :param url: a libpq connection URL (``postgresql://user@host:5432/db?sslmode=verify-full``); the
        password, if any, is best given by ``PGPASSWORD`` or a ``.pgpass`` file, never logged here.
    :param connect_timeout: seconds to wait for the server when (re)connecting (default 10).
    """

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._closed = False
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            # only when something is missing: CREATE … IF NOT EXISTS needs CREATE on the schema even when
            # it exists, and a production role may be granted only SELECT, INSERT, UPDATE
            present = db.execute("SELECT bool_and(to_regclass(n) IS NOT NULL) AS ok FROM unnest(%s::text[]) n",
                                 (_SCHEMA_OBJECTS,)).fetchone()
            if not (present and present["ok"]):
                db.execute(POSTGRES_SCHEMA)
        info = self._conn.info if self._conn is not None else None
        log.info("lifecycle store opened", backend="postgresql",
                 host=info.host if info else None, dbname=info.dbname if info else None)

    # --- connection and transactions ------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        """The live connection, reconnecting after a lost one (call with the lock held)."""
        if self._closed:
            raise RuntimeError("the lifecycle store is closed")
        if self._conn is None or self._conn.closed:
            try:
                params = conninfo_to_dict(self._url)  # the URL's own connect_timeout wins
                params.setdefault("connect_timeout", str(max(1, int(self._connect_timeout))))
                self._conn = psycopg.connect(**params, autocommit=True, row_factory=dict_row)
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None
        return self._conn

    @staticmethod
    def _unavailable(exc: psycopg.Error) -> TransientError:
        # the class only: libpq messages name host and port, and the URL may carry a password
        return TransientError(f"lifecycle database unavailable ({type(exc).__name__})",
                              reason="LIFECYCLE_STORE_UNAVAILABLE", defer=5.0)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One committed transaction on the store's connection."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.OperationalError as exc:  # connection lost: the outcome is not committed or unknown
                raise self._unavailable(exc) from None

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A read in autocommit mode (one statement, one snapshot), like the SQLite store's plain reads."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None

    @staticmethod
    def _doc(row: dict[str, Any] | None) -> Document | None:
        if row is None:
            return None
        if row["signed_event"] is not None:
            row["signed_event"] = bytes(row["signed_event"])
        for k in ("created_at", "updated_at", "accepted_at", "registered_at", "failed_at"):
            row[k] = _utc(row[k])
        return Document(**row)

    @staticmethod
    def _attempt(row: dict[str, Any]) -> Attempt:
        row["sent_at"], row["finished_at"] = _utc(row["sent_at"]), _utc(row["finished_at"])
        return Attempt(**row)

    def _get(self, db: psycopg.Connection[dict[str, Any]], local_uid: str, *, lock: bool = False) -> Document | None:
        sql = "SELECT * FROM emd_documents WHERE local_uid = %s" + (" FOR UPDATE" if lock else "")
        return self._doc(db.execute(sql, (local_uid,)).fetchone())

    # --- the LifecycleStore interface -------------------------------------------------------------

    def register(self, local_uid: str, *, organization: str, kind: str, signed_event: bytes | None = None,
                 signed_ref: str | None = None, document_ref: str | None = None) -> Document:
        now = _now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO emd_documents (local_uid, organization, kind, state, signed_event, signed_ref,"
                " document_ref, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (local_uid) DO NOTHING",
                (local_uid, organization, kind, SIGNED, signed_event, signed_ref, document_ref, now, now))
            doc = self._get(db, local_uid)
        assert doc is not None
        return doc

    def get(self, local_uid: str) -> Document | None:
        with self._read() as db:
            return self._get(db, local_uid)

    def record_attempt(self, local_uid: str, message_id: str, *, endpoint: str,
                       sent_at: datetime | None = None) -> Attempt:
        mid = normalize_message_id(message_id)
        sent = sent_at or _now()
        with self._tx() as db:
            # replicas on one document queue here
            check_transition(self._get(db, local_uid, lock=True), local_uid, SENDING)
            n = db.execute("SELECT COALESCE(MAX(attempt), 0) + 1 AS n FROM emd_attempts WHERE local_uid = %s",
                           (local_uid,)).fetchone()["n"]  # type: ignore[index]
            row = db.execute("INSERT INTO emd_attempts (message_id, local_uid, attempt, endpoint, sent_at)"
                             " VALUES (%s,%s,%s,%s,%s) RETURNING sent_at",
                             (mid, local_uid, n, endpoint, sent)).fetchone()
            db.execute("UPDATE emd_documents SET state = %s, updated_at = %s WHERE local_uid = %s",
                       (SENDING, sent, local_uid))
        assert row is not None
        return Attempt(local_uid=local_uid, message_id=mid, attempt=n, endpoint=endpoint, sent_at=_utc(row["sent_at"]))

    def record_outcome(self, message_id: str, *, outcome: str, code: str | None = None,
                       message: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE emd_attempts SET outcome = %s, code = %s, message = %s, finished_at = %s"
                       " WHERE message_id = %s",
                       (outcome, code, message, _now(), normalize_message_id(message_id)))

    def find_by_message_id(self, message_id: str) -> tuple[Document, Attempt] | None:
        # one transaction: the attempt and its document from the same moment
        with self._tx() as db:
            row = db.execute("SELECT * FROM emd_attempts WHERE message_id = %s",
                             (normalize_message_id(message_id),)).fetchone()
            if row is None:
                return None
            attempt = self._attempt(row)
            doc = self._get(db, attempt.local_uid)
        assert doc is not None
        return doc, attempt

    def find_by_emdr_id(self, emdr_id: str) -> Document | None:
        if not emdr_id:
            return None
        with self._read() as db:
            # emdrId is set only by mark_registered, which refuses a second one: at most one row in practice
            return self._doc(db.execute("SELECT * FROM emd_documents WHERE emdr_id = %s"
                                        " ORDER BY registered_at LIMIT 1", (emdr_id.strip(),)).fetchone())

    def mark_accepted(self, local_uid: str, *, message_id: str, accepted_at: datetime | None = None) -> Document:
        at = accepted_at or _now()
        mid = normalize_message_id(message_id)
        with self._tx() as db:
            doc = check_transition(self._get(db, local_uid, lock=True), local_uid, ACCEPTED)
            if doc.state == REGISTERED:  # a late sync answer after the callback: keep the final state
                return doc
            db.execute("UPDATE emd_documents SET state = %s, accepted_message_id = %s, accepted_at = %s,"
                       " updated_at = %s WHERE local_uid = %s", (ACCEPTED, mid, at, at, local_uid))
            db.execute("UPDATE emd_attempts SET outcome = %s, finished_at = COALESCE(finished_at, %s)"
                       " WHERE message_id = %s", (OUTCOME_ACCEPTED, at, mid))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def mark_registered(self, local_uid: str, emdr_id: str, *, registered_at: datetime | None = None) -> Document:
        at = registered_at or _now()
        with self._tx() as db:
            check_transition(self._get(db, local_uid, lock=True), local_uid, REGISTERED, emdr_id=emdr_id)
            db.execute("UPDATE emd_documents SET state = %s, emdr_id = %s,"
                       " registered_at = COALESCE(registered_at, %s), updated_at = %s WHERE local_uid = %s",
                       (REGISTERED, emdr_id, at, at, local_uid))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def mark_failed(self, local_uid: str, *, reason: str, code: str | None = None,
                    message: str | None = None) -> Document:
        at = _now()
        with self._tx() as db:
            check_transition(self._get(db, local_uid, lock=True), local_uid, FAILED)
            db.execute("UPDATE emd_documents SET state = %s, failure_reason = %s, failure_code = %s,"
                       " failure_message = %s, failed_at = %s, updated_at = %s WHERE local_uid = %s",
                       (FAILED, reason, code, message, at, at, local_uid))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def history(self, local_uid: str) -> list[Attempt]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM emd_attempts WHERE local_uid = %s ORDER BY attempt",
                              (local_uid,)).fetchall()
        return [self._attempt(r) for r in rows]

    def overdue(self, accepted_before: datetime) -> list[tuple[str, str | None]]:
        with self._read() as db:
            rows = db.execute("SELECT local_uid, accepted_message_id FROM emd_documents"
                              " WHERE state = %s AND accepted_at < %s ORDER BY accepted_at",
                              (ACCEPTED, accepted_before)).fetchall()
        return [(r["local_uid"], r["accepted_message_id"]) for r in rows]

    def message_ids(self, local_uid: str) -> list[str]:
        return [a.message_id for a in self.history(local_uid)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
