"""Each document's lifecycle in РЭМД, durable and shared by every replica of the sender and status workers.

States (one row per ``localUid``)::

    signed ──record_attempt──▶ sending ──mark_accepted──▶ accepted ──mark_registered──▶ registered (final)
                                 │  ▲                         │
                                 │  └──── record_attempt ◀────┤ (never after accepted: the sender checks)
                                 └──────mark_failed──────▶ failed ◀──── mark_failed (РЭМД rejected it later)
                                                             │
                                                             └── record_attempt (a replay after a fix)

Attempts (one row per MessageID): attempt number, endpoint, ``sent_at``, and the outcome once known
(``accepted``, ``transient``, ``permanent``; ``NULL`` while the request is in flight or when the process
died before the answer) with who decided it (``decided_by``: ``answer``, РЭМД's synchronous answer to the
sender, or ``callback``; a database from before that column gets it on open, filled in from the old rows).
The sender records an attempt and **commits it before the request leaves**, so every MessageID РЭМД ever
saw is findable here (``find_by_message_id``), including that of a request whose answer was lost to a
crash: the status worker can match a callback to it, and support can give it to СТП. A registered
document is also findable by its РЭМД registry number (``find_by_emdr_id``): the last fallback when a
callback's ``relatesToMessage`` and ``localUid`` match nothing.

Registry questions (one row per MessageID): the status worker's ``getRegistryItem`` requests, whose answer
comes on the callback like a registration's. Each is stored before it leaves (``record_registry_request``:
the document, the emdrId asked, why) and the first answer is kept on it (``record_registry_answer``), so a
``getRegistryItemResult`` is matched to its document by the request's MessageID (``find_registry_request``).
A registered document also keeps РЭМД's ``storeTillDate`` (``store_till_date``, as written, with its offset).

Backends (``services/lifecycle/store.py`` holds the statements and rules, written once; each backend module
holds only its dialect):

* ``SqliteLifecycleStore`` (the default, ``<data_dir>/lifecycle.sqlite3``): WAL mode, ``BEGIN IMMEDIATE``
  transactions and a busy timeout, so several local processes (replicas of the workers on one host, the
  tests' kill -9 runs) share it safely. Not for replicas on several hosts: SQLite over a network file
  system does not lock reliably.
* ``PostgresLifecycleStore`` (``services/lifecycle/postgres.py``, psycopg 3) for production, replicas on several
  hosts: the same tables (``POSTGRES_SCHEMA`` there), the same statements, and a row lock
  (``SELECT … FOR UPDATE``) on the document in every transition instead of SQLite's database lock.
  ``LifecycleStore`` is the interface both satisfy; ``open_store(data_dir, url=EMD_LIFECYCLE_STORE)`` is
  the one place that picks the backend.

Every MessageID is stored normalised (``producer.ids.normalize_message_id``) so any spelling matches.
"""

from __future__ import annotations

import time
from pathlib import Path

from producer.errors import ConfigurationError, TransientError
from services.lifecycle.model import (
    ACCEPTED,
    DECIDED_BY_ANSWER,
    DECIDED_BY_CALLBACK,
    DONE_STATES,
    FAILED,
    REGISTERED,
    SENDING,
    SIGNED,
    STATES,
    Attempt,
    Document,
    LifecycleConflict,
    LifecycleStore,
    RegistryRequest,
    check_transition,
)
from services.lifecycle.sqlite import SqliteLifecycleStore
from services.lifecycle.store import database_location

__all__ = [
    "ACCEPTED",
    "DECIDED_BY_ANSWER",
    "DECIDED_BY_CALLBACK",
    "DONE_STATES",
    "FAILED",
    "REGISTERED",
    "SENDING",
    "SIGNED",
    "STATES",
    "Attempt",
    "Document",
    "LifecycleConflict",
    "LifecycleStore",
    "RegistryRequest",
    "SqliteLifecycleStore",
    "check_transition",
    "open_store",
]


def open_store(data_dir: Path | str, *, url: str = "", wait: float = 0.0) -> LifecycleStore:
    """The lifecycle store of a deployment: ``url`` empty or ``sqlite:///path`` → SQLite (default
    ``<data_dir>/lifecycle.sqlite3``); ``postgresql://…`` → PostgreSQL (schema created if missing).

    ``wait``: seconds to keep trying a database that is unreachable (a worker starting while PostgreSQL
    restarts), then ``ConfigurationError``; 0 fails at once with the ``TransientError``.
    """
    kind, where = database_location(data_dir, url)
    if kind == "sqlite":
        return SqliteLifecycleStore(where)
    from services.lifecycle.postgres import PostgresLifecycleStore  # psycopg only where it is used

    deadline = time.monotonic() + wait
    while True:
        try:
            return PostgresLifecycleStore(where)
        except TransientError as exc:
            if time.monotonic() >= deadline:
                if not wait:
                    raise
                # the class only: the URL may carry a password
                raise ConfigurationError(
                    f"the lifecycle database is unreachable ({wait:.0f} s after start): "
                    f"{exc.message}; check EMD_LIFECYCLE_STORE"
                ) from None
            time.sleep(1.0)
