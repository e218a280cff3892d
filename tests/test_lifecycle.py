"""The lifecycle store: states, attempts recorded before sending, MessageID lookup, several processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3

import pytest

from producer.errors import ConfigurationError, TransientError
from services import lifecycle as lc
from services.outcome import Outcome


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request, tmp_path):
    """Each backend's store URL: SQLite in tmp_path, PostgreSQL a fresh database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/lifecycle.sqlite3"


@pytest.fixture
def store(backend, tmp_path):
    """The store under test: every contract test runs against both backends (PostgreSQL: a fresh database)."""
    s = lc.open_store(tmp_path, url=backend)
    yield s
    s.close()


ORG = "1.2.643.5.1.13.13.12.2.77.1"


def _register(store, uid="doc-1", organization=ORG):
    return store.register(uid, organization=organization, kind="119", document_ref="file:///x")


def test_register_creates_signed_and_never_overwrites(store):
    """register() creates the document in state signed once; a second call returns the stored row unchanged."""
    doc = _register(store)
    assert doc.state == lc.SIGNED and doc.kind == "119" and doc.document_ref == "file:///x"
    store.record_attempt(
        "doc-1", "urn:uuid:11111111-1111-1111-1111-111111111111", organization=ORG, endpoint="http://a"
    )
    again = store.register("doc-1", organization=ORG, kind="999")
    assert again.state == lc.SENDING and again.kind == "119"


def test_attempts_are_numbered_and_stored_normalised(store):
    """Attempts are numbered 1, 2, … and their MessageIDs are stored in the normalised form."""
    _register(store)
    a1 = store.record_attempt(
        "doc-1", "urn:uuid:AAAAAAAA-0000-0000-0000-000000000001", organization=ORG, endpoint="http://a"
    )
    a2 = store.record_attempt(
        "doc-1", "aaaaaaaa000000000000000000000002", organization=ORG, endpoint="http://b"
    )
    assert (a1.attempt, a2.attempt) == (1, 2)
    assert store.message_ids("doc-1", organization=ORG) == [
        "aaaaaaaa-0000-0000-0000-000000000001",
        "aaaaaaaa-0000-0000-0000-000000000002",
    ]
    assert [a.endpoint for a in store.history("doc-1", organization=ORG)] == ["http://a", "http://b"]


def test_find_by_message_id_accepts_any_spelling(store):
    """find_by_message_id finds the document and attempt whatever prefix or case the MessageID has."""
    _register(store)
    store.record_attempt(
        "doc-1", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", organization=ORG, endpoint="http://a"
    )
    found = store.find_by_message_id("urn:uuid:3F2504E0-4F89-11D3-9A0C-0305E82C3301")
    assert found is not None
    doc, attempt = found
    assert doc.local_uid == "doc-1" and attempt.attempt == 1
    assert store.find_by_message_id("urn:uuid:00000000-0000-0000-0000-000000000000") is None


def test_outcomes_and_acceptance(store):
    """A transient outcome is kept on its attempt; acceptance marks the document and its attempt accepted."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.record_outcome(
        "m1",
        outcome=Outcome.TRANSIENT,
        decided_by=lc.DECIDED_BY_ANSWER,
        code="HTTP_503",
        message="unavailable",
    )
    store.record_attempt("doc-1", "m2", organization=ORG, endpoint="e")
    doc = store.mark_accepted("doc-1", organization=ORG, message_id="m2")
    assert doc.state == lc.ACCEPTED and doc.accepted_message_id == "m2" and doc.accepted_at is not None
    h = store.history("doc-1", organization=ORG)
    assert [(a.outcome, a.code) for a in h] == [("transient", "HTTP_503"), ("accepted", None)]
    assert [a.decided_by for a in h] == [lc.DECIDED_BY_ANSWER, lc.DECIDED_BY_ANSWER]


def test_a_sync_acceptance_after_the_callback_decided_the_attempt_changes_nothing(store):
    """РЭМД's error callback for an attempt can overtake its synchronous "accepted" (callback_early): the late
    acceptance leaves the attempt as the callback decided it and the document failed, so the resend goes out."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.record_outcome(
        "m1",
        outcome=Outcome.TRANSIENT,
        decided_by=lc.DECIDED_BY_CALLBACK,
        code="MIS_NOT_AVAILABLE",
        message="callback c1",
    )
    store.mark_failed("doc-1", organization=ORG, reason="REMD_TRANSIENT", code="MIS_NOT_AVAILABLE")
    # then the sender reads the synchronous answer, as it does for every attempt
    store.record_outcome("m1", outcome=Outcome.ACCEPTED, decided_by=lc.DECIDED_BY_ANSWER)
    doc = store.mark_accepted("doc-1", organization=ORG, message_id="m1")
    assert doc.state == lc.FAILED and doc.accepted_message_id is None
    assert [(a.outcome, a.decided_by) for a in store.history("doc-1", organization=ORG)] == [
        ("transient", lc.DECIDED_BY_CALLBACK)
    ]
    store.record_attempt("doc-1", "m2", organization=ORG, endpoint="e")  # the resend is allowed
    assert store.message_ids("doc-1", organization=ORG) == ["m1", "m2"]


