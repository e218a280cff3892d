"""The lifecycle store's DDL, every dialect and every upgrade, in one place: what a migration Job runs.

A document is ``(organization, local_uid)``: two organisations may use the same localUid (each МИС numbers its
own documents), and one organisation's document can never be read or changed through another's
(docs/security.md, "Tenants in the state"). Both tables are keyed by the pair; an attempt's MessageID is ours, a
fresh UUID, and stays its key.

:func:`ensure` brings an existing database to the current schema in the opening transaction (the backends call
it through ``ensure_schema``, which then creates what is missing: ``SQLITE_SCHEMA`` / ``POSTGRES_SCHEMA``): it
applies each upgrade an older database needs, in order, each idempotent (it looks before it changes anything):

1. ``decided_by``: who decided an attempt's outcome, filled in from the old rows;
2. ``tenant-key``: a database keyed by ``local_uid`` alone is rebuilt keyed by ``(organization, local_uid)``;
   each attempt takes its document's organisation. The rows are copied aside, the tables dropped and created
   anew, the rows copied back, in the one transaction: a crash leaves the old database as it was.

A role granted only ``SELECT, INSERT, UPDATE`` opens a current database (nothing is created or changed then);
an older one needs the owner (the migration Job) once.
"""

from __future__ import annotations

from typing import Any

from services.lifecycle.model import DECIDED_BY_ANSWER, DECIDED_BY_CALLBACK

__all__ = ["SQLITE_SCHEMA", "POSTGRES_SCHEMA", "DOCUMENT_COLUMNS", "ATTEMPT_COLUMNS", "ensure"]

#: pg_advisory_xact_lock key serialising the lifecycle schema's creation between replicas starting at once
SCHEMA_LOCK = 0x454D_444C  # "EMDL"

#: the embedded backend (``services.lifecycle.sqlite``): timestamps as ISO text in UTC
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    organization        TEXT NOT NULL,
    local_uid           TEXT NOT NULL,
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
    failed_at           TEXT,
    PRIMARY KEY (organization, local_uid)
);
CREATE TABLE IF NOT EXISTS attempts (
    message_id   TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    local_uid    TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    endpoint     TEXT NOT NULL,
    sent_at      TEXT NOT NULL,
    outcome      TEXT,
    code         TEXT,
    message      TEXT,
    finished_at  TEXT,
    decided_by   TEXT,
    UNIQUE (organization, local_uid, attempt),
    FOREIGN KEY (organization, local_uid) REFERENCES documents(organization, local_uid)
);
CREATE INDEX IF NOT EXISTS attempts_by_document ON attempts(organization, local_uid, attempt);
CREATE INDEX IF NOT EXISTS documents_by_emdr_id ON documents(emdr_id);
"""

#: the production backend (``services.lifecycle.postgres``, PostgreSQL 13+): the same columns, native types
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS emd_documents (
    organization        text NOT NULL,
    local_uid           text NOT NULL,
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
    failed_at           timestamptz,
    PRIMARY KEY (organization, local_uid)
);
CREATE TABLE IF NOT EXISTS emd_attempts (
    message_id   text PRIMARY KEY,                 -- normalised (normalize_message_id)
    organization text NOT NULL,
    local_uid    text NOT NULL,
    attempt      integer NOT NULL,
    endpoint     text NOT NULL,
    sent_at      timestamptz NOT NULL,
    outcome      text,
    code         text,
    message      text,
    finished_at  timestamptz,
    decided_by   text,                             -- DECIDED_BY_ANSWER or DECIDED_BY_CALLBACK
    UNIQUE (organization, local_uid, attempt),
    FOREIGN KEY (organization, local_uid) REFERENCES emd_documents(organization, local_uid)
);
CREATE INDEX IF NOT EXISTS emd_documents_by_emdr_id ON emd_documents(emdr_id);
CREATE INDEX IF NOT EXISTS emd_attempts_by_document ON emd_attempts(organization, local_uid, attempt);
CREATE INDEX IF NOT EXISTS emd_documents_accepted ON emd_documents(accepted_at) WHERE state = 'accepted';
-- find_by_emdr_id: SELECT * FROM emd_documents WHERE emdr_id = %s ORDER BY registered_at LIMIT 1
-- every transition: SELECT … FROM emd_documents WHERE organization = %s AND local_uid = %s FOR UPDATE; then
-- the same checks and writes as the SQLite backend, in one transaction (services/lifecycle/store.py).
"""

