"""The support console without a browser: pages and JSON read openly; every write needs a login and its CSRF token."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lab.dev.config import write_dev_config
from services.console import auth
from services.console.app import Console, make_app
from services.console.index import DeadLetterIndex
from services.desk.replay import Summary
from services.lifecycle import open_store, support_tables
from services.pipeline.organizations import load_organizations
from tests.test_dlq_cmd import ORG, _letter

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def organizations(tmp_path_factory):
    return load_organizations(write_dev_config(tmp_path_factory.mktemp("cfg"), oids=[ORG]))


@pytest.fixture
def console(tmp_path, organizations):
    index = DeadLetterIndex({}, [])  # not started: the tests give it the dead letters
    index.add(
        [
            _letter("u1", at="2026-11-20T10:00:00Z"),
            _letter("u2", at="2026-11-21T10:00:00Z", **{"emd-message-ids": "c,d"}),
        ]
    )
    replays = []

    def replay(filters, dry_run):
        replays.append((filters.local_uid, dry_run))
        return Summary(replayed=1, read=1), ["replayed u1"]

    c = Console(
        index=index,
        lifecycle=open_store(tmp_path),
        tables=support_tables.open_support_tables(tmp_path),
        archive=None,
        organizations=lambda: organizations,
        readiness=lambda oid: [],
        replay=replay,
        sessions=auth.Sessions({"support": auth.hash_password(PASSWORD)}),
    )
    c.replays = replays
    yield c
    c.lifecycle.close()
    c.tables.close()


class _Archive:
    def read(self, ids):
        return {}


def _run(console, scenario):
    console.archive = _Archive()

    async def go():
        async with TestClient(TestServer(make_app(console))) as client:
            return await scenario(client)

    return asyncio.run(go())


async def _login(client) -> str:
    r = await client.post("/login", data={"user": "support", "password": PASSWORD, "next": "/dead-letters"})
    assert r.status == 200
    html = await r.text()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_pages_and_apis_read_without_a_login(console):
    """Dead letters (filtered by MessageID), one dead letter with its ticket, a document, clinics and audit all answer."""

    async def scenario(client):
        listing = await (await client.get("/api/dead-letters", params={"messageId": "d"})).json()
        assert [d["localUid"] for d in listing] == ["u2"]
        newest = await (await client.get("/api/dead-letters")).json()
        assert [d["localUid"] for d in newest] == ["u2", "u1"]
        page = await (await client.get("/dead-letters/u1")).text()
        assert "Ticket to СТП ЕГИСЗ" in page and "MessageID запроса (из заголовка SOAP): b" in page
        assert "log in" in page and "Preview replay" not in page
        doc = await client.get("/api/documents/u1")
        assert doc.status == 200 and (await doc.json())["deadLetters"][0]["messageId"] == "b"
        assert (await client.get("/api/documents/nothing")).status == 404
        for path in (
            "/dead-letters?reason=REMD_REJECTED",
            "/documents/u1",
            "/clinics",
            "/certificates",
            "/audit",
        ):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/api/dead-letters", params={"since": "yesterday"})).status == 400

    _run(console, scenario)


def test_writes_are_refused_without_a_login(console):
    """Replay and promote, page or API, without a session: 401 or a redirect to the login, and nothing done."""

    async def scenario(client):
        r = await client.post("/api/dead-letters/u1/replay")
        assert r.status == 401
        r = await client.post("/api/clinics/1.2/promote")
        assert r.status == 401
        r = await client.post("/dead-letters/u1/replay", data={"confirm": "yes"}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login")
        r = await client.post("/clinics/1.2/promote", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login")

    _run(console, scenario)
    assert console.replays == [] and console.tables.clinic("1.2").state == support_tables.ONBOARDING


def test_writes_are_refused_without_the_csrf_token(console):
    """A logged-in session without (or with a wrong) CSRF token is refused 403, and the refusal is audited."""

    async def scenario(client):
        await _login(client)
        r = await client.post("/dead-letters/u1/replay", data={"confirm": "yes", "csrf": "forged"})
        assert r.status == 403
        r = await client.post("/api/dead-letters/u1/replay")
        assert r.status == 403

    _run(console, scenario)
    assert console.replays == []
    assert console.tables.audit_log()[0].action == "console.csrf.refused"


def test_a_logged_in_replay_previews_then_replays_and_is_audited(console):
    """Preview is a dry run; the confirmed replay runs once and lands in the audit log with the user's name."""

    async def scenario(client):
        csrf = await _login(client)
        preview = await client.post("/dead-letters/u1/replay/preview", data={"csrf": csrf})
        assert preview.status == 200 and "Confirm replay of 1 record" in await preview.text()
        done = await client.post("/dead-letters/u1/replay", data={"csrf": csrf, "confirm": "yes"})
        assert done.status == 200 and "Replay done: 1 replayed" in await done.text()
        api = await client.post("/api/dead-letters/u1/replay", headers={"X-CSRF-Token": csrf})
        assert (await api.json())["replayed"] == 1

    _run(console, scenario)
    assert console.replays == [("u1", True), ("u1", False), ("u1", False)]
    actions = [(e.action, e.actor) for e in console.tables.audit_log()]
    assert ("dlq.replay", "support") in actions and ("console.login", "support") in actions


def test_promote_through_the_console_is_refused_before_a_test(console):
    """The console's promote obeys the same rule as the command: no successful test, no production (409)."""

    async def scenario(client):
        csrf = await _login(client)
        r = await client.post(f"/api/clinics/{ORG}/promote", headers={"X-CSRF-Token": csrf})
        assert r.status == 409 and "emd clinic test" in (await r.json())["error"]

    _run(console, scenario)
    assert console.tables.clinic(ORG).state == support_tables.ONBOARDING


def test_a_wrong_password_is_refused_and_audited(console):
    """A wrong password gives no session cookie, and the failed login is in the audit log."""

    async def scenario(client):
        r = await client.post("/login", data={"user": "support", "password": "wrong"})
        assert "wrong user or password" in await r.text() and auth.COOKIE not in r.cookies

    _run(console, scenario)
    assert console.tables.audit_log()[0].action == "console.login.failed"


def test_passwords_are_scrypt_hashes_checked_in_constant_time(tmp_path):
    """add_user stores an scrypt hash, never the password; verify accepts only the right one."""
    users = tmp_path / "users.json"
    auth.add_user(users, "alice", PASSWORD)
    stored = json.loads(users.read_text())["users"]["alice"]
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in users.read_text()
    assert auth.verify_password(PASSWORD, stored) and not auth.verify_password("nope", stored)
    assert not auth.verify_password(PASSWORD, "md5$x")


def test_pages_escape_what_they_show(console):
    """A dead letter whose fields carry HTML is shown as text, never as markup (autoescaping)."""
    console.index.add([_letter("<script>x</script>", at="2026-11-22T10:00:00Z")])

    async def scenario(client):
        html = await (await client.get("/dead-letters")).text()
        assert "<script>x</script>" not in html and "&lt;script&gt;" in html

    _run(console, scenario)