def test_a_first_attempt_creates_an_unknown_document_in_its_transaction(store):
    """record_attempt with register= creates an unknown document (its signed event and reference kept) with
    attempt 1; for a document already held it only adds the attempt, the row's content as it was."""
    first = {"kind": "119", "signed_event": b'{"v":1}', "document_ref": "file:///x"}
    assert store.record_attempt("doc-9", "m1", organization=ORG, endpoint="e", register=first).attempt == 1
    doc = store.get("doc-9", organization=ORG)
    assert (doc.state, doc.organization, doc.signed_event, doc.document_ref) == (
        lc.SENDING,
        ORG,
        b'{"v":1}',
        "file:///x",
    )
    store.record_attempt(
        "doc-9",
        "m2",
        organization=ORG,
        endpoint="e",
        register={"kind": "999", "signed_event": b"{}"},
    )
    doc = store.get("doc-9", organization=ORG)
    assert (doc.organization, doc.kind, doc.signed_event) == (ORG, "119", b'{"v":1}')
    assert store.message_ids("doc-9", organization=ORG) == ["m1", "m2"]


def test_acceptance_keeps_the_answer_on_its_attempt_and_a_callbacks_decision(store):
    """mark_accepted records the answer's code and message on the attempt with the acceptance; a late acceptance
    of an attempt a callback already decided (registered) leaves that decision and the registered state."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.mark_accepted("doc-1", organization=ORG, message_id="m1", code="ACCEPTED", message="принят")
    (a,) = store.history("doc-1", organization=ORG)
    assert (a.outcome, a.decided_by, a.code, a.message) == (
        "accepted",
        lc.DECIDED_BY_ANSWER,
        "ACCEPTED",
        "принят",
    )
    _register(store, "doc-2")
    store.record_attempt("doc-2", "m2", organization=ORG, endpoint="e")
    store.record_outcome("m2", outcome="registered", decided_by=lc.DECIDED_BY_CALLBACK, message="callback c")
    store.mark_registered("doc-2", "EMDR-2", organization=ORG)
    assert (
        store.mark_accepted("doc-2", organization=ORG, message_id="m2", code="ACCEPTED").state
        == lc.REGISTERED
    )
    (a,) = store.history("doc-2", organization=ORG)
    assert (a.outcome, a.decided_by, a.message) == ("registered", lc.DECIDED_BY_CALLBACK, "callback c")


def test_outcome_records_who_decided_it(store):
    """record_outcome stores who decided the attempt; an attempt still in flight has no outcome and no decider."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.record_attempt("doc-1", "m2", organization=ORG, endpoint="e")
    store.record_outcome(
        "m1", outcome="rejected", decided_by=lc.DECIDED_BY_CALLBACK, code="X", message="callback c"
    )
    assert [(a.outcome, a.decided_by) for a in store.history("doc-1", organization=ORG)] == [
        ("rejected", lc.DECIDED_BY_CALLBACK),
        (None, None),
    ]
    assert store.find_by_message_id("m1")[1].decided_by == lc.DECIDED_BY_CALLBACK


