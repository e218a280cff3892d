"""The embedded lifecycle backend: one SQLite file in WAL mode, for one host (``services.lifecycle``)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

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

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    local_uid           TEXT PRIMARY KEY,
    organization        TEXT NOT NULL,
    kind                TEXT NOT NULL,
    state               TEXT NOT NULL,
    signed_event        BLOB,
    signed_ref          TEXT,
    document_ref        TEXT,
    emdr_id             TEXT,
    accepted_message_id TEXT,
    failure_reason      TEXT,
    failure_code        TEXT,
    failure_message     TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    accepted_at         TEXT,
    registered_at       TEXT,
    failed_at           TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    message_id   TEXT PRIMARY KEY,
    local_uid    TEXT NOT NULL REFERENCES documents(local_uid),
    attempt      INTEGER NOT NULL,
    endpoint     TEXT NOT NULL,
    sent_at      TEXT NOT NULL,
    outcome      TEXT,
    code         TEXT,
    message      TEXT,
    finished_at  TEXT,
    UNIQUE (local_uid, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_by_document ON attempts(local_uid, attempt);
CREATE INDEX IF NOT EXISTS documents_by_emdr_id ON documents(emdr_id);
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class SqliteLifecycleStore:
    """The embedded backend: one SQLite file in WAL mode, safe for several processes on one host.

    :param path: the database file (created with its directory).
    :param busy_timeout: seconds a writer waits for another process's transaction (default 30).
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a read-then-write never
        # upgrades a shared lock (the cause of SQLITE_BUSY deadlocks between processes).
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection, used from the event loop and worker threads
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # an attempt recorded must survive a power cut
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SQLITE_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get(self, db: sqlite3.Connection, local_uid: str) -> Document | None:
        row = db.execute("SELECT * FROM documents WHERE local_uid = ?", (local_uid,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        for k in ("created_at", "updated_at", "accepted_at", "registered_at", "failed_at"):
            d[k] = _dt(d[k])
        return Document(**d)

    @staticmethod
    def _attempt(row: sqlite3.Row) -> Attempt:
        d = dict(row)
        d["sent_at"] = _dt(d["sent_at"])
        d["finished_at"] = _dt(d["finished_at"])
        return Attempt(**d)

    def register(self, local_uid: str, *, organization: str, kind: str, signed_event: bytes | None = None,
                 signed_ref: str | None = None, document_ref: str | None = None) -> Document:
        now = _iso(_now())
        with self._tx() as db:
            db.execute(
                "INSERT INTO documents (local_uid, organization, kind, state, signed_event, signed_ref,"
                " document_ref, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(local_uid) DO NOTHING",
                (local_uid, organization, kind, SIGNED, signed_event, signed_ref, document_ref, now, now))
            doc = self._get(db, local_uid)
        assert doc is not None
        return doc

    def get(self, local_uid: str) -> Document | None:
        with self._lock:
            return self._get(self._db, local_uid)

    def record_attempt(self, local_uid: str, message_id: str, *, endpoint: str,
                       sent_at: datetime | None = None) -> Attempt:
        mid = normalize_message_id(message_id)
        sent = _iso(sent_at or _now())
        with self._tx() as db:
            check_transition(self._get(db, local_uid), local_uid, SENDING)
            n = db.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM attempts WHERE local_uid = ?",
                           (local_uid,)).fetchone()[0]
            db.execute("INSERT INTO attempts (message_id, local_uid, attempt, endpoint, sent_at)"
                       " VALUES (?,?,?,?,?)", (mid, local_uid, n, endpoint, sent))
            db.execute("UPDATE documents SET state = ?, updated_at = ? WHERE local_uid = ?",
                       (SENDING, sent, local_uid))
        return Attempt(local_uid=local_uid, message_id=mid, attempt=n, endpoint=endpoint, sent_at=_dt(sent))

    def record_outcome(self, message_id: str, *, outcome: str, code: str | None = None,
                       message: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE attempts SET outcome = ?, code = ?, message = ?, finished_at = ?"
                       " WHERE message_id = ?",
                       (outcome, code, message, _iso(_now()), normalize_message_id(message_id)))

    def find_by_message_id(self, message_id: str) -> tuple[Document, Attempt] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM attempts WHERE message_id = ?",
                                   (normalize_message_id(message_id),)).fetchone()
            if row is None:
                return None
            attempt = self._attempt(row)
            doc = self._get(self._db, attempt.local_uid)
        assert doc is not None
        return doc, attempt

    def find_by_emdr_id(self, emdr_id: str) -> Document | None:
        if not emdr_id:
            return None
        with self._lock:
            # emdrId is set only by mark_registered, which refuses a second one: at most one row in practice
            row = self._db.execute("SELECT local_uid FROM documents WHERE emdr_id = ? ORDER BY registered_at LIMIT 1",
                                   (emdr_id.strip(),)).fetchone()
            return self._get(self._db, row[0]) if row is not None else None

    def mark_accepted(self, local_uid: str, *, message_id: str, accepted_at: datetime | None = None) -> Document:
        at = _iso(accepted_at or _now())
        with self._tx() as db:
            doc = check_transition(self._get(db, local_uid), local_uid, ACCEPTED)
            if doc.state == REGISTERED:  # a late sync answer after the callback: keep the final state
                return doc
            db.execute("UPDATE documents SET state = ?, accepted_message_id = ?, accepted_at = ?, updated_at = ?"
                       " WHERE local_uid = ?", (ACCEPTED, normalize_message_id(message_id), at, at, local_uid))
            db.execute("UPDATE attempts SET outcome = ?, finished_at = COALESCE(finished_at, ?)"
                       " WHERE message_id = ?", (OUTCOME_ACCEPTED, at, normalize_message_id(message_id)))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def mark_registered(self, local_uid: str, emdr_id: str, *, registered_at: datetime | None = None) -> Document:
        at = _iso(registered_at or _now())
        with self._tx() as db:
            check_transition(self._get(db, local_uid), local_uid, REGISTERED, emdr_id=emdr_id)
            db.execute("UPDATE documents SET state = ?, emdr_id = ?, registered_at = COALESCE(registered_at, ?),"
                       " updated_at = ? WHERE local_uid = ?", (REGISTERED, emdr_id, at, at, local_uid))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def mark_failed(self, local_uid: str, *, reason: str, code: str | None = None,
                    message: str | None = None) -> Document:
        at = _iso(_now())
        with self._tx() as db:
            check_transition(self._get(db, local_uid), local_uid, FAILED)
            db.execute("UPDATE documents SET state = ?, failure_reason = ?, failure_code = ?, failure_message = ?,"
                       " failed_at = ?, updated_at = ? WHERE local_uid = ?",
                       (FAILED, reason, code, message, at, at, local_uid))
            return self._get(db, local_uid)  # type: ignore[return-value]

    def history(self, local_uid: str) -> list[Attempt]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM attempts WHERE local_uid = ? ORDER BY attempt",
                                    (local_uid,)).fetchall()
        return [self._attempt(r) for r in rows]

    def overdue(self, accepted_before: datetime) -> list[tuple[str, str | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT local_uid, accepted_message_id FROM documents WHERE state = ? AND accepted_at < ?",
                (ACCEPTED, _iso(accepted_before))).fetchall()
        return [(r[0], r[1]) for r in rows]

    def message_ids(self, local_uid: str) -> list[str]:
        return [a.message_id for a in self.history(local_uid)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
