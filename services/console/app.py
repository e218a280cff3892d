"""The support console: server-rendered pages (aiohttp + Jinja2, autoescaped) and their JSON endpoints.

Pages: dead letters (filters; detail with MessageIDs, code, hint, the masked request and answer of every
attempt, the ticket text, replay with a dry-run preview and a confirmation), one document's history,
clinics with their readiness and state (promote), certificates and МЧД that expire soon, the audit log.
JSON: ``GET /api/dead-letters`` (the filters as query parameters: stage, reason, code, category, org, kind,
since, until, messageId, localUid, limit), ``GET /api/documents/{localUid}``, ``POST
/api/dead-letters/{localUid}/replay`` and ``POST /api/clinics/{oid}/promote``.

Access (``services.console.auth``): reading needs nothing and shows masked data; every POST but the login
needs a session and its CSRF token, else 401/403 and nothing happens. Every action and every login attempt
goes to the desk's audit log. Blocking work (Kafka, stores, readiness checks) runs in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import jinja2
from aiohttp import web

from services.console.auth import COOKIE, SESSION_SECONDS, Session, Sessions
from services.console.index import DeadLetterIndex
from services.desk.case import Case, build_case, case_json
from services.desk.deadletters import Filters, iso
from services.desk.ticket import ticket_text
from services.logs import get_logger

if TYPE_CHECKING:
    from services.desk.readiness import Line
    from services.desk.replay import Summary
    from services.lifecycle import LifecycleStore
    from services.lifecycle.desk import DeskStore
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


@dataclass(kw_only=True)
class Console:
    """What the pages read and do; ``replay(filters, dry_run)`` → (``Summary``, lines)."""

    index: DeadLetterIndex
    lifecycle: LifecycleStore
    desk: DeskStore
    archive: ExchangeArchive
    organizations: Callable[[], OrganizationsConfig]  # the loaded organisations file (re-read per request)
    readiness: Callable[[str], list[Line]]  # oid → readiness lines
    replay: Callable[[Filters, bool], tuple[Summary, list[str]]]
    sessions: Sessions
    secure_cookies: bool = False


def _filters(q: Any) -> Filters:
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


def make_app(console: Console) -> web.Application:
    """The console's aiohttp application: every page and JSON endpoint behind the session middleware."""
    app = web.Application(middlewares=[_session_middleware(console)])
    h = _Handlers(console)
    app.router.add_get("/", h.root)
    app.router.add_get("/dead-letters", h.dead_letters)
    app.router.add_get("/dead-letters/{uid}", h.dead_letter)
    app.router.add_post("/dead-letters/{uid}/replay/preview", h.replay_preview)
    app.router.add_post("/dead-letters/{uid}/replay", h.replay)
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
    app.router.add_post("/api/dead-letters/{uid}/replay", h.api_replay)
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

    def page(self, request: web.Request, template: str, **context: Any) -> web.Response:
        html = self.env.get_template(template).render(
            session=request[SESSION],
            notice=request.query.get("notice"),
            error=context.pop("error", None),
            **context,
        )
        return web.Response(text=html, content_type="text/html", headers=_SECURITY_HEADERS)

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
            letters=[d.summary() for d in letters[:PAGE_LIMIT]],
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
            [d.summary() for d in self.console.index.query(filters, limit=max(1, limit))]
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
        case, ticket = await _run(self._case, request.match_info["uid"])
        if not case.dead_letters:
            raise web.HTTPNotFound(text=f"no dead letter for {request.match_info['uid']}")
        return self.page(request, "dead_letter.html", case=case_json(case), ticket=ticket)

    def _document(self, uid: str) -> dict[str, Any] | None:
        case, _ = self._case(uid)
        if case.document is None and not case.dead_letters:
            return None
        out = case_json(case)
        doc = case.document
        out["failure"] = (
            " ".join(x for x in (doc.failure_reason, doc.failure_code, doc.failure_message) if x)
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
            raise web.HTTPNotFound(text=f"no document {request.match_info['uid']}")
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
            c = console.desk.clinic(oid)
            out.append(
                {
                    "oid": oid,
                    "name": org.name,
                    "state": c.state,
                    "tested_at": iso(c.tested_at),
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
        entries = await _run(self.console.desk.audit_log)
        return self.page(
            request,
            "audit.html",
            entries=[
                {
                    "at": iso(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                }
                for e in entries
            ],
        )

    # --- login ------------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        return self.page(request, "login.html", next=request.query.get("next", "/dead-letters"))

    async def login(self, request: web.Request) -> web.Response:
        console = self.console
        form = await request.post()
        user = str(form.get("user", ""))
        found = await _run(console.sessions.login, user, str(form.get("password", "")))
        await _run(
            console.desk.audit,
            "console.login" if found else "console.login.failed",
            actor=user or "?",
            remote=request.remote,
        )
        if found is None:
            return self.page(
                request, "login.html", next=str(form.get("next", "/")), error="wrong user or password"
            )
        token, _ = found
        target = str(form.get("next") or "/dead-letters")
        response = web.HTTPSeeOther(target if target.startswith("/") and not target.startswith("//") else "/")
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=console.secure_cookies,
            max_age=SESSION_SECONDS,
            path="/",
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        self.console.sessions.logout(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/dead-letters")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- actions ------------------------------------------------------------------------------------
    async def replay_preview(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        summary, lines = await _run(self.console.replay, Filters(local_uid=uid), True)
        return self.page(
            request,
            "replay_preview.html",
            uid=uid,
            summary={"line": summary.line(dry_run=True), "replayed": summary.replayed},
            lines=lines,
        )

    async def _do_replay(self, request: web.Request) -> tuple[str, Summary]:
        uid = request.match_info["uid"]
        summary, _ = await _run(self.console.replay, Filters(local_uid=uid), False)
        actor = _actor(request)
        await _run(
            self.console.desk.audit,
            "dlq.replay",
            actor=actor,
            target=uid,
            replayed=summary.replayed,
            refused=summary.refused,
            via="console",
        )
        log.warning("dlq.replay", actor=actor, local_uid=uid, replayed=summary.replayed)
        return uid, summary

    async def replay(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("confirm") != "yes":
            raise web.HTTPBadRequest(text="replay needs the confirmation from its preview")
        uid, summary = await self._do_replay(request)
        raise web.HTTPSeeOther(f"/dead-letters/{uid}?notice=" + _q(f"Replay done: {summary.line()}"))

    async def api_replay(self, request: web.Request) -> web.Response:
        uid, summary = await self._do_replay(request)
        return web.json_response(
            {
                "localUid": uid,
                "replayed": summary.replayed,
                "refused": summary.refused,
                "summary": summary.line(),
            }
        )

    async def _do_promote(self, request: web.Request) -> tuple[str, str | None]:
        from services.lifecycle.desk import ClinicConflict

        oid = request.match_info["oid"]
        try:
            await _run(self.console.desk.promote, oid, actor=_actor(request))
            return oid, None
        except ClinicConflict as exc:
            await _run(self.console.desk.audit, "clinic.promote.refused", actor=_actor(request), target=oid)
            return oid, str(exc)

    async def promote(self, request: web.Request) -> web.Response:
        oid, refused = await self._do_promote(request)
        raise web.HTTPSeeOther(
            "/clinics?notice=" + _q(f"refused: {refused}" if refused else f"{oid} promoted")
        )

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
}


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _session_middleware(console: Console) -> Any:
    """Attach the session; refuse every write (POST) but the login without a session (401) and token (403)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        session = console.sessions.get(request.cookies.get(COOKIE))
        request[SESSION] = session
        if request.method not in ("GET", "HEAD") and request.path != "/login":
            if session is None:
                if request.path.startswith("/api/"):
                    return web.json_response({"error": "login required"}, status=401)
                raise (
                    web.HTTPSeeOther(f"/login?next={_q(request.path)}")
                    if request.path != "/logout"
                    else web.HTTPSeeOther("/dead-letters")
                )
            token = request.headers.get("X-CSRF-Token")
            if token is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form_token = (await request.post()).get("csrf")
                token = str(form_token) if form_token is not None else None
            if not Sessions.csrf_ok(session, token):
                await asyncio.to_thread(
                    console.desk.audit, "console.csrf.refused", actor=session.user, target=request.path
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
