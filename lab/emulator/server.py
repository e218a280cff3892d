"""The emulator's HTTP side: SOAP for ИПС/РЭМД, JSON for its own control API; ``Emulator`` starts and stops it.

Every POST outside ``/_emulator/`` is a SOAP request for РЭМД (the path does not matter, as behind an
ИПС address). In order: outage → fault rules → WS-Security (the signature verifies, the certificate
belongs to the ``clientEntityId``; else an ИПС AuthorizationFault) → the operation
(``registerDocument``, ``searchRegistryItem``, ``getRegistryItem``). An accepted ``registerDocument``
is handed to a worker thread (``callbacks.Processor``) and answered ``status=success`` at once; so is a
``getRegistryItem``, whose record (or ``REGISTRY_ITEM_NOT_FOUND``) then goes to the request's ``wsa:ReplyTo``
as a ``getRegistryItemResult`` callback, as РЭМД answers it asynchronously.

Control API (JSON)::

    GET  /_emulator/health        {"status": "ok", "scenario": …, "down": …}
    GET  /_emulator/registry      registered documents
    GET  /_emulator/requests      the request log (?operation=registerDocument)
    GET  /_emulator/rules         the active fault rules
    POST /_emulator/rules         {"rules": [Rule…], "replace": false, "seed": 7}
    POST /_emulator/reset         empty registry and log, the scenario's rules again
    POST /_emulator/scenario      {"name": "ok"}: switch scenario (its rules and rejections), registry kept
    GET  /_emulator/certificate   the emulator's own certificate (PEM), to trust its callbacks
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from lab.dev.pki import DevCA, SubjectInfo
from lab.emulator import checks
from lab.emulator.callbacks import Job, Processor, RegistryQuestion, record_item
from lab.emulator.faults import Decision, FaultInjector, Outage, Rule, Scenario
from lab.emulator.faults import scenario as make_scenario
from lab.emulator.n3 import N3Face
from lab.emulator.registry import Registry
from lab.emulator.state import StateDir
from lab.emulator.systems import System
from producer.errors import PermanentError
from producer.ids import normalize_message_id
from producer.xmlsafe import parse_xml
from services import telemetry
from services.crypto.certificates import Certificate
from services.logs import get_logger
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.envelope import is_anonymous
from services.remd.soap import RemdError
from services.remd.wssec import verify_envelope

__all__ = ["Emulator", "MAX_REQUEST_BYTES"]

#: larger requests are refused with HTTP 413 (a registerDocument carries signatures, not the file)
MAX_REQUEST_BYTES = 20 * 1024 * 1024
_MALFORMED = b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><regis'


#: operation → its parser (each request is parsed once, in ``Emulator._dispatch``); each returns its
#: operation's request, getRegistryItem's the pair (emdrId, headers)
_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "registerDocument": soap.parse_register_document,
    "searchRegistryItem": soap.parse_search_request,
    "getRegistryItem": soap.parse_get_registry_item,
}


def _injected_code(kind: str, rule: Rule) -> str:
    """The РЭМД code an injected synchronous error answers with: the rule's, else the kind's own."""
    return rule.code or {"rate_limit": "RATE_LIMIT", "refuse": "VALIDATION_ERROR"}.get(kind, "INTERNAL_ERROR")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # the request log is the emulator's registry, not stderr

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.emulator._control_get(self)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        emu = self.server.emulator
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self.send_json({"error": "Content-Length missing, invalid or too large"}, status=413)
            return
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        if path.startswith("/_emulator/"):
            emu._control_post(self, body)
        elif path.startswith("/n3/"):  # the N3.Health face, in front of the same registry
            with telemetry.server_span(f"emulator n3 {path.rsplit('/', 1)[-1]}", headers=self.headers):
                # the request's header Message answers get() without regard to case: all the N3 face asks of it
                status, answer, content_type = emu.n3.handle(path, body, self.headers)  # type: ignore[arg-type]
            self.send_bytes(answer, status=status, content_type=content_type)
        else:
            emu._soap(self, body)

    # --- answers ---------------------------------------------------------------------------------

    def send_bytes(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = envelope.content_type("1.2"),
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, data: Any, *, status: int = 200) -> None:
        self.send_bytes(
            json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"),
            status=status,
            content_type="application/json; charset=utf-8",
        )

    def reset_connection(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), which the client sees as 'connection reset by peer'."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass


def _peek(data: bytes) -> tuple[str, str | None, str | None, str]:
    """(operation, MessageID, localUid, SOAP version) read loosely, for fault matching and the log."""
    try:
        root = parse_xml(data)
    except PermanentError:
        return "unknown", None, None, "1.2"
    version = "1.1" if etree.QName(root).namespace == n.NS_SOAP11 else "1.2"
    body = next((c for c in root if isinstance(c.tag, str) and etree.QName(c).localname == "Body"), None)
    payload = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    operation = {
        n.REGISTER_DOCUMENT_REQUEST: "registerDocument",
        n.SEARCH_REGISTRY_ITEM_REQUEST: "searchRegistryItem",
        n.GET_REGISTRY_ITEM_REQUEST: "getRegistryItem",
    }.get(etree.QName(payload).localname if payload is not None else "", "unknown")
    mid = root.find(f".//{{{n.NS_WSA}}}MessageID")
    uid = payload.find(f"{{*}}{n.LOCAL_UID}") if payload is not None else None
    return (
        operation,
        mid.text.strip() if mid is not None and mid.text else None,
        uid.text.strip() if uid is not None and uid.text else None,
        version,
    )


class Emulator:
    """ИПС + РЭМД on one HTTP port, in a background thread.

    ``scenario``: a name from ``faults.SCENARIOS`` or a ``Scenario``. ``systems``: the registered ИС.
    ``key``/``certificate``: what the emulator signs its answers and callbacks with (default: a fresh
    development certificate from ``lab.dev.pki``). ``seed``: the fault RNG's seed. ``outage_*``:
    the ``outage`` scenario's length, trigger (``first-request`` | ``start``) and mode (``503`` |
    ``refused``). ``workers``: threads for file pulls and callbacks. ``state_dir``: keep the registry and
    accepted requests across restarts (``lab.emulator.state``). ``accredited``: the CAs signers'
    certificates must chain to (empty: any). ``n3_tokens``: ``{token: ЛПУ id}`` of the N3 face's clients
    (``/n3/…``, ``lab.emulator.n3``); ``n3_delay``: seconds from a taken N3 case to its registration.
    The remaining keywords tune the МИС-facing HTTP client (``callbacks.Processor``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scenario: str | Scenario = "ok",
        systems: Iterable[System] = (),
        key: Any = None,
        certificate: Certificate | None = None,
        seed: int = 0,
        outage_seconds: float = 30.0,
        outage_from: str = "first-request",
        outage_mode: str = "503",
        workers: int = 16,
        http_timeout: float = 10.0,
        file_attempts: int = 3,
        callback_attempts: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        state_dir: str | os.PathLike | None = None,
        accredited: Iterable[Certificate] = (),
        n3_tokens: Mapping[str, str] | None = None,
        n3_delay: float = 1.0,
    ) -> None:
        self.host, self._port = host, port
        self.scenario = scenario if isinstance(scenario, Scenario) else make_scenario(scenario)
        self.systems: dict[str, System] = {s.client_entity_id: s for s in systems}
        if key is None or certificate is None:
            ca = DevCA.create("РЭМД emulator CA")
            key, certificate = ca.issue(
                subject=SubjectInfo(
                    family="", common_name="ИПС ЕГИСЗ (эмулятор)", org="emd-pipeline emulator"
                )
            )
        self.key, self.certificate = key, certificate
        self.state = StateDir(state_dir) if state_dir is not None else None
        self.registry = Registry(state=self.state)
        self.faults = FaultInjector(self.scenario.rules, seed=seed)
        self._seed = seed
        self.outage = (
            Outage(seconds=outage_seconds, start=outage_from, mode=outage_mode)
            if self.scenario.outage
            else None
        )
        self._stop = threading.Event()
        self.processor = Processor(
            registry=self.registry,
            key=key,
            certificate=certificate,
            stop=self._stop,
            rejection_rate=self.scenario.rejection_rate,
            http_timeout=http_timeout,
            file_attempts=file_attempts,
            callback_attempts=callback_attempts,
            backoff=backoff,
            backoff_max=backoff_max,
            variants=self.scenario.variants,
            accredited=tuple(accredited),
        )
        self.n3 = N3Face(
            registry=self.registry,
            faults=self.faults,
            tokens=n3_tokens or {},
            later=self.processor.later,
            delay=n3_delay,
            rejection_rate=self.scenario.rejection_rate,
        )
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.log = get_logger(__name__)

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The SOAP endpoint (any path works; this is what a МИС puts in wsa:To)."""
        return f"http://{self.host}:{self._port}/emdr"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def add_system(self, system: System) -> None:
        with self._lock:
            self.systems[system.client_entity_id] = system

    def _bind(self) -> _Server:
        httpd = _Server((self.host, self._port), _Handler)
        httpd.emulator = self
        self._port = httpd.server_address[1]
        return httpd

    def _serve(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="emd-emulator-http", daemon=True
        )
        self._thread.start()

    def start(self) -> Emulator:
        """Bind and serve in a daemon thread; returns self (``with Emulator(...).start() as emu``)."""
        self._stop.clear()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="emd-emulator-job")
        httpd = self._bind()
        if self.outage is not None:
            self.outage.restart()
            if self.outage.start == "start" and self.outage.mode == "refused":
                httpd.server_close()  # port known, nothing listening until the outage is over
                self._schedule_reopen()
                return self
        self._serve(httpd)
        self._resume()
        return self

    def _resume(self) -> None:
        """Finish the registrations a previous run accepted (``state_dir``), as РЭМД would after a restart."""
        for pending in self.state.pending() if self.state is not None else ():
            try:
                request = soap.parse_register_document(pending.body)
            except PermanentError:
                StateDir.finished(pending.path)
                continue
            system = self.systems.get(pending.client_entity_id)
            if system is None:
                StateDir.finished(pending.path)
                continue
            entry = self.registry.log_request(
                "registerDocument",
                message_id=request.headers.message_id,
                local_uid=request.registration.local_uid,
                outcome="accepted",
                client_entity_id=pending.client_entity_id,
                organization=request.registration.organization,
                reply_to=request.headers.reply_to,
                faults=["resumed"],
            )
            job = Job(
                request=request,
                system=system,
                entry=entry,
                arrival=pending.arrival,
                decision=Decision(),
                journal=pending.path,
            )
            assert self._executor is not None
            self._executor.submit(self.processor.process, job)

    def stop(self) -> None:
        """Stop serving, abandon pending callbacks (their waits are interrupted) and free the port."""
        self._stop.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.processor.close()

    def __enter__(self) -> Emulator:
        return self if self._executor is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _go_down(self) -> None:
        """The ``refused`` outage: stop listening now, listen again when the outage is over."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self._schedule_reopen()

    def _schedule_reopen(self) -> None:
        def reopen() -> None:
            if self._stop.wait(self.outage.remaining() if self.outage else 0):
                return
            for _ in range(50):  # the port may linger briefly after close
                try:
                    self._serve(self._bind())
                    return
                except OSError:
                    time.sleep(0.1)

        threading.Thread(target=reopen, name="emd-emulator-reopen", daemon=True).start()

    def reset(self) -> None:
        """Empty registry and request log; the scenario's rules (fresh counters) and seed again."""
        self.registry.reset()
        self.n3.reset()
        try:
            fresh = make_scenario(self.scenario.name)
        except ValueError:  # a caller-made Scenario: its rules as they are (counters not reset)
            fresh = self.scenario
        self.faults.replace(fresh.rules, seed=self._seed)
        if self.outage is not None:
            self.outage.restart()

    def switch_scenario(self, name: str) -> None:
        """Another named scenario from now on (rules, rejection rate); the registry and log are kept, so a
        support test can fix "РЭМД rejects" and replay into the same registry. Outage is fixed at start."""
        fresh = make_scenario(name)
        self.scenario = fresh
        self.processor.rejection_rate = fresh.rejection_rate
        self.n3.rejection_rate = fresh.rejection_rate
        self.faults.replace(fresh.rules, seed=self._seed)

    # --- control API ---------------------------------------------------------------------------

    def _control_get(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query)
        if url.path == "/_emulator/health":
            h.send_json(
                {
                    "status": "ok",
                    "scenario": self.scenario.name,
                    "down": bool(self.outage and self.outage.down()),
                    "registered": len(self.registry.records()),
                    "requests": len(self.registry.requests()),
                }
            )
        elif url.path == "/_emulator/registry":
            h.send_json([r.to_json() for r in self.registry.records()])
        elif url.path == "/_emulator/requests":
            ops = query.get("operation")
            op = ops[0] if ops else None
            h.send_json([e.to_json() for e in self.registry.requests(operation=op)])
        elif url.path == "/_emulator/rules":
            h.send_json({"seed": self.faults.seed, "rules": [r.to_json() for r in self.faults.rules()]})
        elif url.path == "/_emulator/certificate":
            h.send_bytes(self.certificate.to_pem(), content_type="application/x-pem-file")
        else:
            h.send_json({"error": f"no such resource {url.path}"}, status=404)

    def _control_post(self, h: _Handler, body: bytes) -> None:
        path = urlsplit(h.path).path
        if path == "/_emulator/reset":
            self.reset()
            h.send_json({"status": "reset"})
            return
        if path == "/_emulator/scenario":
            try:
                self.switch_scenario(str(json.loads(body or b"{}").get("name")))
            except (ValueError, AttributeError) as exc:
                h.send_json({"error": str(exc)}, status=400)
                return
            h.send_json({"scenario": self.scenario.name})
            return
        if path != "/_emulator/rules":
            h.send_json({"error": f"no such resource {path}"}, status=404)
            return
        try:
            data = json.loads(body or b"{}")
            rules = [Rule.from_json(r) for r in data.get("rules", [])]
            seed = data.get("seed")
            if data.get("replace"):
                self.faults.replace(rules, seed=seed)
            else:
                self.faults.add(rules)
                if seed is not None:
                    self.faults.replace(self.faults.rules(), seed=int(seed))
        except (ValueError, TypeError, AttributeError) as exc:
            h.send_json({"error": str(exc)}, status=400)
            return
        h.send_json({"rules": len(self.faults.rules())})

    # --- SOAP ----------------------------------------------------------------------------------

    def _soap(self, h: _Handler, body: bytes) -> None:
        arrival = dt.datetime.now(dt.UTC)
        operation, message_id, local_uid, version = _peek(body)
        attributes = {
            telemetry.MESSAGE_ID: normalize_message_id(message_id) if message_id else None,
            telemetry.LOCAL_UID: local_uid,
            "rpc.method": operation,
        }
        with telemetry.server_span(f"emulator {operation}", headers=h.headers, attributes=attributes):
            self._answer_soap(h, body, arrival, operation, message_id, local_uid, version)

    def _answer_soap(
        self,
        h: _Handler,
        body: bytes,
        arrival: dt.datetime,
        operation: str,
        message_id: str | None,
        local_uid: str | None,
        version: str,
    ) -> None:
        if self.outage is not None:
            if self.outage.start == "first-request":
                self.outage.begin()
            if self.outage.down():
                self.registry.log_request(
                    operation,
                    message_id=message_id,
                    local_uid=local_uid,
                    outcome="injected:outage",
                    faults=["outage"],
                )
                if self.outage.mode == "refused":
                    h.reset_connection()
                    threading.Thread(target=self._go_down, daemon=True).start()
                else:
                    h.send_bytes(
                        "ИПС временно недоступна".encode(),
                        status=503,
                        content_type="text/plain; charset=utf-8",
                        extra={"Retry-After": str(max(1, int(self.outage.remaining())))},
                    )
                return
        decision = self.faults.decide(operation=operation, message_id=message_id, local_uid=local_uid)
        entry = self.registry.log_request(
            operation, message_id=message_id, local_uid=local_uid, faults=decision.kinds
        )
        rule, kind = decision.sync, decision.sync_kind
        if rule is not None and kind is not None:
            if kind == "latency":
                if self._stop.wait(rule.delay):
                    return
                kind = None
            elif kind in ("http_error", "timeout", "reset", "malformed") and not rule.process:
                self.registry.update(entry, outcome=f"injected:{kind}")
                self._fail(h, kind, rule)
                return
            elif kind in ("rate_limit", "refuse", "soap_fault"):
                self.registry.update(
                    entry, outcome=f"injected:{kind}", sync_codes=[_injected_code(kind, rule)]
                )
                h.send_bytes(
                    self._injected_answer(operation, kind, rule, message_id, version),
                    status=500 if kind == "soap_fault" else 200,
                    content_type=envelope.content_type(version),
                )
                return

        status, answer = self._dispatch(operation, body, entry, decision, arrival, version)
        if (
            rule is not None and kind is not None
        ):  # a fault with process=True: the work is done, the answer is lost
            self.registry.update(entry, outcome=f"{entry.outcome}+injected:{kind}")
            self._fail(h, kind, rule)
            return
        h.send_bytes(answer, status=status, content_type=envelope.content_type(version))

    def _fail(self, h: _Handler, kind: str, rule: Rule) -> None:
        if kind == "http_error":
            h.send_bytes(
                f"HTTP {rule.status} (injected)".encode(),
                status=rule.status,
                content_type="text/plain; charset=utf-8",
            )
        elif kind == "malformed":
            h.send_bytes(_MALFORMED, status=200)
        elif kind == "timeout":
            self._stop.wait(rule.delay)
            h.reset_connection()
        else:  # reset
            h.reset_connection()

    def _injected_answer(
        self, operation: str, kind: str, rule: Rule, message_id: str | None, version: str
    ) -> bytes:
        relates = message_id or ""
        if kind == "soap_fault":
            return soap.build_fault(
                code="Server",
                reason="Внутренняя ошибка сервиса",
                detail_code=rule.code or "INTERNAL_ERROR",
                detail_message="Внутренняя ошибка",
                ips_fault="SystemFault",
                relates_to=message_id,
                soap_version=version,
                key=self.key,
                certificate=self.certificate,
            )
        error = (
            RemdError(_injected_code(kind, rule), "Документ не принят (внедрённый отказ эмулятора)")
            if kind == "refuse"
            else RemdError(
                "RATE_LIMIT",
                "Доступ к сервису временно запрещён — превышен лимит запросов. "
                "Повторите попытку через минуту или позднее",
            )
        )
        if operation == "searchRegistryItem":
            return soap.build_search_response(
                relates_to=relates,
                status=n.STATUS_ERROR,
                errors=[error],
                key=self.key,
                certificate=self.certificate,
            )
        if operation == "getRegistryItem":
            return soap.build_registry_item_response(
                relates_to=relates,
                status=n.STATUS_ERROR,
                errors=[error],
                key=self.key,
                certificate=self.certificate,
            )
        return soap.build_sync_answer(
            relates_to=relates,
            status=n.STATUS_ERROR,
            errors=[error],
            soap_version=version,
            key=self.key,
            certificate=self.certificate,
        )

    def _without_reply_to(self, headers: soap.Headers, entry: Any, version: str) -> tuple[int, bytes] | None:
        """The fault for a request whose answer has nowhere to go (no ReplyTo, an anonymous one, not HTTP), or
        None: РЭМД answers every such request on the callback."""
        reply_to = headers.reply_to
        if reply_to and not is_anonymous(reply_to) and reply_to.startswith(("http://", "https://")):
            return None
        self.registry.update(entry, outcome="fault", sync_codes=["VALIDATION_ERROR"])
        return self._fault(
            "ValidationFault",
            "wsa:ReplyTo должен содержать адрес сервиса ИС для обратного вызова",
            relates_to=headers.message_id,
            version=version,
            detail_code="VALIDATION_ERROR",
        )

    def _fault(
        self,
        ips_fault: str,
        message: str,
        *,
        code: str = "Client",
        relates_to: str | None,
        version: str,
        detail_code: str | None = None,
    ) -> tuple[int, bytes]:
        return 500, soap.build_fault(
            code=code,
            reason=message,
            ips_fault=ips_fault,
            detail_message=message,
            detail_code=detail_code,
            relates_to=relates_to,
            soap_version=version,
            key=self.key,
            certificate=self.certificate,
        )

    def _authorize(self, body: bytes, client_entity_id: str | None) -> System | str:
        """The registered ИС that signed this message, or why not (an AuthorizationFault text)."""
        if not client_entity_id:
            return "Не указан clientEntityId (transportHeader/authInfo)"
        with self._lock:
            system = self.systems.get(client_entity_id)
        if system is None:
            return f"Информационная система [{client_entity_id}] не зарегистрирована"
        try:
            verified = verify_envelope(body)
        except PermanentError as exc:
            return f"Ошибка проверки подписи WS-Security ({exc.reason}): {exc.message}"
        if not system.trusts(verified.certificate):
            return f"Сертификат подписи не принадлежит информационной системе [{client_entity_id}]"
        return system

    def _dispatch(
        self, operation: str, body: bytes, entry: Any, decision: Decision, arrival: dt.datetime, version: str
    ) -> tuple[int, bytes]:
        relates = entry.message_id
        if operation == "unknown":
            self.registry.update(entry, outcome="fault", sync_codes=["VALIDATION_ERROR"])
            return self._fault(
                "ValidationFault",
                "Сообщение не является запросом к сервису РЭМД",
                relates_to=relates,
                version=version,
                detail_code="VALIDATION_ERROR",
            )
        try:
            parsed = _PARSERS[operation](body)
        except PermanentError as exc:
            self.registry.update(entry, outcome="fault", sync_codes=["VALIDATION_ERROR"])
            return self._fault(
                "ValidationFault",
                f"Запрос не соответствует схеме: {exc.message}",
                relates_to=relates,
                version=version,
                detail_code="VALIDATION_ERROR",
            )
        headers = parsed[1] if operation == "getRegistryItem" else parsed.headers
        self.registry.update(entry, client_entity_id=headers.client_entity_id, reply_to=headers.reply_to)
        system = self._authorize(body, headers.client_entity_id)
        if isinstance(system, str):
            self.registry.update(entry, outcome="fault", sync_codes=["AuthorizationFault"])
            return self._fault("AuthorizationFault", system, relates_to=relates, version=version)
        if operation == "registerDocument":
            return self._register(parsed, entry, system, decision, arrival, version, body)
        if operation == "searchRegistryItem":
            return self._search(parsed, entry)
        emdr_id, item_headers = parsed
        return self._get_item(emdr_id, item_headers, entry, system, decision, version)

    def _register(
        self,
        request: soap.RegisterRequest,
        entry: Any,
        system: System,
        decision: Decision,
        arrival: dt.datetime,
        version: str,
        body: bytes,
    ) -> tuple[int, bytes]:
        reg, headers = request.registration, request.headers
        self.registry.update(entry, organization=reg.organization)
        if (refused := self._without_reply_to(headers, entry, version)) is not None:
            return refused
        errors = checks.check_request(reg, now=arrival)
        if errors:
            self.registry.update(
                entry,
                outcome="rejected",
                sync_codes=[e.code for e in errors],
                finished_at=dt.datetime.now(dt.UTC),
            )
            return 200, soap.build_sync_answer(
                relates_to=headers.message_id or "",
                status=n.STATUS_ERROR,
                errors=errors,
                soap_version=version,
                key=self.key,
                certificate=self.certificate,
            )
        self.registry.update(entry, outcome="accepted")
        journal = (
            self.state.accept(body, client_entity_id=system.client_entity_id, arrival=arrival)
            if self.state is not None
            else None
        )  # durable before "success" is answered
        job = Job(
            request=request,
            system=system,
            entry=entry,
            arrival=arrival,
            decision=decision,
            journal=journal,
            trace=telemetry.capture(),  # its file pull and callback continue this request's trace
        )
        if "callback_early" in decision.callbacks:
            self.processor.process(job)  # file pull and callback before the synchronous answer
        elif self._executor is not None:
            self._executor.submit(self.processor.process, job)
        return 200, soap.build_sync_answer(
            relates_to=headers.message_id or "",
            soap_version=version,
            key=self.key,
            certificate=self.certificate,
        )

    def _search(self, req: soap.SearchRequest, entry: Any) -> tuple[int, bytes]:
        q = req.query
        begin, end = checks.parse_time(q.register_date_begin), checks.parse_time(q.register_date_end)
        if begin is None and q.register_date_begin:  # a plain date
            begin = dt.datetime.fromisoformat(q.register_date_begin[:10]).replace(tzinfo=dt.UTC)
        if end is None and q.register_date_end:
            end = dt.datetime.fromisoformat(q.register_date_end[:10]).replace(tzinfo=dt.UTC) + dt.timedelta(
                days=1
            )
        found = self.registry.search(
            organization=q.organization, kind=q.kind, begin=begin, end=end, patient_snils=q.patient_snils
        )
        self.registry.update(entry, outcome="answered", finished_at=dt.datetime.now(dt.UTC))
        return 200, soap.build_search_response(
            relates_to=req.headers.message_id or "",
            items=[record_item(r) for r in found],
            key=self.key,
            certificate=self.certificate,
        )

    def _get_item(
        self,
        emdr_id: str,
        headers: soap.Headers,
        entry: Any,
        system: System,
        decision: Decision,
        version: str,
    ) -> tuple[int, bytes]:
        """Acknowledge at once; the record (only the ИС that registered it gets it) goes to ReplyTo later."""
        if (refused := self._without_reply_to(headers, entry, version)) is not None:
            return refused
        self.registry.update(entry, outcome="accepted", emdr_id=emdr_id)
        question = RegistryQuestion(
            emdr_id=emdr_id, headers=headers, system=system, entry=entry, decision=decision
        )
        if self._executor is not None:
            self._executor.submit(self.processor.answer_registry_item, question)
        return 200, soap.build_registry_item_response(
            relates_to=headers.message_id or "", key=self.key, certificate=self.certificate
        )
