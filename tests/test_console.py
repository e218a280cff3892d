"""The support console without a browser: every page needs a login, every write its CSRF token, actions are
keyed by ids the server checks, logins are limited, and what a page shows is masked and escaped."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lab.dev.config import write_dev_config
from services.console import auth
from services.console.app import Console, local_target, make_app
from services.console.index import DeadLetterIndex
from services.desk.replay import Summary
from services.lifecycle import open_store, support_tables
from services.pipeline.organizations import load_organizations
from tests.test_dlq_cmd import ORG, _letter

PASSWORD = "correct horse battery"
U1, U2 = "sender-0-5", "sender-0-6"  # the ids of the fixture's two dead letters
CRAFTED = "../api/dead-letters/sender-0-5/replay?"


@pytest.fixture(scope="module")
def organizations(tmp_path_factory):
    return load_organizations(write_dev_config(tmp_path_factory.mktemp("cfg"), oids=[ORG]))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def console(tmp_path, organizations):
    index = DeadLetterIndex({}, [])  # not started: the tests give it the dead letters
    index.add(
        [
            _letter("u1", at="2026-11-20T10:00:00Z", offset=5),
            _letter("u2", at="2026-11-21T10:00:00Z", offset=6, **{"emd-message-ids": "c,d"}),
        ]
    )
    replays = []

    def replay(filters, dry_run):
        replays.append((filters.local_uid, dry_run))
        return Summary(replayed=1, read=1), [f"replayed {filters.local_uid}"]

    clock = Clock()
    c = Console(
        index=index,
        lifecycle=open_store(tmp_path),
        tables=support_tables.open_support_tables(tmp_path),
        archive=None,
        organizations=lambda: organizations,
        readiness=lambda oid: [],
        replay=replay,
        sessions=auth.Sessions({"support": auth.hash_password(PASSWORD)}),
        limiter=auth.LoginLimiter(clock=clock),
        trusted_proxies=["127.0.0.0/8", "::1/128"],  # the test client stands for the TLS front
    )
    c.replays = replays
    c.clock = clock
    yield c
    c.lifecycle.close()
    c.tables.close()


class _Archive:
    def __init__(self, kept=None):
        self.kept = kept or {}

    def read(self, ids):
        return self.kept


def _run(console, scenario):
    if console.archive is None:
        console.archive = _Archive()

    async def go():
        async with TestClient(TestServer(make_app(console))) as client:
            return await scenario(client)

    return asyncio.run(go())


async def _login(client, user="support", password=PASSWORD, **headers) -> str:
    r = await client.post(
        "/login", data={"user": user, "password": password, "next": "/dead-letters"}, headers=headers
    )
    assert r.status == 200, await r.text()
    html = await r.text()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


# --- nothing without a login ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/dead-letters",
        f"/dead-letters/{U1}",
        "/documents/u1",
        "/clinics",
        "/certificates",
        "/audit",
        "/dead-letters?reason=REMD_REJECTED",
    ],
)
def test_an_anonymous_request_gets_the_login_page_and_nothing_else(console, path):
    """Every page, asked without a session, answers with the login form: no dead letter, staff name or OID."""
    console.tables.audit("clinic.promote", actor="alice", target=ORG)

    async def scenario(client):
        r = await client.get(path)
        html = await r.text()
        assert r.status == 200 and r.url.path == "/login" and 'id="login"' in html
        for shown in ("u1", "u2", "alice", ORG, "PERSON_NOT_FOUND", "Dead letters</a>"):
            assert shown not in html.replace(f'value="{path}"', ""), (
                shown
            )  # the login's next may echo the path

    _run(console, scenario)


def test_the_json_api_answers_401_without_a_login(console):
    """The JSON endpoints, reading or writing, answer 401 to an anonymous request."""

    async def scenario(client):
        for method, path in (
            ("GET", "/api/dead-letters"),
            ("GET", "/api/documents/u1"),
            ("POST", f"/api/dead-letters/{U1}/replay"),
            ("POST", f"/api/clinics/{ORG}/promote"),
        ):
            r = await client.request(method, path)
            assert r.status == 401 and (await r.json()) == {"error": "login required"}, path

    _run(console, scenario)
    assert console.replays == [] and console.tables.clinic(ORG).state == support_tables.ONBOARDING


def test_logged_in_pages_and_apis_read(console):
    """Logged in: dead letters (filtered by MessageID), one dead letter with its ticket, a document, clinics,
    certificates and the audit log answer."""

    async def scenario(client):
        await _login(client)
        listing = await (await client.get("/api/dead-letters", params={"messageId": "d"})).json()
        assert [(d["localUid"], d["id"]) for d in listing] == [("u2", U2)]
        newest = await (await client.get("/api/dead-letters")).json()
        assert [d["localUid"] for d in newest] == ["u2", "u1"]
        page = await (await client.get(f"/dead-letters/{U1}")).text()
        assert "Ticket to СТП ЕГИСЗ" in page and "MessageID запроса (из заголовка SOAP): b" in page
        assert "Preview replay" in page
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
        assert (await client.get("/dead-letters/u1")).status == 404  # a localUid is not a dead letter's id

    _run(console, scenario)


def test_writes_are_refused_without_a_login(console):
    """Replay and promote pages without a session: a redirect to the login, and nothing done."""

    async def scenario(client):
        r = await client.post(f"/dead-letters/{U1}/replay", data={"confirm": "yes"}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login")
        r = await client.post(f"/clinics/{ORG}/promote", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login")

    _run(console, scenario)
    assert console.replays == [] and console.tables.clinic(ORG).state == support_tables.ONBOARDING


def test_writes_are_refused_without_the_csrf_token(console):
    """A logged-in session without (or with a wrong) CSRF token is refused 403, and the refusal is audited."""

    async def scenario(client):
        await _login(client)
        r = await client.post(f"/dead-letters/{U1}/replay", data={"confirm": "yes", "csrf": "forged"})
        assert r.status == 403
        r = await client.post(f"/api/dead-letters/{U1}/replay")
        assert r.status == 403

    _run(console, scenario)
    assert console.replays == []
    assert console.tables.audit_log()[0].action == "console.csrf.refused"


def test_a_logged_in_replay_previews_then_replays_and_is_audited(console):
    """Preview is a dry run; the confirmed replay runs once and lands in the audit log with the user's name."""

    async def scenario(client):
        csrf = await _login(client)
        preview = await client.post(f"/dead-letters/{U1}/replay/preview", data={"csrf": csrf})
        assert preview.status == 200 and "Confirm replay of 1 record" in await preview.text()
        done = await client.post(f"/dead-letters/{U1}/replay", data={"csrf": csrf, "confirm": "yes"})
        assert done.status == 200 and "Replay done: 1 replayed" in await done.text()
        api = await client.post(f"/api/dead-letters/{U1}/replay", headers={"X-CSRF-Token": csrf})
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
        r = await client.post("/api/clinics/1.2.3/promote", headers={"X-CSRF-Token": csrf})
        assert r.status == 404  # not a configured clinic

    _run(console, scenario)
    assert console.tables.clinic(ORG).state == support_tables.ONBOARDING


