"""The support tables: the support desk's durable state, next to the documents' lifecycle, in the same database.

Three tables, created on open when missing (``PostgresDatabase.ensure_schema``: after the first open a role
with only ``SELECT, INSERT, UPDATE`` is enough), nothing to migrate in the lifecycle's own:

* ``desk_clinics``: each clinic's onboarding state and its last successful test-stand registration::

      onboarding ──test──▶ testing ──promote──▶ production ──suspend──▶ suspended
           └──────────────promote --force──────────┘ ▲                    │
                                                     └──────promote───────┘

  A clinic the table does not know is ``onboarding``: its documents never reach production
  (``services.pipeline.routing``). ``promote`` needs a recorded successful test unless forced.
* ``desk_exchanges``: MessageID → where the signed SOAP request and the answer of that attempt are kept
  (claim-check references: the bytes live in ``services.documents.store``). The sender writes one row per
  attempt; a dead letter lists its MessageIDs, so ``emd dlq show`` finds the request of every attempt.
* ``desk_audit``: every action a person took at the desk (promote, suspend, replay, ``--unmask``, console
  logins and lockouts), with who, when and on what; never patient data. It is **append-only**: a trigger
  refuses every UPDATE and DELETE (and, on PostgreSQL, TRUNCATE), so an entry cannot be rewritten or removed
  through this store's database role; it is read a page at a time (``audit_log(limit, offset)``), so a flood
  of entries cannot push the real ones out of reach.

Why a store of its own rather than columns in the lifecycle's tables: the lifecycle is the workers' hot
path and its schema has its own migrations to keep; these tables are written rarely (one row per attempt,
one per action) and read by people. Same URL as the lifecycle (``EMD_LIFECYCLE_STORE``): empty → SQLite
``<data_dir>/lifecycle.sqlite3``, ``postgresql://…`` → PostgreSQL. Errors: ``ClinicConflict`` for a
transition the states do not allow; an unreachable PostgreSQL is ``TransientError(DESK_STORE_UNAVAILABLE)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producer.ids import normalize_message_id
from services.lifecycle.sqlite import SqliteDatabase
from services.lifecycle.store import database_location
from services.timestamps import stored

ONBOARDING, TESTING, PRODUCTION, SUSPENDED = "onboarding", "testing", "production", "suspended"
CLINIC_STATES = (ONBOARDING, TESTING, PRODUCTION, SUSPENDED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS desk_clinics (
    oid              TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    tested_at        TEXT,
    tested_local_uid TEXT,
    tested_emdr_id   TEXT,
    tested_message_ids TEXT
);
CREATE TABLE IF NOT EXISTS desk_exchanges (
    message_id   TEXT PRIMARY KEY,
    local_uid    TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    request_ref  TEXT,
    response_ref TEXT,
    http_status  INTEGER,
    kept_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS desk_exchanges_by_document ON desk_exchanges(local_uid);
CREATE TABLE IF NOT EXISTS desk_audit (
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  TEXT
);
"""
#: pg_advisory_xact_lock key serialising the desk schema's creation between replicas starting at once
_SCHEMA_LOCK = 7201313
#: the audit log is append-only: these refuse any change to a written entry (SQLite's triggers, one statement
#: each because ensure_schema splits on ";"; PostgreSQL's, created once by the schema's owner)
_SQLITE_APPEND_ONLY = tuple(
    f"CREATE TRIGGER IF NOT EXISTS desk_audit_no_{op.lower()} BEFORE {op} ON desk_audit "
    f"BEGIN SELECT RAISE(ABORT, 'desk_audit is append-only'); END"
    for op in ("UPDATE", "DELETE")
)
_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION desk_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'desk_audit is append-only';
END
$fn$;
CREATE TRIGGER desk_audit_append_only BEFORE UPDATE OR DELETE ON desk_audit
    FOR EACH ROW EXECUTE FUNCTION desk_audit_append_only();