def test_no_attempt_after_acceptance(store):
    """Once accepted (or registered) a document refuses any new attempt: it is never sent twice."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.mark_accepted("doc-1", organization=ORG, message_id="m1")
    with pytest.raises(lc.LifecycleConflict):
        store.record_attempt("doc-1", "m2", organization=ORG, endpoint="e")
    store.mark_registered("doc-1", "EMDR-1", organization=ORG)
    with pytest.raises(lc.LifecycleConflict):
        store.record_attempt("doc-1", "m3", organization=ORG, endpoint="e")
    assert store.message_ids("doc-1", organization=ORG) == ["m1"]


def test_registered_is_final(store):
    """Registered is final: a late acceptance keeps it, failing it or re-registering with another emdrId is refused."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.mark_registered("doc-1", "EMDR-1", organization=ORG)
    assert store.mark_accepted("doc-1", organization=ORG, message_id="m1").state == lc.REGISTERED
    assert store.mark_registered("doc-1", "EMDR-1", organization=ORG).emdr_id == "EMDR-1"
    with pytest.raises(lc.LifecycleConflict):
        store.mark_registered("doc-1", "EMDR-2", organization=ORG)
    with pytest.raises(lc.LifecycleConflict):
        store.mark_failed("doc-1", organization=ORG, reason="REMD_REJECTED")


def test_failed_then_replayed(store):
    """A failed document records its failure, and a replay after a fix may attempt it again."""
    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    doc = store.mark_failed(
        "doc-1", organization=ORG, reason="REMD_REJECTED", code="NOT_VALID_SIGNATURE", message="bad"
    )
    assert (doc.state, doc.failure_code, doc.failure_reason) == (
        lc.FAILED,
        "NOT_VALID_SIGNATURE",
        "REMD_REJECTED",
    )
    assert store.record_attempt("doc-1", "m2", organization=ORG, endpoint="e").attempt == 2
    assert store.get("doc-1", organization=ORG).state == lc.SENDING


def test_attempt_for_unknown_document_is_refused(store):
    """An attempt for a document never registered is a bug and raises KeyError."""
    with pytest.raises(KeyError):
        store.record_attempt("nope", "m1", organization=ORG, endpoint="e")


def _execute_raw(url: str, script: str) -> None:
    """Run SQL statements on the store's database behind its back."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url[len("sqlite:///") :])
        db.executescript(script)
        db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(script)


#: the first release's tables (keyed by localUid alone, no decided_by), as a database from then holds them
FIRST_RELEASE = """
CREATE TABLE {documents} (
    local_uid TEXT PRIMARY KEY, organization TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    signed_event {blob}, signed_ref TEXT, document_ref TEXT, emdr_id TEXT, accepted_message_id TEXT,
    failure_reason TEXT, failure_code TEXT, failure_message TEXT, created_at {time} NOT NULL,
    updated_at {time} NOT NULL, accepted_at {time}, registered_at {time}, failed_at {time}
);
CREATE TABLE {attempts} (
    message_id TEXT PRIMARY KEY, local_uid TEXT NOT NULL REFERENCES {documents}(local_uid),
    attempt INTEGER NOT NULL, endpoint TEXT NOT NULL, sent_at {time} NOT NULL, outcome TEXT, code TEXT,
    message TEXT, finished_at {time}, UNIQUE (local_uid, attempt)
);
CREATE INDEX {attempts}_by_document ON {attempts}(local_uid, attempt);
CREATE INDEX {documents}_by_emdr_id ON {documents}(emdr_id);
"""


def _first_release(backend: str) -> tuple[str, str]:
    """A database of the first release at ``backend``, with one document of ORG and its three attempts; the
    names of its (documents, attempts) tables."""
    pg = backend.startswith("postgresql")
    documents, attempts = ("emd_documents", "emd_attempts") if pg else ("documents", "attempts")
    now = "'2026-01-01T00:00:00.000000+00:00'"
    _execute_raw(
        backend,
        FIRST_RELEASE.format(
            documents=documents,
            attempts=attempts,
            blob="bytea" if pg else "BLOB",
            time="timestamptz" if pg else "TEXT",
        )
        + f"""
        INSERT INTO {documents} (local_uid, organization, kind, state, emdr_id, created_at, updated_at)
             VALUES ('doc-1', '{ORG}', '119', 'sending', NULL, {now}, {now});
        INSERT INTO {attempts} (message_id, local_uid, attempt, endpoint, sent_at, outcome, message) VALUES
            ('m1', 'doc-1', 1, 'e', {now}, 'transient', 'callback c-1'),
            ('m2', 'doc-1', 2, 'e', {now}, 'transient', 'HTTP 503'),
            ('m3', 'doc-1', 3, 'e', {now}, NULL, NULL);""",
    )
    return documents, attempts


def test_a_database_from_before_decided_by_is_upgraded_on_open(backend, tmp_path):
    """Opening a database created before the decided_by column adds it once, filled in from the old rows (a
    "callback <id>" message was a callback's decision, any other outcome the sender's answer)."""
    _first_release(backend)
    s = lc.open_store(tmp_path, url=backend)
    assert [(a.message_id, a.decided_by) for a in s.history("doc-1", organization=ORG)] == [
        ("m1", lc.DECIDED_BY_CALLBACK),
        ("m2", lc.DECIDED_BY_ANSWER),
        ("m3", None),
    ]
    s.record_outcome("m3", outcome=Outcome.TRANSIENT, decided_by=lc.DECIDED_BY_CALLBACK, message="x")
    s.close()
    s = lc.open_store(tmp_path, url=backend)  # a second open finds the column and fills in nothing again
    assert [a.decided_by for a in s.history("doc-1", organization=ORG)] == [
        lc.DECIDED_BY_CALLBACK,
        lc.DECIDED_BY_ANSWER,
        lc.DECIDED_BY_CALLBACK,
    ]
    s.close()


def test_a_database_keyed_by_local_uid_alone_is_rekeyed_by_organisation_on_open(backend, tmp_path):
    """A first-release database is rebuilt keyed by (organisation, localUid): its document and attempts keep every
    value, each attempt takes its document's organisation, and another organisation may then use the localUid."""
    _first_release(backend)
    s = lc.open_store(tmp_path, url=backend)
    doc = s.get("doc-1", organization=ORG)
    assert (doc.state, doc.kind) == (lc.SENDING, "119")
    assert [(a.organization, a.message_id, a.attempt) for a in s.history("doc-1", organization=ORG)] == [
        (ORG, "m1", 1),
        (ORG, "m2", 2),
        (ORG, "m3", 3),
    ]
    assert s.find_by_message_id("m2")[0].organization == ORG
    other = "1.2.643.5.1.13.13.12.2.77.2"
    _register(s, "doc-1", organization=other)
    assert s.record_attempt("doc-1", "m4", organization=other, endpoint="e").attempt == 1
    assert [d.organization for d in s.documents_of("doc-1")] == sorted([ORG, other])
    s.close()