# --- crafted strings in URLs -----------------------------------------------------------------------------


def test_a_crafted_local_uid_replays_nothing_else(console):
    """A dead letter whose localUid is ``../api/dead-letters/<id of u1>/replay?``: its page's preview form, as a
    browser resolves it, previews only itself, and u1 is never replayed; the crafted string as a URL id is 404."""
    console.index.add([_letter(CRAFTED, at="2026-11-22T10:00:00Z", offset=7)])

    async def scenario(client):
        csrf = await _login(client)
        page = await (await client.get("/dead-letters/sender-0-7")).text()
        action = re.search(r'<form method="post" action="([^"]+)/replay/preview"', page).group(1)
        assert action == "/dead-letters/sender-0-7"
        resolved = urljoin("http://console/dead-letters/sender-0-7", action + "/replay/preview")
        preview = await client.post(resolved.removeprefix("http://console"), data={"csrf": csrf})
        assert preview.status == 200
        actions = re.findall(r'<form method="post" action="([^"]+)"', await preview.text())
        confirm = next(a for a in actions if a.endswith("/replay"))
        assert confirm == "/dead-letters/sender-0-7/replay"
        done = await client.post(confirm, data={"csrf": csrf, "confirm": "yes"})
        assert done.status == 200
        for path in (  # the crafted string where an id goes, encoded as a link would carry it: not an id
            "/dead-letters/" + CRAFTED.replace("/", "%2F").replace("?", "%3F") + "/replay/preview",
            "/dead-letters/" + CRAFTED.replace("/", "%2F").replace("?", "%3F") + "/replay",
            "/api/dead-letters/u1/replay",
        ):
            r = await client.post(path, data={"csrf": csrf, "confirm": "yes"}, headers={"X-CSRF-Token": csrf})
            assert r.status == 404, path

    _run(console, scenario)
    assert console.replays == [(CRAFTED, True), (CRAFTED, False)]


