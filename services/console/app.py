"""The support console: server-rendered pages (aiohttp + Jinja2, autoescaped) and their JSON endpoints.

Pages: dead letters (filters; detail with MessageIDs, code, hint, the masked request and answer of every
attempt, the ticket text, replay with a dry-run preview and a confirmation), one document's history,
clinics with their readiness and state (promote), certificates and МЧД that expire soon, the audit log
(paged). JSON: ``GET /api/dead-letters`` (the filters as query parameters: stage, reason, code, category,
org, kind, since, until, messageId, localUid, limit), ``GET /api/documents/{localUid}``, ``POST
/api/dead-letters/{id}/replay`` and ``POST /api/clinics/{oid}/promote``.

Access (``services.console.auth``): **every page needs a login** — an anonymous request gets the login page
(JSON: 401) and nothing else; every POST but the login needs its session's CSRF token too (403). Login
attempts are limited (``LoginLimiter``). Every action, every login, failure and lockout goes to the desk's
audit log. What a logged-in page shows is masked still: СНИЛС, names and birth dates in dead letters and
kept SOAP exchanges, and signatures, МЧД and documents carried as base64 are described by size, never shown.

URLs carry nothing a user wrote into them unescaped, and no action is keyed by a user's string:

* every path segment and query parameter a template writes goes through ``|seg`` / ``|query``
  (percent-encoding for its context) on top of HTML autoescaping;
* a dead letter is addressed by its id, ``<stage>-<partition>-<offset>`` (``letter_id``), which the server
  parses and finds in its own index before it does anything (404 otherwise); replaying it replays the
  dead letters of the localUid *that record* carries, so a crafted localUid such as
  ``../api/dead-letters/X/replay?`` can only ever replay itself;
* promote takes an OID the organisations file configures (404 otherwise);
* the login's ``next`` is followed only when it is a path of this console (``/…``, not ``//`` or ``/\\``).

Blocking work (Kafka, stores, readiness checks) runs in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from services.console.auth import COOKIE, SESSION_SECONDS, LoginLimiter, Session, Sessions
from services.console.index import DeadLetterIndex, letter_id
from services.desk.case import Case, build_case, case_json
from services.desk.deadletters import STAGE_OF_TOPIC, DeadLetter, Filters
from services.desk.ticket import ticket_text
from services.lifecycle.support_tables import AUDIT_PAGE
from services.logs import get_logger, mask_text
from services.timestamps import for_people

if TYPE_CHECKING:
    from services.desk.readiness import Line
    from services.desk.replay import Summary
    from services.lifecycle import LifecycleStore
    from services.lifecycle.support_tables import SupportTables
    from services.pipeline.exchanges import ExchangeArchive
    from services.pipeline.organizations import Organization, OrganizationsConfig

log = get_logger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
FILTER_FIELDS = (
    ("stage", "stage"),
    ("reason", "reason"),
    ("code", "РЭМД code"),
    ("category", "category"),
    ("org", "organisation OID"),
    ("kind", "kind"),
    ("since", "since (ISO)"),
    ("until", "until (ISO)"),
    ("messageId", "MessageID"),
    ("localUid", "localUid"),
)
PAGE_LIMIT = 500
SESSION: web.RequestKey[Session | None] = web.RequestKey("session")  # the request's Session, or None
EXPIRY_DAYS = 30
#: what an anonymous request may reach: the login form and its POST
PUBLIC_PATHS = frozenset({"/login"})
_LOCAL_PATH = re.compile(r"^/(?![/\\])[^\s\\]*$")


@dataclass(kw_only=True)
class Console:
    """What the pages read and do; ``replay(filters, dry_run)`` → (``Summary``, lines).

    ``secure_cookies``: "auto" (Secure when the request came over TLS), "true", "false" (or a bool).
    ``trusted_proxies``: addresses/networks whose X-Forwarded-For and X-Forwarded-Proto are believed.
    """

    index: DeadLetterIndex
    lifecycle: LifecycleStore
    tables: SupportTables
    archive: ExchangeArchive
    organizations: Callable[
        [], OrganizationsConfig
    ]  # the loaded organisations file (reloaded when it changes)
    readiness: Callable[[str], list[Line]]  # oid → readiness lines
    replay: Callable[[Filters, bool], tuple[Summary, list[str]]]
    sessions: Sessions
    secure_cookies: bool | str = "auto"
    trusted_proxies: Iterable[str] = ()
    limiter: LoginLimiter = field(default_factory=LoginLimiter)

    def __post_init__(self) -> None:
        self._proxies = tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies if p
        )

    def _from_proxy(self, request: web.Request) -> bool:
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(peer in net for net in self._proxies)

    def client_address(self, request: web.Request) -> str:
        """The client's address: the TCP peer, or the last X-Forwarded-For hop before our trusted proxies."""
        peer = request.remote or "?"
        if not self._from_proxy(request):
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        for hop in reversed(hops):
            try:
                if not any(ipaddress.ip_address(hop) in net for net in self._proxies):
                    return hop
            except ValueError:
                return hop
        return peer

    def cookie_secure(self, request: web.Request) -> bool:
        """Whether the session cookie gets ``Secure``: the setting, or (auto) whether the request came over TLS."""
        mode = str(self.secure_cookies).lower()
        if mode in ("true", "1", "yes"):
            return True
        if mode in ("false", "0", "no"):
            return False
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return request.secure or (self._from_proxy(request) and forwarded == "https")


