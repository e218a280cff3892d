"""The lifecycle database's jobs: migrations as the owner, the pods on a DML-only role, retention, and leases."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from producer.errors import ConfigurationError, TransientError
from services import lifecycle as lc
from services.lifecycle.migrate import prune
from services.lifecycle.support_tables import open_support_tables

M1 = "11111111-1111-4111-8111-111111111111"
M2 = "22222222-2222-4222-8222-222222222222"
M3 = "33333333-3333-4333-8333-333333333333"


@pytest.fixture
def roles(postgres_server):
    """A database owned by its own owner role, and an application role with no privilege of its own, as the DBA
    makes them (docs/operations.md, step 4): (owner URL, application URL, application role name)."""
    suffix = uuid.uuid4().hex[:10]
    owner, app, db = f"emd_owner_{suffix}", f"emd_app_{suffix}", f"t_roles_{suffix}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{owner}" LOGIN')
        admin.execute(f'CREATE ROLE "{app}" LOGIN')
        admin.execute(f'CREATE DATABASE "{db}" OWNER "{owner}"')
    with psycopg.connect(postgres_server.url_for(db), autocommit=True) as admin:
        # PostgreSQL 14 and older let every role create in `public`; the runbook revokes it, and so does the test
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        admin.execute(f'ALTER SCHEMA public OWNER TO "{owner}"')
    url = postgres_server.url_for(db)
    try:
        yield url.replace("postgres@", f"{owner}@"), url.replace("postgres@", f"{app}@"), app
    finally:
        with psycopg.connect(postgres_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{app}"')
            admin.execute(f'DROP ROLE IF EXISTS "{owner}"')


def run_migrate(url: str, *args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    """`emd lifecycle migrate` as the migration Job runs it: its own process, the owner's URL in its environment."""
    env = {**os.environ, "EMD_LIFECYCLE_STORE": url, "EMD_DATA_DIR": str(tmp_path), "EMD_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "lifecycle", "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refused(url: str, statement: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


@pytest.mark.integration
def test_a_worker_on_the_application_role_cannot_run_ddl(roles, tmp_path):
    """On an empty database, the application role can neither create a table itself nor have the store create
    its schema: opening the store says to run the migration."""
    _, app_url, _ = roles
    assert _refused(app_url, "CREATE TABLE intruder (a int)")
    with pytest.raises(TransientError) as refused:
        lc.open_store(tmp_path, url=app_url)
    assert (
        "LIFECYCLE_SCHEMA_MISSING" == refused.value.reason
        and "emd lifecycle migrate" in refused.value.message
    )


@pytest.mark.integration
def test_the_migration_job_creates_the_schema_and_the_application_role_then_only_reads_and_writes(
    roles, tmp_path
):
    """`emd lifecycle migrate --grant ROLE` as the owner creates every table and grants the application role; that
    role then runs the pipeline's transactions, prunes and leases, but cannot drop, alter or truncate a table."""
    owner_url, app_url, app = roles
    done = run_migrate(owner_url, "--grant", app, tmp_path=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert "emd_documents" in done.stdout and f"granted to {app}" in done.stdout

    store = lc.open_store(tmp_path, url=app_url)
    try:
        store.register("doc-1", organization="1.2.643.1", kind="119", signed_event=b"{}")
        store.record_attempt("doc-1", M1, organization="1.2.643.1", endpoint="https://ips")
        store.mark_accepted("doc-1", organization="1.2.643.1", message_id=M1)
        assert "accepted" == store.get("doc-1", organization="1.2.643.1").state
        assert store.acquire_lease("scanners", "pod-a", ttl=30)
        assert (0, 0) == store.prune(dt.datetime.now(dt.UTC))
    finally:
        store.close()
    open_support_tables(tmp_path, url=app_url).close()
    for statement in (
        "DROP TABLE emd_attempts",
        "ALTER TABLE emd_documents ADD COLUMN intruder text",
        "TRUNCATE emd_documents CASCADE",
        "CREATE TABLE intruder (a int)",
    ):
        assert _refused(app_url, statement), statement


@pytest.mark.integration
def test_a_database_older_than_the_code_waits_for_the_migration_instead_of_half_migrating(roles, tmp_path):
    """When this version needs a table the database lacks, a pod on the application role changes nothing, waits
    its startup grace and then fails saying what to run; after the migration it opens."""
    owner_url, app_url, app = roles
    assert 0 == run_migrate(owner_url, "--grant", app, tmp_path=tmp_path).returncode
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("DROP TABLE emd_leases")  # as a database of the release before leases
    with pytest.raises(ConfigurationError) as gave_up:
        lc.open_store(tmp_path, url=app_url, wait=1.0)
    assert "emd lifecycle migrate" in gave_up.value.message
    with psycopg.connect(owner_url) as conn:
        assert conn.execute("SELECT to_regclass('emd_leases') IS NULL").fetchone() == (True,)
    assert 0 == run_migrate(owner_url, "--grant", app, tmp_path=tmp_path).returncode
    lc.open_store(tmp_path, url=app_url).close()


@pytest.mark.integration
def test_migrate_refuses_to_grant_on_sqlite(tmp_path):
    """--grant names a PostgreSQL role: on the SQLite store it is a clear error, exit 2."""
    done = run_migrate("", "--grant", "emd_app", tmp_path=tmp_path)
    assert 2 == done.returncode and "needs a PostgreSQL lifecycle store" in done.stderr


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_store(request, tmp_path):
    """A lifecycle store of each backend."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    store = lc.open_store(tmp_path, url=url)
    yield store, url
    store.close()


def test_prune_deletes_only_documents_decided_before_the_retention(any_store, tmp_path):
    """Registered and failed documents older than the retention go with their attempts; a recent decision and a
    document still waiting for РЭМД, however old, stay."""
    store, url = any_store
    for uid, mid in (("old-registered", M1), ("old-failed", M2), ("old-accepted", M3)):
        store.register(uid, organization="1.2.643.1", kind="119", signed_event=b"{}")
        store.record_attempt(uid, mid, organization="1.2.643.1", endpoint="https://ips")
    store.mark_accepted("old-registered", organization="1.2.643.1", message_id=M1)
    store.mark_registered("old-registered", "16.62.1", organization="1.2.643.1")
    store.mark_failed("old-failed", organization="1.2.643.1", reason="REMD_REJECTED")
    store.mark_accepted("old-accepted", organization="1.2.643.1", message_id=M3)
    long_ago = store.db.to_db(dt.datetime.now(dt.UTC) - dt.timedelta(days=200))
    with store.db.transaction() as db:  # as if those three had last changed 200 days ago
        db.execute(store._q("UPDATE {documents} SET updated_at = ?"), (long_ago,))
    store.register("recent", organization="1.2.643.1", kind="119", signed_event=b"{}")
    store.mark_failed("recent", organization="1.2.643.1", reason="REMD_REJECTED")

    assert (2, 2) == prune(tmp_path, url=url, older_than_days=180)
    assert [None, None] == [
        store.get("old-registered", organization="1.2.643.1"),
        store.get("old-failed", organization="1.2.643.1"),
    ]
    assert "accepted" == store.get("old-accepted", organization="1.2.643.1").state and [
        M3
    ] == store.message_ids("old-accepted", organization="1.2.643.1")
    assert "failed" == store.get("recent", organization="1.2.643.1").state


def test_a_lease_has_one_holder_renewed_by_it_and_taken_over_once_it_lapses(any_store):
    """The first holder gets the lease and renews it; another gets it only after it expired, or at once after a
    release."""
    store, _ = any_store
    assert store.acquire_lease("scanners", "pod-a", ttl=0.5)
    assert not store.acquire_lease("scanners", "pod-b", ttl=30)
    assert store.acquire_lease("scanners", "pod-a", ttl=0.5)
    time.sleep(0.6)
    assert store.acquire_lease("scanners", "pod-b", ttl=30)
    assert not store.acquire_lease("scanners", "pod-a", ttl=30)
    store.release_lease("scanners", "pod-a")  # not its own: changes nothing
    assert not store.acquire_lease("scanners", "pod-a", ttl=30)
    store.release_lease("scanners", "pod-b")
    assert store.acquire_lease("scanners", "pod-a", ttl=30)