def test_a_crafted_local_uid_cannot_reach_promote(console):
    """A localUid ``../clinics/<OID>/promote?`` on a dead letter's page and links promotes nothing."""
    crafted = f"../clinics/{ORG}/promote?"
    console.index.add([_letter(crafted, at="2026-11-22T10:00:00Z", offset=8)])

    async def scenario(client):
        csrf = await _login(client)
        for where in ("/dead-letters", "/dead-letters/sender-0-8"):
            page = await (await client.get(where)).text()
            for link in re.findall(r'(?:href|action)="([^"]+)"', page):
                # as a browser resolves it: percent-encoded slashes stay inside their segment
                segments = urlsplit(urljoin(f"http://console{where}", link)).path.split("/")
                assert "promote" not in segments and segments[1] != "clinics" or link == "/clinics", link
        history = re.search(r'href="(/documents/[^"]+)"', page).group(1)
        assert history == "/documents/..%2Fclinics%2F" + ORG + "%2Fpromote%3F"
        await client.post("/dead-letters/sender-0-8/replay/preview", data={"csrf": csrf})

    _run(console, scenario)
    assert console.tables.clinic(ORG).state == support_tables.ONBOARDING


def test_pages_escape_what_they_show_and_every_path_segment(console):
    """A dead letter whose fields carry HTML is shown as text, and its localUid is percent-encoded in links."""
    console.index.add([_letter('<script>x</script>"/..', at="2026-11-22T10:00:00Z", offset=9)])

    async def scenario(client):
        await _login(client)
        html = await (await client.get("/dead-letters")).text()
        assert "<script>x</script>" not in html and "&lt;script&gt;" in html
        page = await (await client.get("/dead-letters/sender-0-9")).text()
        assert 'href="/documents/%3Cscript%3Ex%3C%2Fscript%3E%22%2F..">history' in page

    _run(console, scenario)


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/dead-letters/sender-0-5", "/dead-letters/sender-0-5"),
        ("//evil.example/x", "/dead-letters"),
        ("/\\evil.example", "/dead-letters"),
        ("https://evil.example/", "/dead-letters"),
        ("javascript:alert(1)", "/dead-letters"),
        ("", "/dead-letters"),
    ],
)
def test_the_login_follows_next_only_to_a_path_of_the_console(target, expected):
    """``next`` is followed only when it is a local path; another site, a scheme or ``/\\`` goes to the start."""
    assert local_target(target) == expected


# --- logins ---------------------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_and_audited(console):
    """A wrong password gives no session cookie, and the failed login is in the audit log."""

    async def scenario(client):
        r = await client.post("/login", data={"user": "support", "password": "wrong"})
        assert r.status == 401 and "wrong user or password" in await r.text() and auth.COOKIE not in r.cookies

    _run(console, scenario)
    assert console.tables.audit_log()[0].action == "console.login.failed"


def test_ten_failures_lock_the_user_out_for_fifteen_minutes_even_with_the_right_password(console):
    """After 10 wrong passwords for a user (from several addresses), the right one is refused for 15 minutes,
    each failure and the lockout are audited, and after 15 minutes the right password logs in."""

    async def attempts(client, n, password, address):
        statuses = []
        for _ in range(n):
            r = await client.post(
                "/login",
                data={"user": "support", "password": password},
                headers={"X-Forwarded-For": address},
                allow_redirects=False,
            )
            statuses.append(r.status)
        return statuses

    async def scenario(client):
        # through the trusted front, each try comes from another client address: the user's count locks
        statuses = []
        for i in range(10):
            statuses += await attempts(client, 1, "wrong", f"203.0.113.{i}")
        assert statuses == [401] * 10
        assert await attempts(client, 1, PASSWORD, "198.51.100.1") == [429]
        console.clock.now += 14 * 60
        assert await attempts(client, 1, PASSWORD, "198.51.100.1") == [429]
        console.clock.now += 61
        assert await attempts(client, 1, PASSWORD, "198.51.100.1") == [303]

    _run(console, scenario)
    actions = [e.action for e in reversed(console.tables.audit_log(limit=100))]
    assert actions.count("console.login.failed") == 10
    assert actions.count("console.login.lockout") == 1 and actions.count("console.login.locked") == 2
    assert actions[-1] == "console.login"