def test_database_is_in_wal_mode_and_durable(tmp_path):
    """The file is in WAL mode and an attempt is visible to a fresh connection as soon as record_attempt returns."""
    s = lc.open_store(tmp_path)
    _register(s)
    s.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    other = sqlite3.connect(str(tmp_path / "lifecycle.sqlite3"))
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT message_id FROM attempts").fetchall() == [("m1",)]
    other.close()
    s.close()


def _hammer(path: str, worker: int, n: int) -> None:
    s = lc.SqliteLifecycleStore(path)
    for i in range(n):
        uid = f"doc-{i % 5}"
        s.register(uid, organization=ORG, kind="119")
        s.record_attempt(uid, f"w{worker}-m{i}", organization=ORG, endpoint="e")
    s.close()


@pytest.mark.integration
def test_two_processes_share_the_store(tmp_path):
    """Two processes recording attempts on the same documents at once lose none and never reuse an attempt number."""
    path = str(tmp_path / "lc.sqlite3")
    lc.SqliteLifecycleStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(path, w, 60)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = lc.SqliteLifecycleStore(path)
    total = 0
    for d in range(5):
        numbers = [a.attempt for a in s.history(f"doc-{d}", organization=ORG)]
        assert numbers == list(range(1, len(numbers) + 1))
        total += len(numbers)
    assert total == 120
    s.close()


@pytest.mark.integration
def test_open_store_picks_the_backend_by_url(tmp_path, postgres_url):
    """open_store gives SQLite by default or for sqlite:///, PostgreSQL for postgresql://, and refuses other schemes."""
    from services.lifecycle.postgres import PostgresLifecycleStore

    for url, kind in (
        ("", lc.SqliteLifecycleStore),
        (f"sqlite:///{tmp_path}/x.sqlite3", lc.SqliteLifecycleStore),
        (postgres_url, PostgresLifecycleStore),
    ):
        s = lc.open_store(tmp_path, url=url)
        assert isinstance(s, kind)
        s.close()
    assert (tmp_path / "x.sqlite3").exists()
    with pytest.raises(ConfigurationError) as exc:
        lc.open_store(tmp_path, url="mysql://db/emd")
    assert exc.value.reason == "LIFECYCLE_BACKEND_UNKNOWN"


