"""The support tables: clinic onboarding states, kept exchanges and the audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from services.lifecycle import support_tables
from services.lifecycle.support_tables import ClinicConflict, open_support_tables

OID = "1.2.643.5.1.13.13.12.2.77.9000"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    s = open_support_tables(tmp_path, url=url)
    yield s
    s.close()


def test_an_unknown_clinic_is_onboarding(store):
    """A clinic the store has never seen is onboarding, with no test recorded."""
    clinic = store.clinic(OID)
    assert clinic.state == support_tables.ONBOARDING and clinic.tested_at is None


def test_promote_is_refused_before_a_successful_test_and_allowed_after(store):
    """promote refuses a clinic without a successful test-stand registration, then succeeds once one is recorded."""
    store.start_test(OID, actor="alice")
    store.record_test(OID, ok=False, local_uid="u0", message_ids=["m0"], actor="alice", detail="rejected")
    with pytest.raises(ClinicConflict, match="emd clinic test"):
        store.promote(OID, actor="alice")
    assert store.clinic(OID).state == support_tables.TESTING
    store.record_test(OID, ok=True, local_uid="u1", message_ids=["m1"], emdr_id="E1", actor="alice")
    promoted = store.promote(OID, actor="alice")
    assert promoted.state == support_tables.PRODUCTION and promoted.tested_emdr_id == "E1"
    assert promoted.tested_message_ids == ("m1",)


def test_forced_promotion_is_recorded_in_the_audit_log(store):
    """promote with force skips the test requirement and leaves a clinic.promote.forced entry naming the actor."""
    store.promote(OID, actor="bob", force=True)
    assert store.clinic(OID).state == support_tables.PRODUCTION
    entry = store.audit_log()[0]
    assert (entry.action, entry.actor, entry.target) == ("clinic.promote.forced", "bob", OID)


def test_a_clinic_in_production_cannot_start_a_test_stand_test(store):
    """Production and suspended clinics are refused a test: their documents would not go to the test stand."""
    store.promote(OID, actor="a", force=True)
    with pytest.raises(ClinicConflict, match="production"):
        store.start_test(OID, actor="a")
    store.suspend(OID, actor="a", reason="certificate revoked")
    assert store.clinic(OID).state == support_tables.SUSPENDED
    with pytest.raises(ClinicConflict, match="suspended"):
        store.start_test(OID, actor="a")


def test_exchanges_are_found_by_any_spelling_of_the_message_id(store):
    """A kept exchange is found by its MessageID with or without the urn:uuid: prefix, and kept once."""
    mid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    store.keep_exchange(
        f"urn:uuid:{mid}",
        local_uid="u1",
        endpoint="http://x/ips",
        request_ref="file:///r",
        response_ref="file:///a",
        http_status=200,
    )
    store.keep_exchange(
        mid,
        local_uid="u1",
        endpoint="http://x/ips",
        request_ref="file:///other",
        response_ref=None,
        http_status=500,
    )
    found = store.exchanges([mid.upper(), "unknown"])
    assert list(found) == [mid] and found[mid].request_ref == "file:///r" and found[mid].http_status == 200


def test_an_exchange_is_kept_without_waiting_for_the_disk_and_other_writes_still_do(store):
    """The exchange archive's index is committed without a flush to disk (support data, like the files it
    points to: one fsync fewer per attempt); the connection's next transactions wait for the disk again."""
    asked: list[bool] = []
    real = store.db.transaction

    def watching(**kw):
        asked.append(kw.get("durable", True))
        return real(**kw)

    mid = "4f2504e0-4f89-11d3-9a0c-0305e82c3301"
    store.db.transaction = watching
    store.keep_exchange(
        mid, local_uid="u1", endpoint="e", request_ref=None, response_ref=None, http_status=200
    )
    store.db.transaction = real
    with store.db.transaction(durable=False) as db:
        inside = _waits_for_disk(store.db, db)
    with store.db.transaction() as db:
        after = _waits_for_disk(store.db, db)
    assert asked == [False] and (inside, after) == (False, True)
    assert list(store.exchanges([mid])) == [mid]


def _waits_for_disk(database, connection) -> bool:
    """Whether a commit on ``connection`` now waits for the disk: SQLite's ``synchronous`` FULL (2), PostgreSQL's
    ``synchronous_commit``."""
    if database.placeholder == "?":
        return connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    return connection.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"


def test_audit_entries_come_newest_first_with_their_detail(store):
    """Every recorded action is listed, newest first, with actor, target and detail."""
    store.audit("dlq.unmask", actor="carol", target="u1")
    store.audit("dlq.replay", actor="carol", target="emd.document.sent.dlt", replayed=2)
    log = store.audit_log()
    assert [e.action for e in log[:2]] == ["dlq.replay", "dlq.unmask"]
    assert log[0].detail == {"replayed": 2}


def test_the_audit_log_is_append_only(store):
    """An entry written to the audit log can be neither changed nor deleted through the store's database."""
    store.audit("console.login", actor="mallory", target=None)
    for statement in ("UPDATE desk_audit SET actor = 'someone else'", "DELETE FROM desk_audit"):
        with pytest.raises(Exception, match="append-only"), store._tx() as run:
            run(statement)
    assert [(e.action, e.actor) for e in store.audit_log()] == [("console.login", "mallory")]


def test_the_audit_log_is_read_a_page_at_a_time_so_a_flood_hides_nothing(store):
    """250 flood entries after a real one: the first page holds 50, and the real entry is on the last page."""
    store.audit("clinic.promote", actor="alice", target=OID)
    for i in range(250):
        store.audit("console.login.failed", actor=f"bot{i}")
    assert store.audit_count() == 251
    first = store.audit_log(limit=50)
    assert len(first) == 50 and all(e.action == "console.login.failed" for e in first)
    last = store.audit_log(limit=50, offset=250)
    assert [(e.action, e.actor) for e in last] == [("clinic.promote", "alice")]


@pytest.mark.integration
def test_the_postgres_desk_store_opens_on_a_dml_only_role_once_its_tables_exist(postgres_url):
    """Once the owner created the desk tables, a role granted only SELECT, INSERT and UPDATE opens the desk
    store and writes to it (no CREATE on every open)."""
    from tests.postgres_server import dml_only_role

    open_support_tables("", url=postgres_url).close()  # the migration, by the owner
    with dml_only_role(postgres_url, "desk_clinics", "desk_exchanges", "desk_audit") as url:
        s = open_support_tables("", url=url)
        assert s.start_test(OID, actor="alice").state == support_tables.TESTING
        s.close()
