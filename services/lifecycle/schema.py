"""The lifecycle store's DDL, every dialect and every upgrade, in one place: what a migration Job runs.

A document is ``(organization, local_uid)``: two organisations may use the same localUid (each МИС numbers its
own documents), and one organisation's document can never be read or changed through another's
(docs/security.md, "Tenants in the state"). Every table about a document is keyed by, or refers to, the pair; an
attempt's MessageID is ours, a fresh UUID, and stays its key; so does a registry question's (``getRegistryItem``). The leases table
(one holder of a scanner at a time) belongs to no document.

:func:`ensure` brings an existing database to the current schema in the opening transaction (the backends call
it through ``ensure_schema``, which then creates what is missing: ``SQLITE_SCHEMA`` / ``POSTGRES_SCHEMA``): it
applies each upgrade an older database needs, in order, each idempotent (it looks before it changes anything):

1. ``decided_by``: who decided an attempt's outcome, filled in from the old rows;
2. ``store_till_date``: РЭМД's storeTillDate of a registered document (unknown for older ones);
3. ``tenant-key``: a database keyed by ``local_uid`` alone is rebuilt keyed by ``(organization, local_uid)``;
   each attempt and registry question takes its document's organisation. The rows are copied aside, the
   tables dropped and created anew, the rows copied back, in the one transaction: a crash leaves the old
   database as it was.

A role granted only ``SELECT, INSERT, UPDATE, DELETE`` opens a current database (nothing is created or changed
then); an older one needs the owner once: ``emd lifecycle migrate``, the migration Job (``services.lifecycle.migrate``).
"""

from __future__ import annotations

from typing import Any

from services.lifecycle.model import DECIDED_BY_ANSWER, DECIDED_BY_CALLBACK