def test_find_by_emdr_id_finds_the_registered_document(store):
    """find_by_emdr_id returns the document registered under that registry number, and None for any other."""
    _register(store)
    _register(store, "doc-2")
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    assert store.find_by_emdr_id("16.62.1") is None  # nothing registered yet
    store.mark_registered("doc-1", "16.62.1", organization=ORG)
    found = store.find_by_emdr_id("16.62.1")
    assert found is not None and found.local_uid == "doc-1" and found.state == lc.REGISTERED
    assert store.find_by_emdr_id("16.62.2") is None and store.find_by_emdr_id("") is None


# --- PostgreSQL specifics: schema on open, lost connections, replicas racing -------------------------


@pytest.mark.integration
def test_postgres_schema_is_created_idempotently_and_shared(postgres_url):
    """Opening the store creates the schema once; a second replica opening it later sees the same rows."""
    from services.lifecycle.postgres import PostgresLifecycleStore

    first = PostgresLifecycleStore(postgres_url)
    _register(first)
    first.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    second = PostgresLifecycleStore(postgres_url)
    assert second.get("doc-1", organization=ORG).state == lc.SENDING
    assert second.find_by_message_id("M1")[1].attempt == 1
    first.close()
    second.close()


@pytest.mark.integration
def test_postgres_store_says_where_it_opened_and_never_the_password(postgres_url):
    """Opening logs the backend, host and database of the store, and nothing of the URL's password."""
    from structlog.testing import capture_logs

    from services.lifecycle.postgres import PostgresLifecycleStore

    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")
    assert url != postgres_url
    with capture_logs() as logs:
        PostgresLifecycleStore(url).close()
    [opened] = [e for e in logs if e["event"] == "lifecycle store opened"]
    assert opened["backend"] == "postgresql" and opened["dbname"] == postgres_url.rsplit("/", 1)[1]
    assert opened["host"] and "s3cret-pw" not in repr(logs)


@pytest.mark.integration
def test_postgres_lost_connection_is_transient_then_reconnects(postgres_server, postgres_url):
    """A connection the server drops fails that call as a transient LIFECYCLE_STORE_UNAVAILABLE; the next call reconnects."""
    from services.lifecycle.postgres import PostgresLifecycleStore

    s = PostgresLifecycleStore(postgres_url)
    _register(s)
    assert postgres_server.terminate_connections(postgres_url.rsplit("/", 1)[1]) == 1
    with pytest.raises(TransientError) as exc:
        s.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    assert exc.value.reason == "LIFECYCLE_STORE_UNAVAILABLE"
    assert s.record_attempt("doc-1", "m1", organization=ORG, endpoint="e").attempt == 1
    assert s.message_ids("doc-1", organization=ORG) == ["m1"]
    s.close()


def test_postgres_unreachable_server_is_transient_and_keeps_the_password_out(tmp_path):
    """An unreachable server is a transient LIFECYCLE_STORE_UNAVAILABLE whose message does not carry the URL's password."""
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError) as exc:
        lc.open_store(tmp_path, url=f"postgresql://emd:s3cret-pw@127.0.0.1:{port}/emd?connect_timeout=2")
    assert exc.value.reason == "LIFECYCLE_STORE_UNAVAILABLE"
    assert "s3cret-pw" not in str(exc.value) and "s3cret-pw" not in repr(exc.value)


def _replica(url: str, role: str, n: int, barrier) -> None:
    """One worker replica: for each document, record an attempt in step with the other, then race on its fate."""
    from services.lifecycle.postgres import PostgresLifecycleStore

    s = PostgresLifecycleStore(url)
    for i in range(n):
        uid = f"doc-{i}"
        barrier.wait(120)
        s.record_attempt(uid, f"{role}-{i}", organization=ORG, endpoint=role)
        barrier.wait(120)
        if role == "a":  # the replica whose attempt РЭМД accepted and then registered
            s.mark_accepted(uid, organization=ORG, message_id=f"a-{i}")
            s.mark_registered(uid, f"EMDR-{i}", organization=ORG)
        else:  # the replica handling a redelivery: resend, then a late transient failure
            with contextlib.suppress(lc.LifecycleConflict):
                s.record_attempt(uid, f"b2-{i}", organization=ORG, endpoint=role)
            with contextlib.suppress(lc.LifecycleConflict):
                s.mark_failed(uid, organization=ORG, reason="REMD_TRANSIENT")
    s.close()


