"""The production lifecycle backend: PostgreSQL, shared by replicas of the workers on several hosts.

The statements and rules are ``services.lifecycle.store``'s, shared with ``SqliteLifecycleStore``. This
module holds ``PostgresDatabase`` (the connection and its error mapping, native timestamps, the schema
created under a lock; shared with the support tables, ``services.lifecycle.support_tables``), the store over
``POSTGRES_SCHEMA`` (``services.lifecycle.schema``, where every dialect's DDL lives), and what replaces SQLite's
database-wide write lock:

* every transition reads the document with ``SELECT … FOR UPDATE``, so two replicas handling the same
  document (a redelivery after a rebalance) queue on that row and the second one decides on what the
  first committed: an attempt is never numbered twice, never recorded after acceptance, and a late
  ``mark_failed`` never overwrites ``registered``;
* ``register`` is ``INSERT … ON CONFLICT DO NOTHING``; the schema is created on open under a transaction
  advisory lock, so replicas starting together do not race on ``CREATE TABLE IF NOT EXISTS``.

Two roles in production (docs/operations.md, step 4): the tables' owner, which ``emd lifecycle migrate`` (the
migration Job) uses to create and upgrade them and to ``grant`` the application role SELECT, INSERT, UPDATE and
DELETE; and that application role, which the pods use. Opening a store checks, without DDL, that nothing is
missing: as the application role a missing table or column is ``TransientError(reason=
"LIFECYCLE_SCHEMA_MISSING")`` (``open_store`` waits for the migration, then says to run it), never a half-made
schema.

One connection per store (autocommit, explicit transactions), guarded by a lock because the workers call
the store from ``asyncio.to_thread``. A lost connection (server restart, network) raises
``TransientError(reason="LIFECYCLE_STORE_UNAVAILABLE")`` — the runtime retries the record — and the
next call reconnects. Timestamps come back in UTC, as the SQLite store's do.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from producer.errors import TransientError
from services.lifecycle.schema import POSTGRES_SCHEMA, SCHEMA_LOCK
from services.lifecycle.store import SqlLifecycleStore
from services.logs import get_logger

log = get_logger(__name__)

#: the lifecycle's tables here (the DDL of every dialect is ``services.lifecycle.schema``'s)
__all__ = ["POSTGRES_SCHEMA", "PostgresDatabase", "PostgresLifecycleStore"]

#: a column of an existing table, in the schema the search path finds it in
_COLUMN_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
    " AND attname = %s AND NOT attisdropped) AS present"
)


class PostgresDatabase:
    """One connection to a PostgreSQL database (13+), reconnecting after a lost one.

    :param url: a libpq connection URL (``postgresql://user@host:5432/db?sslmode=verify-full``); the
        password, if any, is best given by ``PGPASSWORD`` or a ``.pgpass`` file, never logged here.
    :param connect_timeout: seconds to wait for the server when (re)connecting (default 10).
    :param unavailable_reason: the reason of the ``TransientError`` a lost or refused connection raises.
    """

    placeholder = "%s"
    #: the document's row lock in every transition: replicas on one document queue on it
    for_update = "FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        unavailable_reason: str = "LIFECYCLE_STORE_UNAVAILABLE",
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._reason = unavailable_reason
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._closed = False

    def ensure_schema(
        self,
        schema: str,
        *,
        lock_key: int,
        first: Callable[[Any], None] | None = None,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        """Run ``first(db)`` (an upgrade of existing tables), create ``schema`` (``CREATE … IF NOT EXISTS``
        statements) if any of its objects is missing, then run ``then(db)``, in one transaction holding the
        advisory lock ``lock_key``, so replicas starting together do not race."""
        objects = re.findall(r"IF NOT EXISTS (\w+)", schema)
        try:
            with self.transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
                if first is not None:
                    first(db)
                # only when something is missing: CREATE … IF NOT EXISTS needs CREATE on the schema even when
                # it exists, and the application role is granted only SELECT, INSERT, UPDATE, DELETE
                present = db.execute(
                    "SELECT bool_and(to_regclass(n) IS NOT NULL) AS ok FROM unnest(%s::text[]) n", (objects,)
                ).fetchone()
                if not (present and present["ok"]):
                    db.execute(schema)
                if then is not None:
                    then(db)
        except psycopg.errors.InsufficientPrivilege:
            # the application role met a table or column this version needs and may not create it
            raise TransientError(
                "the database lacks tables or columns this version needs, and this role may not create them: "
                "run `emd lifecycle migrate` as the tables' owner (the migration Job)",
                reason="LIFECYCLE_SCHEMA_MISSING",
                defer=5.0,
            ) from None

    def grant(self, role: str, tables: list[str]) -> None:
        """Give ``role`` what the application needs on ``tables`` and nothing more: USAGE on their schema and
        SELECT, INSERT, UPDATE, DELETE (no CREATE, ALTER, DROP, TRUNCATE: those stay with the owner)."""
        with self.transaction() as db:
            who = sql.Identifier(role)
            db.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(self._schema(db)), who)
            )
            for table in tables:
                db.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                        sql.Identifier(table), who
                    )
                )

    @staticmethod
    def _schema(db: psycopg.Connection[dict[str, Any]]) -> str:
        row = db.execute("SELECT current_schema() AS s").fetchone()
        assert row is not None and row["s"], "no schema on the search path"
        return str(row["s"])

    def where(self) -> dict[str, str | None]:
        """Host and database of the live connection (for a log line; never the URL, which may hold a password)."""
        info = self._conn.info if self._conn is not None else None
        return {"host": info.host if info else None, "dbname": info.dbname if info else None}

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        """The live connection, reconnecting after a lost one (call with the lock held)."""
        if self._closed:
            raise RuntimeError("the database is closed")
        if self._conn is None or self._conn.closed:
            try:
                params: dict[str, Any] = conninfo_to_dict(self._url)  # the URL's own connect_timeout wins
                params.setdefault("connect_timeout", str(max(1, int(self._connect_timeout))))
                self._conn = psycopg.connect(**params, autocommit=True, row_factory=dict_row)
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None
        return self._conn

    def _unavailable(self, exc: psycopg.Error) -> TransientError:
        # the class only: libpq messages name host and port, and the URL may carry a password
        return TransientError(f"database unavailable ({type(exc).__name__})", reason=self._reason, defer=5.0)

    @contextmanager
    def transaction(
        self, *, write: bool = True, durable: bool = True
    ) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One committed transaction (reads in it see one snapshot); ``durable=False``: its commit does not wait
        for the WAL flush (``synchronous_commit = off`` for this transaction only), as SQLite's."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit = off")
                    yield conn
            except (
                psycopg.OperationalError
            ) as exc:  # connection lost: the outcome is not committed or unknown
                raise self._unavailable(exc) from None

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Reads in autocommit mode: each statement its own snapshot, like SQLite's plain reads."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None

    def to_db(self, t: datetime) -> datetime:
        return t.astimezone(UTC)

    def from_db(self, value: datetime) -> datetime:
        # timestamptz comes back in the session's time zone: give it in UTC, as the SQLite store does
        return value.astimezone(UTC)

    def has_column(self, db: psycopg.Connection[dict[str, Any]], table: str, column: str) -> bool:
        row = db.execute(_COLUMN_EXISTS, (table, column)).fetchone()
        return bool(row and row["present"])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresLifecycleStore(SqlLifecycleStore):
    """The lifecycle store in PostgreSQL (see ``PostgresDatabase``): tables ``emd_documents`` and ``emd_attempts``.

    :param url: a libpq connection URL (``postgresql://user@host:5432/db?sslmode=verify-full``); the
        password, if any, is best given by ``PGPASSWORD`` or a ``.pgpass`` file, never logged here.
    :param connect_timeout: seconds to wait for the server when (re)connecting (default 10).
    """

    documents_table = "emd_documents"
    attempts_table = "emd_attempts"
    schema = POSTGRES_SCHEMA
    registry_requests_table = "emd_registry_requests"
    leases_table = "emd_leases"

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self.db = PostgresDatabase(url, connect_timeout=connect_timeout)
        self.db.ensure_schema(POSTGRES_SCHEMA, lock_key=SCHEMA_LOCK, first=self._upgrade)
        log.info("lifecycle store opened", backend="postgresql", **self.db.where())
