"""Schema changes and retention of the lifecycle database, as jobs apart from the workers.

``migrate`` creates or upgrades every table the deployable keeps in the lifecycle database (the lifecycle store's
and the support tables: they share it) and, on PostgreSQL, grants the application role what the pods need. It runs as
the tables' owner, in the migration Job (``deploy/k8s/components/postgres``), before a new version's pods; the
pods run as the application role, which can read and write rows but not change a table, so a worker never
half-migrates a database and a compromised pod cannot drop one (``services.lifecycle.postgres``).

``prune`` is the retention: documents decided (registered or failed) longer ago than the retention are deleted
with their attempts; nothing on its way is touched. A document pruned and later replayed is sent again and РЭМД
answers NOT_UNIQUE_PROVIDED_ID, which the status worker reconciles by a registry look-up (docs/operations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from producer.errors import ConfigurationError
from services.lifecycle import open_store
from services.lifecycle.store import database_location
from services.lifecycle.support_tables import open_support_tables


def migrate(data_dir: Path | str, *, url: str = "", grant: str | None = None) -> list[str]:
    """Create what is missing and upgrade what is old (idempotent); grant ``grant`` (a PostgreSQL role) SELECT,
    INSERT, UPDATE and DELETE on every table. Returns the tables."""
    kind, _ = database_location(data_dir, url)
    if grant and kind != "postgresql":
        raise ConfigurationError(
            "--grant needs a PostgreSQL lifecycle store (EMD_LIFECYCLE_STORE=postgresql://…)"
        )
    store = open_store(data_dir, url=url)  # opening creates and upgrades, as the owner may
    support = open_support_tables(data_dir, url=url)
    try:
        tables = [*store.tables, *support.tables]
        if grant:
            from services.lifecycle.postgres import PostgresLifecycleStore

            assert isinstance(store, PostgresLifecycleStore)  # a postgresql:// URL opens one (checked above)
            store.db.grant(grant, tables)
        return tables
    finally:
        support.close()
        store.close()


def prune(
    data_dir: Path | str, *, url: str = "", older_than_days: float, now: datetime | None = None
) -> tuple[int, int]:
    """Delete documents decided more than ``older_than_days`` ago, with their attempts: (documents, attempts)."""
    if older_than_days <= 0:
        raise ConfigurationError(f"the retention must be a positive number of days, not {older_than_days}")
    before = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    store = open_store(data_dir, url=url)
    try:
        return store.prune(before)
    finally:
        store.close()