@pytest.mark.integration
def test_two_postgres_replicas_racing_on_the_same_documents_end_consistent(postgres_url):
    """Two replicas racing on each document's transitions number attempts without gaps or clashes and never lose the registration."""
    from services.lifecycle.postgres import PostgresLifecycleStore

    n = 80
    setup = PostgresLifecycleStore(postgres_url)
    for i in range(n):
        _register(setup, f"doc-{i}")
        setup.record_attempt(f"doc-{i}", f"m0-{i}", organization=ORG, endpoint="e")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_replica, args=(postgres_url, role, n, barrier)) for role in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    for i in range(n):
        doc = setup.get(f"doc-{i}", organization=ORG)
        assert (doc.state, doc.emdr_id, doc.accepted_message_id) == (lc.REGISTERED, f"EMDR-{i}", f"a-{i}")
        history = setup.history(f"doc-{i}", organization=ORG)
        assert [a.attempt for a in history] == list(range(1, len(history) + 1))
        ids = [a.message_id for a in history]
        assert ids[0] == f"m0-{i}" and {f"a-{i}", f"b-{i}"} <= set(ids) <= {
            f"m0-{i}",
            f"a-{i}",
            f"b-{i}",
            f"b2-{i}",
        }
    setup.close()


@pytest.mark.integration
def test_postgres_store_runs_on_a_dml_only_role_once_the_schema_exists(postgres_url):
    """Once the schema exists, a role granted only SELECT, INSERT and UPDATE opens the store and records attempts."""
    from services.lifecycle.postgres import PostgresLifecycleStore
    from tests.postgres_server import dml_only_role

    PostgresLifecycleStore(postgres_url).close()  # the migration, by the owner
    with dml_only_role(postgres_url, "emd_documents", "emd_attempts") as url:
        s = PostgresLifecycleStore(url)
        _register(s)
        assert s.record_attempt("doc-1", "m1", organization=ORG, endpoint="e").attempt == 1
        assert s.mark_accepted("doc-1", organization=ORG, message_id="m1").state == lc.ACCEPTED
        s.close()


def test_awaiting_counts_accepted_documents_and_their_oldest_acceptance(store):
    """awaiting() counts documents accepted and not yet decided, with the earliest acceptance time."""
    from datetime import UTC, datetime

    assert (0, None) == store.awaiting()
    times = {
        "a": datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        "b": datetime(2026, 11, 2, 10, 0, tzinfo=UTC),
        "c": datetime(2026, 11, 3, 10, 0, tzinfo=UTC),
    }
    for n, (uid, at) in enumerate(times.items()):
        _register(store, uid)
        mid = f"3f2504e0-4f89-11d3-9a0c-0305e82c330{n}"
        store.record_attempt(uid, mid, organization=ORG, endpoint="http://a")
        store.mark_accepted(uid, organization=ORG, message_id=mid, accepted_at=at)
    store.mark_registered("a", "16.62.1", organization=ORG)
    assert (2, times["b"]) == store.awaiting()


def test_one_organisations_document_is_never_changed_through_another_with_the_same_local_uid(store):
    """Two organisations' documents under one localUid are two documents: failing, attempting or reading A's
    never touches B's, and A's reads show nothing of B's (its emdrId, its MessageIDs)."""
    a, b = "1.2.643.5.1.13.13.12.2.77.1", "1.2.643.5.1.13.13.12.2.77.2"
    _register(store, "shared", organization=b)
    store.record_attempt("shared", "mb", organization=b, endpoint="e")
    store.mark_registered("shared", "EMDR-B", organization=b)
    assert store.get("shared", organization=a) is None
    with pytest.raises(KeyError):
        store.mark_failed("shared", organization=a, reason="REMD_REJECTED")
    _register(store, "shared", organization=a)
    store.record_attempt("shared", "ma", organization=a, endpoint="e")
    store.mark_failed("shared", organization=a, reason="REMD_REJECTED")
    mine = store.get("shared", organization=a)
    assert (mine.state, mine.emdr_id, store.message_ids("shared", organization=a)) == (
        lc.FAILED,
        None,
        ["ma"],
    )
    theirs = store.get("shared", organization=b)
    assert (theirs.state, theirs.emdr_id, store.message_ids("shared", organization=b)) == (
        lc.REGISTERED,
        "EMDR-B",
        ["mb"],
    )