def _filters(q: Mapping[str, str]) -> Filters:
    def when(name: str) -> dt.datetime | None:
        text = q.get(name)
        if not text:
            return None
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

    return Filters(
        stage=q.get("stage") or None,
        reason=q.get("reason") or None,
        code=q.get("code") or None,
        category=q.get("category") or None,
        organization=q.get("org") or None,
        kind=q.get("kind") or None,
        since=when("since"),
        until=when("until"),
        message_id=q.get("messageId") or None,
        local_uid=q.get("localUid") or None,
    )


def seg(value: object) -> str:
    """``value`` as one URL path segment: every character but the unreserved ones percent-encoded ('/' too)."""
    return quote(str(value), safe="")


def local_target(target: str | None, default: str = "/dead-letters") -> str:
    """``target`` when it is a path of this console, else ``default`` (no open redirect through ``next``)."""
    return target if target and _LOCAL_PATH.match(target) else default


def _summary(d: DeadLetter) -> dict[str, Any]:
    return {**d.summary(), "id": letter_id(d)}


def _with_ids(case: dict[str, Any]) -> dict[str, Any]:
    for d in case["deadLetters"]:
        d["id"] = f"{STAGE_OF_TOPIC.get(d['topic'], d['stage'])}-{d['partition']}-{d['offset']}"
    return case


def make_app(console: Console) -> web.Application:
    """The console's aiohttp application: every page and JSON endpoint behind the session middleware."""
    app = web.Application(middlewares=[_session_middleware(console)])
    h = _Handlers(console)
    app.router.add_get("/", h.root)
    app.router.add_get("/dead-letters", h.dead_letters)
    app.router.add_get("/dead-letters/{id}", h.dead_letter)
    app.router.add_post("/dead-letters/{id}/replay/preview", h.replay_preview)
    app.router.add_post("/dead-letters/{id}/replay", h.replay)
    app.router.add_get("/documents/{uid}", h.document)
    app.router.add_get("/clinics", h.clinics)
    app.router.add_post("/clinics/{oid}/promote", h.promote)
    app.router.add_get("/certificates", h.certificates)
    app.router.add_get("/audit", h.audit)
    app.router.add_get("/login", h.login_form)
    app.router.add_post("/login", h.login)
    app.router.add_post("/logout", h.logout)
    app.router.add_get("/api/dead-letters", h.api_dead_letters)
    app.router.add_get("/api/documents/{uid}", h.api_document)
    app.router.add_post("/api/dead-letters/{id}/replay", h.api_replay)
    app.router.add_post("/api/clinics/{oid}/promote", h.api_promote)
    return app


