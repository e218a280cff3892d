"""The embedded backend: one SQLite file in WAL mode, for one host (``services.lifecycle``).

``SqliteDatabase`` is the connection and the dialect (transactions, ``?``, timestamps as text), shared by
the lifecycle store and the support tables (``services.lifecycle.support_tables``), which keep their tables in the same
file; ``SqliteLifecycleStore`` adds the lifecycle's schema to it. The statements and rules are
``services.lifecycle.store``'s.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from producer.files import private_file
from services.lifecycle.schema import SCHEMA_LOCK, SQLITE_SCHEMA
from services.lifecycle.store import SqlLifecycleStore
from services.timestamps import stored

#: the lifecycle's tables here (the DDL of every dialect is ``services.lifecycle.schema``'s)
__all__ = ["SQLITE_SCHEMA", "SqliteDatabase", "SqliteLifecycleStore"]


class SqliteDatabase:
    """One SQLite file in WAL mode, safe for several processes on one host.

    :param path: the database file (created with its directory).
    :param busy_timeout: seconds a writer waits for another process's transaction (default 30).
    """

    placeholder = "?"
    #: nothing to add to a read in a transition: ``BEGIN IMMEDIATE`` already holds the database's write lock
    for_update = ""

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        private_file(self.path)  # 0600 in a 0700 directory; SQLite gives -wal and -shm the same mode
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a read-then-write never
        # upgrades a shared lock (the cause of SQLITE_BUSY deadlocks between processes).
        self._db = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection, used from the event loop and worker threads
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # an attempt recorded must survive a power cut
            self._db.execute("PRAGMA foreign_keys = ON")

    def ensure_schema(
        self,
        schema: str,
        *,
        lock_key: int,
        first: Callable[[Any], None] | None = None,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        """Run ``first(db)`` (an upgrade of existing tables), create what ``schema`` (``CREATE … IF NOT EXISTS``
        statements) lacks, then run ``then(db)``, in one transaction. ``lock_key`` serialises PostgreSQL replicas;
        SQLite's write lock does it here."""
        with self.transaction() as db:
            if first is not None:
                first(db)
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)
            if then is not None:
                then(db)

    @contextmanager
    def transaction(self, *, write: bool = True, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One committed transaction (``write=False``: a consistent read, a WAL snapshot taking no write lock).

        ``durable=False``: committed without waiting for the disk (no fsync of the WAL: ``synchronous = NORMAL``
        for this commit), for what a power cut may lose and nothing depends on (the exchange archive's index):
        the database stays consistent, the last such commits may be gone after a power cut.
        """
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Single-statement reads outside a transaction."""
        with self._lock:
            yield self._db

    def to_db(self, t: datetime) -> str:
        # the overdue scan compares these as text: one width, always UTC with microseconds
        return stored(t)

    def from_db(self, value: str) -> datetime:
        return datetime.fromisoformat(value)

    def has_column(self, db: sqlite3.Connection, table: str, column: str) -> bool:
        return any(row["name"] == column for row in db.execute(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteLifecycleStore(SqlLifecycleStore):
    """The lifecycle store in one SQLite file (see ``SqliteDatabase``); tables ``documents`` and ``attempts``.

    :param path: the database file (created with its directory).
    :param busy_timeout: seconds a writer waits for another process's transaction (default 30).
    """

    documents_table = "documents"
    attempts_table = "attempts"
    schema = SQLITE_SCHEMA
    registry_requests_table = "registry_requests"
    leases_table = "leases"

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.db = SqliteDatabase(path, busy_timeout=busy_timeout)
        self.path = self.db.path
        self.db.ensure_schema(SQLITE_SCHEMA, lock_key=SCHEMA_LOCK, first=self._upgrade)