def test_registration_keeps_the_first_time_to_the_microsecond_and_store_till_date(store):
    """mark_registered keeps РЭМД's registration time to the microsecond and its storeTillDate with the offset
    as written; a second registration under the same emdrId (a redelivered callback) changes neither."""
    from datetime import UTC, datetime

    _register(store)
    store.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    store.mark_accepted("doc-1", organization=ORG, message_id="m1")
    first = datetime(2023, 9, 22, 6, 27, 2, 104123, tzinfo=UTC)
    doc = store.mark_registered(
        "doc-1", "16.62.1", organization=ORG, registered_at=first, store_till_date="2048-09-22+03:00"
    )
    assert (doc.registered_at, doc.store_till_date) == (first, "2048-09-22+03:00")
    again = store.mark_registered(
        "doc-1",
        "16.62.1",
        organization=ORG,
        registered_at=datetime.now(UTC),
        store_till_date="2049-01-01+03:00",
    )
    assert (again.registered_at, again.store_till_date) == (first, "2048-09-22+03:00")


def test_a_database_from_before_store_till_date_is_upgraded_on_open(backend, tmp_path):
    """Opening a database created before the store_till_date column adds it: its registered documents read with
    none, a new registration keeps one."""
    from services.lifecycle.postgres import POSTGRES_SCHEMA
    from services.lifecycle.sqlite import SQLITE_SCHEMA

    pg = backend.startswith("postgresql")
    schema = POSTGRES_SCHEMA if pg else SQLITE_SCHEMA
    old = "\n".join(line for line in schema.splitlines() if "store_till_date" not in line)
    assert "store_till_date" in schema and "store_till_date" not in old
    documents = "emd_documents" if pg else "documents"
    now = "'2026-01-01T00:00:00.000000+00:00'"
    _execute_raw(
        backend,
        old
        + f"""
        ;INSERT INTO {documents} (local_uid, organization, kind, state, emdr_id, created_at, updated_at, registered_at)
             VALUES ('doc-old', 'o', '119', 'registered', '16.62.0', {now}, {now}, {now});""",
    )
    s = lc.open_store(tmp_path, url=backend)
    assert s.get("doc-old", organization="o").store_till_date is None
    _register(s)
    s.record_attempt("doc-1", "m1", organization=ORG, endpoint="e")
    s.mark_accepted("doc-1", organization=ORG, message_id="m1")
    assert (
        s.mark_registered("doc-1", "16.62.1", organization=ORG, store_till_date="2048-09-22Z").store_till_date
        == "2048-09-22Z"
    )
    s.close()


def test_a_registry_question_is_found_by_any_spelling_and_keeps_its_first_answer(store):
    """A getRegistryItem question is stored with its document, found by any spelling of its MessageID, and keeps
    the first answer: a second answer (another callback) changes nothing and the caller sees who decided."""
    _register(store)
    mid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    asked = store.record_registry_request(
        f"urn:uuid:{mid.upper()}",
        "doc-1",
        organization=ORG,
        emdr_id="16.62.1",
        purpose="duplicate",
        attempt_message_id="<M-1>",
    )
    assert (asked.message_id, asked.attempt_message_id, asked.outcome) == (mid, "m-1", None)
    doc, request = store.find_registry_request(f"<{mid.upper()}>")
    assert doc.local_uid == "doc-1" and request == asked
    first = store.record_registry_answer(mid, outcome="registered", decided_by="callback c-1")
    later = store.record_registry_answer(mid, outcome="error", decided_by="callback c-2", code="X")
    assert first.decided_by == later.decided_by == "callback c-1" and later.outcome == "registered"
    assert later.answered_at is not None and later.code is None
    assert store.registry_requests("doc-1", organization=ORG) == [later]
    assert store.find_registry_request("00000000-0000-0000-0000-000000000000") is None
    assert store.record_registry_answer("unknown", outcome="x", decided_by="y") is None
    with pytest.raises(KeyError):
        store.record_registry_request("m-2", "doc-unknown", organization=ORG, emdr_id="1", purpose="deadline")