async def _run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Blocking work (Kafka, stores, readiness checks) in a thread, off the event loop."""
    return await asyncio.to_thread(fn, *args, **kw)


def _actor(request: web.Request) -> str:
    """The signed-in user of a write; the session middleware has refused every write without one."""
    session = request[SESSION]
    if session is None:
        raise web.HTTPUnauthorized(text="login required")
    return session.user


class _Handlers:
    """The console's routes: one method per page or endpoint, over one ``Console``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.env.filters["seg"] = seg
        self.env.filters["query"] = lambda params: urlencode(
            {k: v for k, v in dict(params).items() if v is not None}
        )

    def page(self, request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
        html = self.env.get_template(template).render(
            session=request[SESSION],
            notice=request.query.get("notice"),
            error=context.pop("error", None),
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", headers=_SECURITY_HEADERS)

    def letter(self, request: web.Request, *, api: bool = False) -> DeadLetter:
        """The dead letter the URL's id names, found in the index; 404 for anything else."""
        letter = self.console.index.by_id(request.match_info["id"])
        if letter is None:
            if api:
                raise web.HTTPNotFound(
                    text='{"error": "no such dead letter"}', content_type="application/json"
                )
            raise web.HTTPNotFound(text="no such dead letter")
        return letter

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dead-letters")

    # --- reading ----------------------------------------------------------------------------------
    async def dead_letters(self, request: web.Request) -> web.Response:
        try:
            filters = _filters(request.query)
        except ValueError:
            return self.page(
                request,
                "dead_letters.html",
                letters=[],
                truncated=False,
                fields=FILTER_FIELDS,
                query=request.query,
                error="since/until: not an ISO date-time",
            )
        letters = self.console.index.query(filters, limit=PAGE_LIMIT + 1)
        return self.page(
            request,
            "dead_letters.html",
            letters=[_summary(d) for d in letters[:PAGE_LIMIT]],
            truncated=len(letters) > PAGE_LIMIT,
            fields=FILTER_FIELDS,
            query=request.query,
        )

    async def api_dead_letters(self, request: web.Request) -> web.Response:
        try:
            filters = _filters(request.query)
            limit = int(request.query.get("limit", PAGE_LIMIT))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(
            [_summary(d) for d in self.console.index.query(filters, limit=max(1, limit))]
        )

    def _case(self, uid: str) -> tuple[Case, str]:
        console = self.console
        letters = console.index.query(Filters(local_uid=uid))
        case = build_case(uid, letters, lifecycle=console.lifecycle, archive=console.archive)
        ticket = ""
        if case.latest is not None:
            org = _organization(console, case.latest.organization)
            ticket = ticket_text(
                case.latest,
                attempts=case.attempts,
                organization_name=org.name if org else None,
                client_entity_id=org.remd.client_entity_id if org and org.remd else None,
            )
        return case, ticket

    async def dead_letter(self, request: web.Request) -> web.Response:
        letter = self.letter(request)
        case, ticket = await _run(self._case, letter.local_uid)
        return self.page(
            request,
            "dead_letter.html",
            case=_with_ids(case_json(case)),
            ticket=ticket,
            letter_id=letter_id(letter),
        )

    def _document(self, uid: str) -> dict[str, Any] | None:
        case, _ = self._case(uid)
        if case.document is None and not case.dead_letters:
            return None
        out = _with_ids(case_json(case))
        doc = case.document
        out["failure"] = (
            mask_text(" ".join(x for x in (doc.failure_reason, doc.failure_code, doc.failure_message) if x))
            if doc is not None
            else None
        )
        for a in out["attempts"]:  # the history page and API: no message bodies
            a.pop("request"), a.pop("response")
        for d in out["deadLetters"]:
            d.pop("event"), d.pop("headers")
        return out

    async def document(self, request: web.Request) -> web.Response:
        doc = await _run(self._document, request.match_info["uid"])
        if doc is None:
            raise web.HTTPNotFound(text="no such document")
        return self.page(request, "document.html", doc=doc)

    async def api_document(self, request: web.Request) -> web.Response:
        doc = await _run(self._document, request.match_info["uid"])
        if doc is None:
            return web.json_response({"error": "no such document"}, status=404)
        return web.json_response(doc)

    def _clinics(self) -> list[dict[str, Any]]:
        console = self.console
        config = console.organizations()
        out = []
        for oid, org in sorted(config.organizations.items()):
            c = console.tables.clinic(oid)
            out.append(
                {
                    "oid": oid,
                    "name": org.name,
                    "state": c.state,
                    "tested_at": for_people(c.tested_at),
                    "lines": console.readiness(oid),
                }
            )
        return out

    async def clinics(self, request: web.Request) -> web.Response:
        return self.page(request, "clinics.html", clinics=await _run(self._clinics))

    async def certificates(self, request: web.Request) -> web.Response:
        return self.page(
            request, "certificates.html", rows=await _run(_expiring, self.console), days=EXPIRY_DAYS
        )

    async def audit(self, request: web.Request) -> web.Response:
        try:
            number = max(1, int(request.query.get("page", "1")))
        except ValueError:
            number = 1
        total = await _run(self.console.tables.audit_count)
        pages = max(1, -(-total // AUDIT_PAGE))
        number = min(number, pages)
        entries = await _run(
            self.console.tables.audit_log, limit=AUDIT_PAGE, offset=(number - 1) * AUDIT_PAGE
        )
        return self.page(
            request,
            "audit.html",
            entries=[
                {
                    "at": for_people(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                }
                for e in entries
            ],
            number=number,
            pages=pages,
            total=total,
        )

    # --- login ------------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        return self.page(request, "login.html", next=local_target(request.query.get("next")))

    async def login(self, request: web.Request) -> web.Response:
        console = self.console
        form = await request.post()
        user = str(form.get("user", ""))[:100]
        target = local_target(str(form.get("next") or ""))
        address = console.client_address(request)
        locked = console.limiter.locked(user, address)
        if locked is not None:
            await _run(
                console.tables.audit, "console.login.locked", actor=user or "?", remote=address, locked=locked
            )
            log.warning("console login refused: locked out", user=user, remote=address, locked=locked)
            return self.page(
                request,
                "login.html",
                status=429,
                next=target,
                error="too many failed logins: try again in 15 minutes",
            )
        found = await _run(console.sessions.login, user, str(form.get("password", "")))
        if found is None:
            await self._failed(user, address)
            return self.page(request, "login.html", status=401, next=target, error="wrong user or password")
        console.limiter.succeeded(user)
        await _run(console.tables.audit, "console.login", actor=user, remote=address)
        token, _ = found
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=console.cookie_secure(request),
            max_age=SESSION_SECONDS,
            path="/",
        )
        raise response

    async def _failed(self, user: str, address: str) -> None:
        """A wrong password: counted, audited and logged; the lockout it may start too."""
        console = self.console
        newly = console.limiter.failed(user, address)
        await _run(console.tables.audit, "console.login.failed", actor=user or "?", remote=address)
        log.warning("console login failed", user=user, remote=address)
        if newly is not None:
            await _run(
                console.tables.audit, "console.login.lockout", actor=user or "?", remote=address, locked=newly
            )
            log.warning("console login locked out for 15 minutes", user=user, remote=address, locked=newly)

    async def logout(self, request: web.Request) -> web.Response:
        self.console.sessions.logout(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- actions ------------------------------------------------------------------------------------
    async def replay_preview(self, request: web.Request) -> web.Response:
        letter = self.letter(request)
        summary, lines = await _run(self.console.replay, Filters(local_uid=letter.local_uid), True)
        return self.page(
            request,
            "replay_preview.html",
            uid=letter.local_uid,
            letter_id=letter_id(letter),
            summary={"line": summary.line(dry_run=True), "replayed": summary.replayed},
            lines=lines,
        )

    async def _do_replay(self, request: web.Request, *, api: bool = False) -> tuple[DeadLetter, Summary]:
        letter = self.letter(request, api=api)
        uid = letter.local_uid
        summary, _ = await _run(self.console.replay, Filters(local_uid=uid), False)
        actor = _actor(request)
        await _run(
            self.console.tables.audit,
            "dlq.replay",
            actor=actor,
            target=uid,
            deadLetter=letter_id(letter),
            replayed=summary.replayed,
            refused=summary.refused,
            via="console",
        )
        log.warning("dlq.replay", actor=actor, local_uid=uid, replayed=summary.replayed)
        return letter, summary

    async def replay(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("confirm") != "yes":
            raise web.HTTPBadRequest(text="replay needs the confirmation from its preview")
        letter, summary = await self._do_replay(request)
        raise web.HTTPSeeOther(
            f"/dead-letters/{seg(letter_id(letter))}?"
            + urlencode({"notice": f"Replay done: {summary.line()}"})
        )

    async def api_replay(self, request: web.Request) -> web.Response:
        letter, summary = await self._do_replay(request, api=True)
        return web.json_response(
            {
                "id": letter_id(letter),
                "localUid": letter.local_uid,
                "replayed": summary.replayed,
                "refused": summary.refused,
                "summary": summary.line(),
            }
        )

    async def _do_promote(self, request: web.Request) -> tuple[str, str | None]:
        from services.lifecycle.support_tables import ClinicConflict

        oid = request.match_info["oid"]
        config = await _run(self.console.organizations)
        if oid not in config.organizations:  # only a configured clinic, never a string from the URL as such
            raise web.HTTPNotFound(text="no such clinic")
        try:
            await _run(self.console.tables.promote, oid, actor=_actor(request))
            return oid, None
        except ClinicConflict as exc:
            await _run(self.console.tables.audit, "clinic.promote.refused", actor=_actor(request), target=oid)
            return oid, str(exc)

    async def promote(self, request: web.Request) -> web.Response:
        oid, refused = await self._do_promote(request)
        notice = f"refused: {refused}" if refused else f"{oid} promoted"
        raise web.HTTPSeeOther("/clinics?" + urlencode({"notice": notice}))

    async def api_promote(self, request: web.Request) -> web.Response:
        oid, refused = await self._do_promote(request)
        if refused:
            return web.json_response({"oid": oid, "error": refused}, status=409)
        return web.json_response({"oid": oid, "state": "production"})


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _session_middleware(console: Console) -> Any:
    """Attach the session; anonymous requests reach the login only (pages: redirect there; JSON: 401); every
    write (POST) but the login needs the session's CSRF token (403)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        session = console.sessions.get(request.cookies.get(COOKIE))
        request[SESSION] = session
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        if session is None:
            if request.path.startswith("/api/"):
                return web.json_response({"error": "login required"}, status=401)
            if request.method in ("GET", "HEAD") and request.path != "/":
                raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
            raise web.HTTPSeeOther("/login")
        if request.method not in ("GET", "HEAD"):
            token = request.headers.get("X-CSRF-Token")
            if token is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form_token = (await request.post()).get("csrf")
                token = str(form_token) if form_token is not None else None
            if not Sessions.csrf_ok(session, token):
                await asyncio.to_thread(
                    console.tables.audit, "console.csrf.refused", actor=session.user, target=request.path
                )
                return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
        return await handler(request)

    return middleware


def _organization(console: Console, oid: str | None) -> Organization | None:
    try:
        return console.organizations().organizations.get(oid or "")
    except Exception:  # noqa: BLE001 - the ticket then names what the dead letter knows
        return None


class _Expiry(TypedDict):
    days: float
    what: str
    oid: str
    until: str
    detail: str


def _expiring(console: Console) -> list[_Expiry]:
    """Certificates and МЧД of every clinic, soonest expiry first (the page marks those within 30 days)."""
    from services.pipeline.signing import mchd_expiry

    now = dt.datetime.now(dt.UTC)
    config = console.organizations()
    rows: list[_Expiry] = []
    for org, role, cred in config.credentials():
        cert = cred.certificate
        rows.append(
            {
                "days": (cert.not_after - now).total_seconds() / 86400,
                "what": f"{role} certificate",
                "oid": org.oid,
                "until": f"{cert.not_after:%Y-%m-%d}",
                "detail": f"serial {cert.serial_number:x}",
            }
        )
    for org in config.organizations.values():
        if org.mchd is not None:
            rows.append(
                {
                    "days": (mchd_expiry(org.mchd.poa) - now).total_seconds() / 86400,
                    "what": "МЧД",
                    "oid": org.oid,
                    "until": org.mchd.poa.valid_until.isoformat(),
                    "detail": org.mchd.poa.number,
                }
            )
    rows.sort(key=lambda r: r["days"])
    return rows