CREATE TRIGGER desk_audit_no_truncate BEFORE TRUNCATE ON desk_audit
    FOR EACH STATEMENT EXECUTE FUNCTION desk_audit_append_only();
"""
#: entries on one page of the audit log (the console's and ``audit_log``'s default)
AUDIT_PAGE = 50


class ClinicConflict(Exception):
    """A clinic transition the onboarding states do not allow (e.g. promote before a successful test)."""


@dataclass(frozen=True)
class Clinic:
    oid: str
    state: str = ONBOARDING
    updated_at: datetime | None = None
    tested_at: datetime | None = None  # the last successful test-stand registration
    tested_local_uid: str | None = None
    tested_emdr_id: str | None = None
    tested_message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exchange:
    message_id: str
    local_uid: str
    endpoint: str
    request_ref: str | None
    response_ref: str | None
    http_status: int | None
    kept_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


def _now() -> str:
    return stored(datetime.now(UTC))


def _dt(text: Any) -> datetime | None:
    return None if text is None else _at(text)


def _at(value: Any) -> datetime:
    """A time column that is never NULL, as an aware datetime (SQLite keeps text, PostgreSQL timestamptz)."""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class SupportTables:
    """Clinics, kept exchanges and the audit log in one SQL database (SQLite file or PostgreSQL URL).

    :param path: the SQLite file (default deployment: the lifecycle's ``lifecycle.sqlite3``).
    :param url: a ``postgresql://`` URL instead (replicas on several hosts).
    """

    def __init__(self, path: Path | str | None = None, *, url: str = "") -> None:
        if url:
            from services.lifecycle.postgres import PostgresDatabase  # psycopg only where it is used

            self.db: Any = PostgresDatabase(url, unavailable_reason="DESK_STORE_UNAVAILABLE")
        else:
            assert path is not None
            self.db = SqliteDatabase(path)
        self.db.ensure_schema(_SCHEMA, lock_key=_SCHEMA_LOCK, then=self._append_only)

    def _append_only(self, db: Any) -> None:
        """The audit log's triggers, when missing (a role with DML only never needs to create them)."""
        if self.db.placeholder == "?":
            for statement in _SQLITE_APPEND_ONLY:
                db.execute(statement)
            return
        present = db.execute(
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname IN "
            "('desk_audit_append_only', 'desk_audit_no_truncate') AND NOT tgisinternal"
        ).fetchone()
        if not present or present["n"] < 2:
            db.execute(_PG_APPEND_ONLY)

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[Any]:
        """One transaction; yields ``run(sql, params) -> rows`` (``?`` placeholders for both backends; each row a
        tuple of its columns). ``durable=False``: see the databases' ``transaction``."""
        with self.db.transaction(durable=durable) as db:

            def run(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                cursor = db.execute(sql.replace("?", self.db.placeholder), params)
                return (
                    [tuple(row[k] for k in row.keys()) for row in cursor.fetchall()]
                    if cursor.description
                    else []
                )

            yield run

    # --- clinics ---------------------------------------------------------------------------------
    _CLINIC = (
        "SELECT oid, state, updated_at, tested_at, tested_local_uid, tested_emdr_id, tested_message_ids "
        "FROM desk_clinics"
    )

    @staticmethod
    def _clinic(row: Sequence[Any]) -> Clinic:
        return Clinic(
            oid=row[0],
            state=row[1],
            updated_at=_dt(row[2]),
            tested_at=_dt(row[3]),
            tested_local_uid=row[4],
            tested_emdr_id=row[5],
            tested_message_ids=tuple(json.loads(row[6] or "[]")),
        )

    def clinic(self, oid: str) -> Clinic:
        """The clinic as stored; an unknown clinic is ``onboarding``."""
        with self._tx() as run:
            rows = run(f"{self._CLINIC} WHERE oid = ?", (oid,))
        return self._clinic(rows[0]) if rows else Clinic(oid=oid)

    def clinics(self) -> list[Clinic]:
        with self._tx() as run:
            return [self._clinic(r) for r in run(f"{self._CLINIC} ORDER BY oid")]

    def _save(self, run: Any, clinic: Clinic, state: str, **tested: Any) -> Clinic:
        now = _now()
        ids = json.dumps(list(tested.get("tested_message_ids", clinic.tested_message_ids)))
        values = (
            state,
            now,
            tested.get("tested_at", clinic.tested_at and clinic.tested_at.isoformat()),
            tested.get("tested_local_uid", clinic.tested_local_uid),
            tested.get("tested_emdr_id", clinic.tested_emdr_id),
            ids,
        )
        if run("SELECT oid FROM desk_clinics WHERE oid = ?", (clinic.oid,)):
            run(
                "UPDATE desk_clinics SET state = ?, updated_at = ?, tested_at = ?, tested_local_uid = ?, "
                "tested_emdr_id = ?, tested_message_ids = ? WHERE oid = ?",
                (*values, clinic.oid),
            )
        else:
            run(
                "INSERT INTO desk_clinics (state, updated_at, tested_at, tested_local_uid, tested_emdr_id, "
                "tested_message_ids, oid) VALUES (?,?,?,?,?,?,?)",
                (*values, clinic.oid),
            )
        rows = run(f"{self._CLINIC} WHERE oid = ?", (clinic.oid,))
        return self._clinic(rows[0])

    def _locked(self, run: Any, oid: str) -> Clinic:
        rows = run(f"{self._CLINIC} WHERE oid = ? {self.db.for_update}", (oid,))
        return self._clinic(rows[0]) if rows else Clinic(oid=oid)

    def start_test(self, oid: str, *, actor: str) -> Clinic:
        """onboarding → testing (a test of a clinic in testing keeps it there); refused in production/suspended:
        a clinic that sends for real has its test behind it, and its documents would go to production."""
        with self._tx() as run:
            clinic = self._locked(run, oid)
            if clinic.state in (PRODUCTION, SUSPENDED):
                raise ClinicConflict(
                    f"{oid} is {clinic.state}: a test-stand test is for clinics not yet promoted"
                )
            out = self._save(run, clinic, TESTING)
            self._audit(run, actor, "clinic.test.start", oid, {"from": clinic.state})
            return out

    def record_test(
        self,
        oid: str,
        *,
        ok: bool,
        local_uid: str,
        message_ids: Sequence[str],
        actor: str,
        emdr_id: str | None = None,
        detail: str | None = None,
    ) -> Clinic:
        """The result of one test-stand round trip; a success is what ``promote`` looks for."""
        with self._tx() as run:
            clinic = self._locked(run, oid)
            tested = (
                {
                    "tested_at": _now(),
                    "tested_local_uid": local_uid,
                    "tested_emdr_id": emdr_id,
                    "tested_message_ids": list(message_ids),
                }
                if ok
                else {}
            )
            out = self._save(run, clinic, clinic.state, **tested)
            self._audit(
                run,
                actor,
                "clinic.test.passed" if ok else "clinic.test.failed",
                oid,
                {"localUid": local_uid, "messageIds": list(message_ids), "emdrId": emdr_id, "detail": detail},
            )
            return out

    def promote(self, oid: str, *, actor: str, force: bool = False) -> Clinic:
        """→ production, only after a recorded successful test-stand registration unless ``force``."""
        with self._tx() as run:
            clinic = self._locked(run, oid)
            if clinic.state == PRODUCTION:
                return clinic
            if clinic.tested_at is None and not force:
                raise ClinicConflict(
                    f"{oid} has no successful test-stand registration recorded: run "
                    f"`emd clinic test {oid}` first (or promote --force, which is logged)"
                )
            out = self._save(run, clinic, PRODUCTION)
            self._audit(
                run,
                actor,
                "clinic.promote.forced" if clinic.tested_at is None else "clinic.promote",
                oid,
                {"from": clinic.state, "testedLocalUid": clinic.tested_local_uid},
            )
            return out

    def suspend(self, oid: str, *, actor: str, reason: str = "") -> Clinic:
        """→ suspended: its documents are held (or go to the test stand) until it is promoted again."""
        with self._tx() as run:
            clinic = self._locked(run, oid)
            out = self._save(run, clinic, SUSPENDED)
            self._audit(run, actor, "clinic.suspend", oid, {"from": clinic.state, "reason": reason})
            return out

    # --- exchanges -------------------------------------------------------------------------------
    def keep_exchange(
        self,
        message_id: str,
        *,
        local_uid: str,
        endpoint: str,
        request_ref: str | None,
        response_ref: str | None,
        http_status: int | None,
    ) -> None:
        """Where the request and answer of one attempt are kept (idempotent: a redelivery keeps the first).

        Support data, like the files it points to: committed without waiting for the disk (a power cut may
        lose the last few; the document goes on without them), which spares the sender an fsync per attempt.
        """
        mid = normalize_message_id(message_id)
        with self._tx(durable=False) as run:
            if not run("SELECT message_id FROM desk_exchanges WHERE message_id = ?", (mid,)):
                run(
                    "INSERT INTO desk_exchanges (message_id, local_uid, endpoint, request_ref, response_ref, "
                    "http_status, kept_at) VALUES (?,?,?,?,?,?,?)",
                    (mid, local_uid, endpoint, request_ref, response_ref, http_status, _now()),
                )

    def exchanges(self, message_ids: Sequence[str]) -> dict[str, Exchange]:
        """The kept exchanges of these MessageIDs (any spelling), by normalised MessageID."""
        ids = [normalize_message_id(m) for m in message_ids if m]
        if not ids:
            return {}
        with self._tx() as run:
            rows = run(
                "SELECT message_id, local_uid, endpoint, request_ref, response_ref, http_status, kept_at "
                f"FROM desk_exchanges WHERE message_id IN ({','.join('?' * len(ids))})",
                tuple(ids),
            )
        return {r[0]: Exchange(r[0], r[1], r[2], r[3], r[4], r[5], _at(r[6])) for r in rows}

    # --- audit -----------------------------------------------------------------------------------
    @staticmethod
    def _audit(run: Any, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> None:
        run(
            "INSERT INTO desk_audit (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
            (_now(), actor, action, target, json.dumps(detail, ensure_ascii=False)),
        )

    def audit(self, action: str, *, actor: str, target: str | None = None, **detail: Any) -> None:
        """Record one action a person took (``dlq.replay``, ``dlq.unmask``, ``console.login``…)."""
        with self._tx() as run:
            self._audit(run, actor, action, target, detail)

    def audit_log(self, *, limit: int = AUDIT_PAGE, offset: int = 0) -> list[AuditEntry]:
        """One page of the actions, newest first: ``limit`` entries after skipping the ``offset`` newest."""
        with self._tx() as run:
            rows = run(
                "SELECT at, actor, action, target, detail FROM desk_audit "
                "ORDER BY at DESC, action, actor, target LIMIT ? OFFSET ?",
                (max(1, int(limit)), max(0, int(offset))),
            )
        return [AuditEntry(_at(r[0]), r[1], r[2], r[3], json.loads(r[4] or "{}")) for r in rows]

    def audit_count(self) -> int:
        """How many entries the audit log holds (for its pages)."""
        with self._tx() as run:
            return int(run("SELECT count(*) FROM desk_audit")[0][0])

    @property
    def tables(self) -> list[str]:
        """The desk's tables (what ``emd lifecycle migrate --grant`` grants on)."""
        return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA)

    def close(self) -> None:
        self.db.close()


def open_support_tables(data_dir: Path | str, *, url: str = "") -> SupportTables:
    """The support tables of a deployment, in the lifecycle store's database (``EMD_LIFECYCLE_STORE``)."""
    kind, where = database_location(data_dir, url)
    return SupportTables(where) if kind == "sqlite" else SupportTables(url=where)
