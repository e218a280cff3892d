"""The asynchronous half of a registration: pull the file from the МИС, check it, call back the result.

``Processor.process(job)`` runs, for one accepted ``registerDocument`` (steps 4–7 of
``docs/protocol.md#registration-flow``):

1. ``getDocumentFile`` — a signed SOAP request POSTed to the request's ``wsa:ReplyTo``; the МИС's
   answer must be signed by a certificate of the same ИС, carry ``wsa:RelatesTo`` = our MessageID and
   a ``checksum`` matching the bytes. Connection errors and 5xx are retried (``file_attempts``), then
   the registration fails with MIS_NOT_AVAILABLE / MIS_ERROR; a SOAP Fault gives RMIS_ERROR, a bad
   signature or checksum GET_DOCUMENT_FILE_ERROR, a wrong RelatesTo WRONG_MESSAGE_ID.
2. ``checks.check_document`` over exactly those bytes, then the scenario's rejections.
3. Registration in the :class:`~lab.emulator.registry.Registry`: a localUid is unique per
   information system; taken → NOT_UNIQUE_PROVIDED_ID, whose message says in plain words whether this is
   the registered document again or different bytes under its localUid (a changed СЭМД needs a new one).
4. ``registerDocumentResult`` (signed, SOAP 1.1) POSTed to ReplyTo, retried with exponential backoff
   while the МИС answers 5xx, a SOAP Fault or nothing, at most ``callback_attempts`` times. Every
   attempt is logged on the request entry; an acknowledgement that is unsigned or lacks the right
   ``wsa:RelatesTo`` is accepted but noted (``ack_problem``), since real ИПС insists on both.

With ``variants`` (the ``ips-variants`` scenario) each registration's file requests and callback take the
shape :func:`lab.emulator.variants.shape_for` gives it, and a registered document is asked for again
later by its emdrId (``later_pull`` on the entry: ok, different_bytes, a code, or gave_up).

``Processor.answer_registry_item(question)`` is ``getRegistryItem``'s asynchronous half: the record (for the ИС
that registered it; any other gets ``REGISTRY_ITEM_NOT_FOUND``) as a signed ``getRegistryItemResult`` POSTed to
the request's ReplyTo, with the same retries as a registration's result. The ``callback_lost``,
``callback_late`` and ``callback_duplicate`` faults apply to it too. Questions are not kept across a restart:
an answer lost so is asked for again by the МИС (its deadline scanner).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.emulator import checks
from lab.emulator.faults import Decision, rejection_for
from lab.emulator.registry import Registry, RegistryRecord, RequestEntry
from lab.emulator.state import StateDir
from lab.emulator.systems import System
from lab.emulator.variants import LaterRequests, Shape, shape_for, shaped_result, spell
from producer.errors import PermanentError
from producer.ids import new_message_id, normalize_message_id, same_message_id
from services import telemetry
from services.logs import get_logger
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.soap import RegisterRequest, RegisterResult, RegistryItem, RegistryItemResult, RemdError
from services.remd.wssec import verify_envelope
from services.timestamps import stored

__all__ = ["Job", "Processor", "RegistryQuestion", "record_item"]

#: what the МИС's signed replies must cover (they carry no wsa:To, which only requests need)
_REPLY_REFERENCES = ("Body", "Timestamp", "MessageID", "Action")


@dataclass(slots=True)
class Job:
    """One accepted registration waiting for its asynchronous processing."""

    request: RegisterRequest
    system: System
    entry: RequestEntry
    arrival: dt.datetime
    decision: Decision
    journal: Path | None = None  # its StateDir file, removed once it is done (kept if we are stopped first)
    trace: Any = None  # the registerDocument request's trace context (``telemetry.capture``), when tracing


@dataclass(slots=True)
class RegistryQuestion:
    """One acknowledged ``getRegistryItem`` waiting for its asynchronous answer."""

    emdr_id: str
    headers: soap.Headers
    system: System
    entry: RequestEntry
    decision: Decision


def record_item(record: Any) -> RegistryItem:
    """A registry record as РЭМД describes it (search matches, getRegistryItem results), its dates as РЭМД
    writes them."""
    return RegistryItem(
        emdr_id=record.emdr_id,
        local_uid=record.local_uid,
        kind=record.kind,
        organization=record.organization,
        registration_date_time=record.registration_text,
        store_till_date=record.store_till_text,
        document_version=record.document_version,
    )


class Processor:
    """Runs jobs; shared by every worker thread (it holds no per-job state)."""

    def __init__(
        self,
        *,
        registry: Registry,
        key: Any,
        certificate: Any,
        stop: threading.Event,
        rejection_rate: float = 0.0,
        http_timeout: float = 10.0,
        file_attempts: int = 3,
        callback_attempts: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        variants: bool = False,
        later_pull_delay: float = 2.0,
        later_pull_attempts: int = 8,
        accredited: tuple[Any, ...] = (),
    ) -> None:
        self.registry = registry
        self.accredited = accredited
        self.key, self.certificate = key, certificate
        self.stop = stop
        self.rejection_rate = rejection_rate
        self.http_timeout = http_timeout
        self.file_attempts = file_attempts
        self.callback_attempts = callback_attempts
        self.backoff, self.backoff_max = backoff, backoff_max
        #: ips-variants: each registration's messages in its own Shape, and a later file request by emdrId
        self.variants = variants
        self.later = LaterRequests(stop)
        self.later_pull_delay, self.later_pull_attempts = later_pull_delay, later_pull_attempts
        self.log = get_logger(__name__)
        # One client for every pull and callback, shared by the worker threads (httpx.Client is thread-safe):
        # a client per request built a new TLS context each time, ~40 ms of CPU, most of a document's cost here.
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.http_timeout)
            return self._http

    def close(self) -> None:
        """Close the HTTP client (a later job opens a new one)."""
        with self._http_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()

    # --- the flow ------------------------------------------------------------------------------

    def process(self, job: Job) -> None:
        if job.trace is None:  # tracing off (or a registration resumed from before a restart)
            self._process_safely(job)
            return
        attributes = {
            telemetry.MESSAGE_ID: normalize_message_id(job.request.headers.message_id),
            telemetry.LOCAL_UID: job.request.registration.local_uid,
        }
        with telemetry.resumed(job.trace, "emulator registration", attributes=attributes):
            self._process_safely(job)

    def _process_safely(self, job: Job) -> None:
        try:
            self._process(job)
        except Exception as exc:  # noqa: BLE001 - a worker must never die silently
            self.log.exception("emulator job failed", error=repr(exc), seq=job.entry.seq)
            self.registry.update(job.entry, outcome="crashed", finished_at=dt.datetime.now(dt.UTC))
        if not self.stop.is_set():  # interrupted by a stop: left for the next start to finish
            StateDir.finished(job.journal)

    def _process(self, job: Job) -> None:
        reg = job.request.registration
        headers = job.request.headers
        late = job.decision.callbacks.get("callback_late")
        shape = shape_for(job.entry.seq) if self.variants else Shape()
        mid = normalize_message_id(headers.message_id)
        record = self.registry.lookup(job.system.client_entity_id, reg.local_uid)
        if record is not None and record.message_id != mid:
            record = None
        # a request registered before a restart (resumed from the state dir) is answered again, not re-pulled:
        # a failed second pull must not call back an error for what РЭМД has registered
        errors: list[RemdError] = []
        data = b""
        if record is None:
            record, errors, data = self._register(job, shape, mid)
        result = self._result(job, record, errors)
        if self.variants:
            result = shaped_result(result, shape, creation_date_time=reg.creation_date_time)

        if late is not None and self.stop.wait(late.delay):
            return
        if "callback_lost" in job.decision.callbacks:
            self.registry.append(job.entry, "callbacks", {"kind": "lost", "at": _now(), "delivered": False})
        else:
            self._deliver(job, result, kind="result", shape=shape)
            if "callback_duplicate" in job.decision.callbacks:
                self._deliver(job, result, kind="duplicate", shape=shape)
            if "callback_out_of_order" in job.decision.callbacks and record is not None:
                stale = RegisterResult(
                    relates_to_message=result.relates_to_message,
                    status=n.STATUS_ERROR,
                    local_uid=reg.local_uid,
                    kind=reg.kind,
                    organization=reg.organization,
                    errors=(RemdError("RUNTIME_ERROR", "Непредвиденная ошибка"),),
                )
                self._deliver(job, stale, kind="stale", shape=shape)
        if self.variants and record is not None and data:  # not for a request answered again
            self._ask_later(job, record.emdr_id, data, shape)
        self.registry.update(job.entry, finished_at=dt.datetime.now(dt.UTC))
        self.log.info(
            "registration done",
            seq=job.entry.seq,
            local_uid=reg.local_uid,
            message_id=mid,
            outcome=job.entry.outcome,
            codes=job.entry.codes or None,
            callbacks=[c.get("delivered") for c in job.entry.callbacks],
            resumed="resumed" in job.entry.faults,
        )

    def _register(
        self, job: Job, shape: Shape, mid: str
    ) -> tuple[RegistryRecord | None, list[RemdError], bytes]:
        """Pull the document, check it, and register it: (the record or None, the errors, the pulled bytes)."""
        reg = job.request.registration
        pulled = self._pull_file(job, shape)
        if isinstance(pulled, RemdError):
            return None, [pulled], b""
        errors = self._refusals(job, pulled)
        if errors:
            return None, errors, pulled
        digest = hashlib.sha256(pulled).hexdigest()
        record, existing = self.registry.register(
            local_uid=reg.local_uid,
            organization=reg.organization,
            kind=reg.kind,
            message_id=mid,
            client_entity_id=job.system.client_entity_id,
            patient_snils=reg.patient.snils,
            digest=digest,
        )
        if record is None:
            same = existing is not None and existing.digest == digest
            return None, [_not_unique(reg.local_uid, existing, same_content=same)], pulled
        return record, [], pulled

    def _refusals(self, job: Job, data: bytes) -> list[RemdError]:
        """What РЭМД would refuse the pulled document for: its checks, then the scenario's rejections."""
        reg = job.request.registration
        errors = checks.check_document(reg, data, arrival=job.arrival, accredited=self.accredited)
        if errors:
            return errors
        reject = job.decision.callbacks.get("reject")
        if reject is not None:
            return [RemdError(reject.code or "VALIDATION_ERROR", "Отклонено правилом эмулятора")]
        if self.rejection_rate:
            forced = rejection_for(reg.local_uid, rate=self.rejection_rate)
            return [forced] if forced else []
        return []

    def _result(self, job: Job, record: RegistryRecord | None, errors: list[RemdError]) -> RegisterResult:
        """The registration's outcome as the callback tells it, noted on the journal entry."""
        reg = job.request.registration
        relates_to = job.request.headers.message_id or ""
        if record is not None:
            self.registry.update(job.entry, outcome="registered", emdr_id=record.emdr_id)
            return RegisterResult(
                relates_to_message=relates_to,
                status=n.STATUS_SUCCESS,
                local_uid=reg.local_uid,
                kind=reg.kind,
                organization=reg.organization,
                registry_item=RegistryItem(
                    emdr_id=record.emdr_id,
                    registration_date_time=record.registration_text,
                    store_till_date=record.store_till_text,
                    document_version=record.document_version,
                ),
            )
        self.registry.update(job.entry, outcome="error", codes=[e.code for e in errors])
        return RegisterResult(
            relates_to_message=relates_to,
            status=n.STATUS_ERROR,
            local_uid=reg.local_uid,
            kind=reg.kind,
            organization=reg.organization,
            errors=tuple(errors),
        )

    # --- getDocumentFile -----------------------------------------------------------------------

    def _pull_file(self, job: Job, shape: Shape) -> bytes | RemdError:
        last: RemdError = RemdError("MIS_NOT_AVAILABLE", "Сервис предоставляющей системы недоступен")
        for attempt in range(1, self.file_attempts + 1):
            outcome = self._request_file(job, shape, attempt, local_uid=job.request.registration.local_uid)
            if outcome is None or (isinstance(outcome, RemdError) and outcome.code in _RETRIED):
                last = outcome or last
                if self.stop.wait(self._delay(attempt)):
                    return last
                continue
            return outcome
        return last

    def _request_file(
        self,
        job: Job,
        shape: Shape,
        attempt: int,
        *,
        local_uid: str | None = None,
        emdr_id: str | None = None,
    ) -> bytes | RemdError | None:
        """One getDocumentFile (by ``local_uid=`` or ``emdr_id=``), noted on the entry; None: nobody answered."""
        reply_to = job.request.headers.reply_to or ""
        message_id = spell(new_message_id(), shape.spelling)
        body = soap.build_file_request(
            to=reply_to,
            key=self.key,
            certificate=self.certificate,
            reply_to=shape.reply_to or n.WSA_ANONYMOUS,
            message_id=message_id,
            soap_version=shape.file_soap_version,
            wsa_prefix=shape.wsa_prefix,
            local_uid=local_uid,
            emdr_id=emdr_id,
        )
        note: dict[str, Any] = {
            "attempt": attempt,
            "at": _now(),
            "message_id": message_id,
            "by": "emdrId" if emdr_id is not None else "localUid",
        }
        try:
            response = self._client().post(
                reply_to,
                content=body,
                headers=envelope.http_headers(shape.file_soap_version, action=n.ACTION_GET_DOCUMENT_FILE),
            )
        except httpx.HTTPError as exc:
            note.update(outcome="connection_error", error=type(exc).__name__)
            self.registry.append(job.entry, "file_requests", note)
            return None
        note["http_status"] = response.status_code
        if response.status_code >= 500 and not _is_fault(response.content):
            note["outcome"] = "http_error"
            self.registry.append(job.entry, "file_requests", note)
            return RemdError(
                "MIS_ERROR", f"Сервис предоставляющей системы вернул HTTP {response.status_code}"
            )
        outcome = self._read_file(response.content, job.system, message_id)
        note["outcome"] = "ok" if isinstance(outcome, bytes) else outcome.code
        self.registry.append(job.entry, "file_requests", note)
        return outcome

    def _ask_later(self, job: Job, emdr_id: str, registered: bytes, shape: Shape) -> None:
        """Later, as another ИС would, ask the МИС for the registered document by its emdrId; the bytes must be
        those registered. Asked again while the МИС does not know the emdrId yet (it learns it from the callback)."""
        attempts = iter(range(1, self.later_pull_attempts + 1))

        def ask() -> float | None:
            attempt = next(attempts, None)
            if attempt is None or self.stop.is_set():
                self.registry.update(job.entry, later_pull="gave_up")
                return None
            outcome = self._request_file(job, shape, attempt, emdr_id=emdr_id)
            if isinstance(outcome, bytes):
                self.registry.update(
                    job.entry, later_pull="ok" if outcome == registered else "different_bytes"
                )
                return None
            if outcome is None or outcome.code in _RETRIED or "DOCUMENT_NOT_FOUND" in outcome.message:
                return min(self.backoff_max, self.later_pull_delay * 2 ** (attempt - 1))
            self.registry.update(job.entry, later_pull=outcome.code)
            return None

        self.registry.update(job.entry, later_pull="pending")
        self.later.schedule(self.later_pull_delay, ask)

    def _read_file(self, body: bytes, system: System, message_id: str) -> bytes | RemdError:
        try:
            parsed = soap.parse_file_response(body)
        except PermanentError as exc:
            return RemdError("GET_DOCUMENT_FILE_ERROR", f"Ответ getDocumentFile не разобран: {exc.message}")
        if isinstance(parsed, soap.SoapFault):
            return RemdError("RMIS_ERROR", f"Ошибка в ответе getDocumentFileResponse: {parsed.reason}")
        try:
            verify_envelope(body, trusted_certificates=system.certificates, required=_REPLY_REFERENCES)
        except PermanentError as exc:
            return RemdError(
                "GET_DOCUMENT_FILE_ERROR",
                f"Подпись ответа getDocumentFile не прошла проверку ({exc.reason}): {exc.message}",
            )
        if not same_message_id(parsed.headers.relates_to, message_id):
            return RemdError(
                "WRONG_MESSAGE_ID",
                f"Асинхронный запрос файла с messageID [{parsed.headers.relates_to}] не найден",
            )
        if not parsed.checksum_ok:
            return RemdError("GET_DOCUMENT_FILE_ERROR", "Контрольная сумма файла не совпадает с данными")
        return parsed.data

    # --- registerDocumentResult ----------------------------------------------------------------

    def _deliver(self, job: Job, result: RegisterResult, *, kind: str, shape: Shape) -> bool:
        reply_to = job.request.headers.reply_to or ""
        return self._post_callback(
            job.entry,
            job.system,
            reply_to,
            lambda message_id: soap.build_register_result(
                result,
                to=reply_to,
                key=self.key,
                certificate=self.certificate,
                message_id=message_id,
                **shape.build_options(),
            ),
            kind=kind,
            status=result.status,
            soap_version=shape.soap_version,
            action=n.ACTION_REGISTER_DOCUMENT_RESULT,
            spelling=shape.spelling,
        )

    def _post_callback(
        self,
        entry: RequestEntry,
        system: System,
        reply_to: str,
        build: Any,
        *,
        kind: str,
        status: str,
        soap_version: str,
        action: str,
        spelling: str = "plain",
    ) -> bool:
        """POST ``build(message_id)`` to ``reply_to`` until the МИС acknowledges it, at most ``callback_attempts``
        times with backoff; every attempt noted on the entry."""
        for attempt in range(1, self.callback_attempts + 1):
            message_id = spell(new_message_id(), spelling)
            body = build(message_id)
            note: dict[str, Any] = {
                "kind": kind,
                "attempt": attempt,
                "at": _now(),
                "message_id": message_id,
                "status": status,
                "delivered": False,
            }
            try:
                response = self._client().post(
                    reply_to, content=body, headers=envelope.http_headers(soap_version, action=action)
                )
            except httpx.HTTPError as exc:
                note["error"] = type(exc).__name__
            else:
                note["http_status"] = response.status_code
                if response.status_code < 300 and not _is_fault(response.content):
                    note["delivered"] = True
                    problem = self._ack_problem(response.content, system, message_id)
                    if problem:
                        note["ack_problem"] = problem
                    self.registry.append(entry, "callbacks", note)
                    return True
                note["error"] = "fault" if _is_fault(response.content) else f"http_{response.status_code}"
            self.registry.append(entry, "callbacks", note)
            if attempt < self.callback_attempts and self.stop.wait(self._delay(attempt)):
                return False
        self.log.warning("callback not delivered", seq=entry.seq, attempts=self.callback_attempts)
        return False

    # --- getRegistryItem's asynchronous answer ----------------------------------------------------------

    def answer_registry_item(self, question: RegistryQuestion) -> None:
        try:
            self._answer_registry_item(question)
        except Exception as exc:  # noqa: BLE001 - a worker must never die silently
            self.log.exception("emulator registry answer failed", error=repr(exc), seq=question.entry.seq)
            self.registry.update(question.entry, outcome="crashed", finished_at=dt.datetime.now(dt.UTC))

    def _answer_registry_item(self, q: RegistryQuestion) -> None:
        record = self.registry.by_emdr_id(q.emdr_id)
        relates = q.headers.message_id or ""
        if record is None or record.client_entity_id != q.system.client_entity_id:
            # only the registering ИС may read a record (docs/protocol.md#operations): others are told it
            # does not exist
            error = RemdError("REGISTRY_ITEM_NOT_FOUND", f"Регистрационная запись [{q.emdr_id}] не найдена")
            result = RegistryItemResult(relates_to_message=relates, status=n.STATUS_ERROR, errors=(error,))
            self.registry.update(q.entry, outcome="error", codes=[error.code])
        else:
            result = RegistryItemResult(
                relates_to_message=relates, status=n.STATUS_SUCCESS, registry_item=record_item(record)
            )
            self.registry.update(q.entry, outcome="answered", local_uid=record.local_uid)
        late = q.decision.callbacks.get("callback_late")
        if late is not None and self.stop.wait(late.delay):
            return
        reply_to = q.headers.reply_to or ""

        def build(message_id: str) -> bytes:
            return soap.build_registry_item_result(
                result, to=reply_to, key=self.key, certificate=self.certificate, message_id=message_id
            )

        if "callback_lost" in q.decision.callbacks:
            self.registry.append(q.entry, "callbacks", {"kind": "lost", "at": _now(), "delivered": False})
        else:
            options = {
                "status": result.status,
                "soap_version": "1.1",
                "action": n.ACTION_GET_REGISTRY_ITEM_RESULT,
            }
            self._post_callback(q.entry, q.system, reply_to, build, kind="result", **options)
            if "callback_duplicate" in q.decision.callbacks:
                self._post_callback(q.entry, q.system, reply_to, build, kind="duplicate", **options)
        self.registry.update(q.entry, finished_at=dt.datetime.now(dt.UTC))

    def _ack_problem(self, body: bytes, system: System, message_id: str) -> str | None:
        try:
            verify_envelope(body, trusted_certificates=system.certificates, required=_REPLY_REFERENCES)
            ack = soap.parse_callback_ack(body)
        except PermanentError as exc:
            return exc.reason
        if not same_message_id(ack.headers.relates_to, message_id):
            return "ACK_RELATES_TO_MISMATCH"
        return None

    def _delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** (attempt - 1))


#: what a file request answers when trying again later may help (the МИС's side is unwell)
_RETRIED = ("MIS_ERROR", "MIS_NOT_AVAILABLE")


def _not_unique(local_uid: str, existing: Any, *, same_content: bool) -> RemdError:
    """NOT_UNIQUE_PROVIDED_ID in plain words: a resend of the registered document, or a changed one."""
    if same_content:
        return RemdError(
            "NOT_UNIQUE_PROVIDED_ID",
            f"Документ с идентификатором [{local_uid}] уже зарегистрирован [{existing.emdr_id}]",
        )
    return RemdError(
        "NOT_UNIQUE_PROVIDED_ID",
        f"Документ с идентификатором [{local_uid}] уже зарегистрирован [{existing.emdr_id}] с другим "
        f"содержимым: изменённый СЭМД регистрируется под новым localUid",
    )


def _is_fault(body: bytes) -> bool:
    try:
        soap.parse_fault(body)
    except PermanentError:
        return False
    return True


def _now() -> str:
    return stored(dt.datetime.now(dt.UTC))