#: the columns of each table (a row is copied column by column in the tenant-key upgrade)
DOCUMENT_COLUMNS = (
    "organization",
    "local_uid",
    "kind",
    "state",
    "signed_event",
    "signed_ref",
    "document_ref",
    "emdr_id",
    "accepted_message_id",
    "failure_reason",
    "failure_code",
    "failure_message",
    "created_at",
    "updated_at",
    "accepted_at",
    "registered_at",
    "failed_at",
)
ATTEMPT_COLUMNS = (
    "message_id",
    "organization",
    "local_uid",
    "attempt",
    "endpoint",
    "sent_at",
    "outcome",
    "code",
    "message",
    "finished_at",
    "decided_by",
)


def _statements(schema: str) -> list[str]:
    """The DDL's statements, its ``--`` comments left out (they may hold a ``;``)."""
    code = "\n".join(line.split("--", 1)[0] for line in schema.splitlines())
    return [s for s in (part.strip() for part in code.split(";")) if s]


def _add_decided_by(db: Any, conn: Any, documents: str, attempts: str) -> None:
    """Upgrade 1: ``decided_by``; before the column, a callback's decision had the message "callback <id>"."""
    if db.has_column(conn, attempts, "decided_by"):
        return
    conn.execute(f"ALTER TABLE {attempts} ADD COLUMN decided_by text")
    conn.execute(
        f"UPDATE {attempts} SET decided_by = CASE WHEN message LIKE {db.placeholder} THEN {db.placeholder} "
        f"ELSE {db.placeholder} END WHERE outcome IS NOT NULL",
        ("callback %", DECIDED_BY_CALLBACK, DECIDED_BY_ANSWER),
    )


def _key_by_tenant(db: Any, conn: Any, documents: str, attempts: str, schema: str) -> None:
    """Upgrade 2: tables keyed by ``local_uid`` alone are rebuilt keyed by ``(organization, local_uid)``."""
    if db.has_column(conn, attempts, "organization"):
        return
    conn.execute(f"CREATE TABLE {documents}_v1 AS SELECT * FROM {documents}")
    conn.execute(f"CREATE TABLE {attempts}_v1 AS SELECT * FROM {attempts}")
    conn.execute(f"DROP TABLE {attempts}")
    conn.execute(f"DROP TABLE {documents}")
    for statement in _statements(schema):
        conn.execute(statement)
    columns = ", ".join(DOCUMENT_COLUMNS)
    conn.execute(f"INSERT INTO {documents} ({columns}) SELECT {columns} FROM {documents}_v1")
    columns = ", ".join(ATTEMPT_COLUMNS)
    taken = ", ".join("d.organization" if c == "organization" else f"a.{c}" for c in ATTEMPT_COLUMNS)
    conn.execute(
        f"INSERT INTO {attempts} ({columns}) SELECT {taken} FROM {attempts}_v1 a"
        f" JOIN {documents}_v1 d ON d.local_uid = a.local_uid"
    )
    conn.execute(f"DROP TABLE {attempts}_v1")
    conn.execute(f"DROP TABLE {documents}_v1")


def ensure(db: Any, conn: Any, *, documents: str, attempts: str, schema: str) -> None:
    """Apply, in the opening transaction ``conn`` of ``db`` (a ``SqliteDatabase`` or ``PostgresDatabase``), each
    upgrade the existing tables ``documents``/``attempts`` still need, before anything missing is created (an
    index of the current schema may name a column an old table lacks); ``schema``: the dialect's DDL. A new
    database has no tables yet: nothing to upgrade."""
    if not db.has_column(conn, attempts, "message_id"):
        return
    _add_decided_by(db, conn, documents, attempts)
    _key_by_tenant(db, conn, documents, attempts, schema)