__all__ = [
    "SQLITE_SCHEMA",
    "POSTGRES_SCHEMA",
    "DOCUMENT_COLUMNS",
    "ATTEMPT_COLUMNS",
    "REGISTRY_REQUEST_COLUMNS",
    "SCHEMA_LOCK",
    "ensure",
]

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
    store_till_date     TEXT,
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
CREATE TABLE IF NOT EXISTS registry_requests (
    message_id         TEXT PRIMARY KEY,
    organization       TEXT NOT NULL,
    local_uid          TEXT NOT NULL,
    emdr_id            TEXT NOT NULL,
    purpose            TEXT NOT NULL,
    attempt_message_id TEXT,
    asked_at           TEXT NOT NULL,
    outcome            TEXT,
    decided_by         TEXT,
    code               TEXT,
    answered_at        TEXT,
    FOREIGN KEY (organization, local_uid) REFERENCES documents(organization, local_uid)
);
CREATE INDEX IF NOT EXISTS registry_requests_by_document ON registry_requests(organization, local_uid);
CREATE INDEX IF NOT EXISTS attempts_by_document ON attempts(organization, local_uid, attempt);
CREATE INDEX IF NOT EXISTS documents_by_emdr_id ON documents(emdr_id);
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
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
    store_till_date     text,                  -- РЭМД's xs:date with its offset, as written: 2048-09-22+03:00
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
CREATE TABLE IF NOT EXISTS emd_registry_requests (
    message_id         text PRIMARY KEY,         -- normalised; a getRegistryItem's MessageID
    organization       text NOT NULL,
    local_uid          text NOT NULL,
    emdr_id            text NOT NULL,
    purpose            text NOT NULL,            -- deadline | poll | duplicate
    attempt_message_id text,                     -- duplicate: the attempt whose NOT_UNIQUE_PROVIDED_ID it reconciles
    asked_at           timestamptz NOT NULL,
    outcome            text,                     -- set once, by the first answer
    decided_by         text,                     -- "callback <the answer's MessageID>"
    code               text,
    answered_at        timestamptz,
    FOREIGN KEY (organization, local_uid) REFERENCES emd_documents(organization, local_uid)
);
CREATE INDEX IF NOT EXISTS emd_registry_requests_by_document ON emd_registry_requests(organization, local_uid);
CREATE INDEX IF NOT EXISTS emd_documents_by_emdr_id ON emd_documents(emdr_id);
CREATE INDEX IF NOT EXISTS emd_attempts_by_document ON emd_attempts(organization, local_uid, attempt);
CREATE INDEX IF NOT EXISTS emd_documents_accepted ON emd_documents(accepted_at) WHERE state = 'accepted';
CREATE INDEX IF NOT EXISTS emd_documents_decided ON emd_documents(updated_at) WHERE state IN ('registered','failed');
-- one holder at a time of what runs on a single replica (the status worker's scanners: services/pipeline/lease.py)
CREATE TABLE IF NOT EXISTS emd_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
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
    "store_till_date",
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
REGISTRY_REQUEST_COLUMNS = (
    "message_id",
    "organization",
    "local_uid",
    "emdr_id",
    "purpose",
    "attempt_message_id",
    "asked_at",
    "outcome",
    "decided_by",
    "code",
    "answered_at",
)


#: a dialect's lifecycle tables: documents, attempts, registry questions
Tables = tuple[str, str, str]


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


def _add_store_till_date(db: Any, conn: Any, documents: str) -> None:
    """Upgrade 2: РЭМД's storeTillDate of a registered document; unknown for older registrations."""
    if not db.has_column(conn, documents, "store_till_date"):
        conn.execute(f"ALTER TABLE {documents} ADD COLUMN store_till_date text")


def _key_by_tenant(db: Any, conn: Any, tables: Tables, schema: str) -> None:
    """Upgrade 3: tables keyed by ``local_uid`` alone are rebuilt keyed by ``(organization, local_uid)``; each
    attempt and registry question takes its document's organisation."""
    documents, attempts, questions = tables
    if db.has_column(conn, attempts, "organization"):
        return
    had_questions = db.has_column(conn, questions, "message_id")
    old = [documents, attempts, *([questions] if had_questions else [])]
    for table in old:
        conn.execute(f"CREATE TABLE {table}_v1 AS SELECT * FROM {table}")
    for table in reversed(old):  # who references a document first
        conn.execute(f"DROP TABLE {table}")
    for statement in _statements(schema):
        conn.execute(statement)
    columns = ", ".join(DOCUMENT_COLUMNS)
    conn.execute(f"INSERT INTO {documents} ({columns}) SELECT {columns} FROM {documents}_v1")
    for table, table_columns in ((attempts, ATTEMPT_COLUMNS), (questions, REGISTRY_REQUEST_COLUMNS)):
        if table not in old:
            continue
        columns = ", ".join(table_columns)
        taken = ", ".join("d.organization" if c == "organization" else f"a.{c}" for c in table_columns)
        conn.execute(
            f"INSERT INTO {table} ({columns}) SELECT {taken} FROM {table}_v1 a"
            f" JOIN {documents}_v1 d ON d.local_uid = a.local_uid"
        )
    for table in reversed(old):
        conn.execute(f"DROP TABLE {table}_v1")


def ensure(db: Any, conn: Any, *, tables: Tables, schema: str) -> None:
    """Apply, in the opening transaction ``conn`` of ``db`` (a ``SqliteDatabase`` or ``PostgresDatabase``), each
    upgrade the existing ``tables`` (documents, attempts, registry questions) still need, before anything missing
    is created (an index of the current schema may name a column an old table lacks); ``schema``: the dialect's
    DDL. A new database has no tables yet: nothing to upgrade."""
    documents, attempts, _ = tables
    if not db.has_column(conn, attempts, "message_id"):
        return
    _add_decided_by(db, conn, documents, attempts)
    _add_store_till_date(db, conn, documents)
    _key_by_tenant(db, conn, tables, schema)