def test_ten_failures_from_one_address_lock_that_address_whatever_the_user(console):
    """10 failures from one address with 10 different user names lock the address; another address still logs in."""

    async def scenario(client):
        for i in range(10):
            r = await client.post("/login", data={"user": f"guess{i}", "password": "x"})
            assert r.status == 401
        r = await client.post("/login", data={"user": "support", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 429

    _run(console, scenario)
    assert console.limiter.locked("support", "192.0.2.50") is None  # the user is not locked, the address is


def test_the_limiter_forgets_failures_older_than_its_window():
    """Failures spread over more than 15 minutes never add up to a lockout."""
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    for _ in range(20):
        assert limiter.failed("u", "a") is None
        clock.now += 100  # 9 failures in any 15 minutes
    assert limiter.locked("u", "a") is None


@pytest.mark.parametrize(
    "mode, headers, secure",
    [
        ("auto", {}, False),
        ("auto", {"X-Forwarded-Proto": "https"}, True),
        ("true", {}, True),
        ("false", {"X-Forwarded-Proto": "https"}, False),
    ],
)
def test_the_session_cookie_is_secure_behind_tls(console, mode, headers, secure):
    """The cookie is Secure when the request came over TLS through the trusted front, or when configured so."""
    console.secure_cookies = mode

    async def scenario(client):
        r = await client.post(
            "/login", data={"user": "support", "password": PASSWORD}, headers=headers, allow_redirects=False
        )
        cookie = r.headers["Set-Cookie"]
        assert ("Secure" in cookie) is secure and "HttpOnly" in cookie and "SameSite=Strict" in cookie

    _run(console, scenario)


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(console):
    """X-Forwarded-Proto and X-Forwarded-For from a peer that is not a trusted proxy change nothing."""
    console._proxies = ()

    async def scenario(client):
        r = await client.post(
            "/login",
            data={"user": "support", "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
            allow_redirects=False,
        )
        assert "Secure" not in r.headers["Set-Cookie"]

    _run(console, scenario)
    assert console.tables.audit_log()[0].detail["remote"] == "127.0.0.1"


def test_passwords_are_scrypt_hashes_checked_in_constant_time(tmp_path):
    """add_user stores an scrypt hash, never the password; verify accepts only the right one."""
    users = tmp_path / "users.json"
    auth.add_user(users, "alice", PASSWORD)
    stored = json.loads(users.read_text())["users"]["alice"]
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in users.read_text()
    assert auth.verify_password(PASSWORD, stored) and not auth.verify_password("nope", stored)
    assert not auth.verify_password(PASSWORD, "md5$x")


# --- the audit log and what pages show -----------------------------------------------------------------


def test_the_audit_page_is_paged_so_a_flood_hides_nothing(console):
    """120 failed logins after a real action: page 1 shows 50 entries and links older pages; the last holds it."""
    console.tables.promote(ORG, actor="alice", force=True)
    for i in range(120):
        console.tables.audit("console.login.failed", actor=f"bot{i}")

    async def scenario(client):
        await _login(client)
        first = await (await client.get("/audit")).text()
        assert first.count("console.login.failed") == 49 and 'id="older"' in first and "alice" not in first
        last = await (await client.get("/audit", params={"page": "3"})).text()
        assert "clinic.promote.forced" in last and "alice" in last and 'id="newer"' in last

    _run(console, scenario)


def test_kept_requests_show_no_signature_mchd_or_token_even_logged_in(console):
    """A kept SOAP request carrying a doctor's signature (their name and СНИЛС inside), an МЧД, the patient's
    name and N3's token is shown with those described or masked, never decoded or in clear."""
    from services.lifecycle.support_tables import Exchange
    from services.pipeline.exchanges import KeptExchange

    cert_text = "CN=Петров Пётр Петрович, SNILS=25463625426".encode()
    signature = base64.b64encode(b"\x30\x82" + cert_text * 20).decode()
    mchd = base64.b64encode(
        "<Доверенность><ФИО>Иванова Анна Сергеевна</ФИО></Доверенность>".encode() * 5
    ).decode()
    request = (
        f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r xmlns="urn:x">'
        f"<guid>8f1e7c2a-token-secret</guid><surname>Иванова</surname><FamilyName>Петров</FamilyName>"
        f"<Snils>25463625426</Snils><signature>{signature}</signature><mchd>{mchd}</mchd>"
        f"<comment>пациент Иванова Анна, д.р. 17.05.1980</comment></r></s:Body></s:Envelope>"
    ).encode()
    exchange = Exchange("b", "u1", "http://ips", "ref", None, 200, None)
    console.archive = _Archive({"b": KeptExchange(exchange, request, None)})

    async def scenario(client):
        await _login(client)
        page = await (await client.get(f"/dead-letters/{U1}")).text()
        assert "CMS signature or certificate (DER)" in page and "XML document" in page
        for leaked in (
            signature[:40],
            mchd[:40],
            "8f1e7c2a",
            "Иванова",
            "Петров",
            "25463625426",
            "17.05.1980",
        ):
            assert leaked not in page, leaked

    _run(console, scenario)
