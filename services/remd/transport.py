"""How a registration reaches РЭМД: the ``Transport`` interface, and what every implementation shares.

The implementations live in ``services.remd._transports`` (``ips``: ИПС SOAP; ``n3``: N3.Health), and
``services.remd.transports`` picks one by name; this module imports neither.

The sender only ever calls ``await transport.submit(request) -> SubmitOutcome``; the status worker
``await transport.lookup(request) -> RegistryItem | None`` (is the document registered? — the deadline poll
and the reconciliation of a duplicate registration); a transport whose registry answers the record itself on
the callback also implements :class:`AsksRegistryItem` (ИПС's ``getRegistryItem``: the status worker sends it
once ``lookup`` found the document, and the record comes back as a callback). ``Transports`` holds one
transport per name for a
process, so the sender and the status worker share their connection pools. ``IpsSoapTransport``
builds and signs ``registerDocument`` (``services.remd.soap`` / ``services.remd.wssec``), POSTs it with an httpx
``AsyncClient`` (separate connect and read timeouts) and classifies the answer. A regional bus
(N3.Health, the "ОДЛИ"-style integration buses) is a second class with the same ``submit``; the
organisation's ``remd.transport`` setting picks it, the worker does not change.

Outcome classification (``SubmitOutcome.kind``)::

    accepted    synchronous answer status=success without errors (accepted, NOT yet registered)
    transient   may pass later → retry with backoff:
                  network errors, connect/read timeouts, connection reset     (transport failure)
                  HTTP 5xx / 408 / 429 without a SOAP body                      (transport failure)
                  a 2xx body that is not a SOAP answer (malformed)              (transport failure)
                  SOAP Fault from the server side (soap:Server / Receiver, ИПС SystemFault)
                  РЭМД codes classified transient (remd_codes), RATE_LIMIT: defer ≥ 60 s
    permanent   retrying the same bytes cannot help → dead letter:
                  РЭМД codes classified data / configuration (and unknown codes: configuration)
                  client-side SOAP Faults (ValidationFault, AuthorizationFault, soap:Client / Sender)
                  HTTP 4xx without a SOAP body (wrong endpoint, proxy refusing us)

Malformed answers are **transient**: a truncated or non-SOAP 2xx body is what a proxy or an ИПС node in
trouble produces, not a verdict on the document; a real rejection always comes as parseable SOAP. The
retry tiers bound the cost (attempts run out → dead letter with the reason MALFORMED_ANSWER).

``transport_failure`` marks the outcomes that say the *endpoint* is unwell (they feed the circuit breaker);
``ambiguous`` marks those after which ИПС may have taken the request anyway (read timeout, reset, 5xx,
malformed 2xx): a resend may be a duplicate, which РЭМД answers with NOT_UNIQUE_PROVIDED_ID in the
callback — the status worker reconciles it through the lifecycle store, where every MessageID is kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

import httpx

from producer.errors import EmdError
from services.logs import get_logger
from services.outcome import Answered, Outcome
from services.remd import soap

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class SubmitRequest:
    """One attempt: the registration, its request id (the SOAP MessageID, already recorded in the lifecycle
    store), where and how. Each transport reads the fields its route needs (ИПС: the ИС's clientEntityId,
    ReplyTo and WS-Security key; N3: the auth token, the ЛПУ id and the document itself)."""

    registration: soap.Registration
    message_id: str
    endpoint: str
    client_entity_id: str = ""
    reply_to: str = ""
    #: the information system's WS-Security key (anything ``wssec.sign_envelope`` accepts) and certificate
    key: Any = field(default=None, repr=False)
    certificate: Any = field(default=None, repr=False)
    #: the signed СЭМД bytes, for a transport that pushes the document (``pushes_document``)
    document: bytes | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)  #: N3: the clinic's auth GUID (a secret)
    lpu_id: str | None = None  #: N3: the organisation's id on the platform
    #: N3: the dictionary-195 code of the kind and each doctor's codes (``services.remd.n3.N3Codes``)
    n3_codes: Any = None
    #: N3: send PixService AddPatient first (the patient is not yet, or no longer, known to N3 as sent)
    add_patient: bool = True
    pix_endpoint: str | None = None  #: N3: PixService's address (the sibling of ``endpoint``)


@dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    kind: Answered
    #: stable machine code: ACCEPTED, CONNECT_ERROR, TIMEOUT, CONNECTION_RESET, HTTP_<status>,
    #: MALFORMED_ANSWER, SOAP_FAULT, REMD_TRANSIENT, RATE_LIMIT, REMD_REJECTED, REQUEST_BUILD_FAILED
    reason: str
    message: str = ""
    remd_code: str | None = None
    remd_message: str | None = None
    #: transient | data | configuration, when the answer itself says (a РЭМД code, a fault kind);
    #: otherwise the reason's category in ``services.reasons`` applies
    category: str | None = None
    hint: str | None = None
    errors: tuple[soap.RemdError, ...] = ()
    http_status: int | None = None
    defer: float | None = None  # do not retry before this many seconds
    transport_failure: bool = False  # the endpoint is unwell (circuit breaker input)
    ambiguous: bool = False  # ИПС may have taken the request anyway
    duration: float = 0.0
    #: the signed request as sent and the answer's body as received (kept for support: СТП asks for them)
    request: bytes | None = field(default=None, repr=False)
    response: bytes | None = field(default=None, repr=False)
    #: remarks the МИС should see though the document was taken, as (code, message): N3's RequestWarning
    warnings: tuple[tuple[str, str], ...] = ()
    #: N3: PixService took the patient in this attempt (the sender remembers it, keyed by organisation)
    patient_added: bool = False

    @property
    def accepted(self) -> bool:
        return self.kind == Outcome.ACCEPTED


@dataclass(frozen=True, kw_only=True)
class LookupRequest:
    """Is ``local_uid`` registered? Asked of the registry for documents of ``organization`` and ``kind``
    registered between ``since`` and ``until`` (dates), as the organisation's information system."""

    local_uid: str
    organization: str
    kind: str
    since: date
    until: date
    endpoint: str
    client_entity_id: str = ""
    key: Any = field(default=None, repr=False)
    certificate: Any = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)  #: N3's token (its lookup has no WS-Security)


@dataclass(frozen=True, kw_only=True)
class RegistryItemRequest:
    """Ask РЭМД for the record of ``emdr_id`` (``getRegistryItem``), as the organisation's information system; the
    answer comes to ``reply_to`` (the МИС callback address), naming ``message_id`` — stored before asking."""

    emdr_id: str
    message_id: str
    endpoint: str
    reply_to: str
    client_entity_id: str = ""
    key: Any = field(default=None, repr=False)
    certificate: Any = field(default=None, repr=False)


@runtime_checkable
class AsksRegistryItem(Protocol):
    """A transport whose registry sends a record's details on the callback (ИПС's ``getRegistryItem``).

    ``ask_registry_item`` returns once РЭМД acknowledged the request (the record comes later, as a
    ``getRegistryItemResult`` callback) and raises ``TransientError(REGISTRY_LOOKUP_FAILED)`` when it cannot be
    asked now or refused the request."""

    async def ask_registry_item(self, request: RegistryItemRequest) -> None: ...


class Transport(Protocol):
    """How registrations reach РЭМД and how РЭМД is asked about them.

    ``submit`` sends one registration attempt and says what became of it; it never raises for an answer
    it got. ``lookup`` returns the registry's entry for the document, ``None`` when the registry does not
    (yet) hold it, and raises ``TransientError(REGISTRY_LOOKUP_FAILED)`` when РЭМД cannot be asked now.
    """

    name: str
    #: whether the route calls back (ИПС: registerDocumentResult); without, the status worker polls ``lookup``
    has_callbacks: bool
    #: whether ``submit`` needs ``SubmitRequest.document`` (ИПС pulls the file itself; N3 takes it attached)
    pushes_document: bool

    async def submit(self, request: SubmitRequest) -> SubmitOutcome: ...

    async def lookup(self, request: LookupRequest) -> soap.RegistryItem | None: ...

    async def aclose(self) -> None: ...


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP-date: rare from ИПС; the backoff applies instead


def classify_answer(status: int, body: bytes, *, retry_after: float | None = None) -> SubmitOutcome:
    """Classify an HTTP answer to registerDocument (see the module docstring for the table)."""
    try:
        answer = soap.parse_answer(body)
    except EmdError as exc:
        # not a SOAP answer: judge by the HTTP status alone
        if status >= 500 or status in (408, 429):
            return SubmitOutcome(
                kind=Outcome.TRANSIENT,
                reason=f"HTTP_{status}",
                http_status=status,
                message=f"HTTP {status} without a SOAP answer",
                defer=retry_after,
                transport_failure=True,
                ambiguous=status >= 500,
            )
        if 400 <= status < 500:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason=f"HTTP_{status}",
                http_status=status,
                message=f"HTTP {status} without a SOAP answer",
            )
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason="MALFORMED_ANSWER",
            http_status=status,
            message=f"answer is not a registerDocument response ({exc.reason})",
            transport_failure=True,
            ambiguous=True,
        )
    if isinstance(answer, soap.SoapFault):
        return classify_fault(answer, status)
    if answer.accepted:
        return SubmitOutcome(kind=Outcome.ACCEPTED, reason="ACCEPTED", http_status=status)
    errors = answer.errors
    if not errors:
        # status=error and no code: nothing to act on; РЭМД does not do this on purpose, so retry (bounded)
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason="REMD_ERROR_WITHOUT_CODE",
            http_status=status,
            message=f"status={answer.status} without errors",
            ambiguous=False,
        )
    infos = [(e, e.info) for e in errors]
    blocking = [(e, i) for e, i in infos if not i.transient]
    if blocking:
        e, info = blocking[0]  # the first non-transient code decides; all of them go into the message
        return SubmitOutcome(
            kind=Outcome.PERMANENT,
            reason="REMD_REJECTED",
            http_status=status,
            remd_code=e.code,
            remd_message=e.message,
            category=info.category,
            hint=info.hint,
            errors=errors,
            message="; ".join(f"{x.code}: {x.message}" for x in errors),
        )
    e, info = infos[0]
    defer = max((i.retry_after or 0.0 for _, i in infos), default=0.0) or None  # RATE_LIMIT's minute included
    rate_limited = any(x.code == "RATE_LIMIT" for x in errors)
    return SubmitOutcome(
        kind=Outcome.TRANSIENT,
        reason="RATE_LIMIT" if rate_limited else "REMD_TRANSIENT",
        http_status=status,
        remd_code=e.code,
        remd_message=e.message,
        category=info.category,
        hint=info.hint,
        errors=errors,
        defer=defer,
        message="; ".join(f"{x.code}: {x.message}" for x in errors),
    )


def classify_fault(fault: soap.SoapFault, status: int) -> SubmitOutcome:
    text = fault.detail_message or fault.reason
    info = fault.info
    if info is not None and not info.unknown:
        kind: Answered = Outcome.TRANSIENT if info.transient else Outcome.PERMANENT
        return SubmitOutcome(
            kind=kind,
            reason="SOAP_FAULT",
            http_status=status,
            remd_code=fault.detail_code,
            remd_message=text,
            category=info.category,
            hint=info.hint,
            message=f"{fault.ips_fault or fault.code}: {text}",
            defer=info.retry_after,
            transport_failure=kind == Outcome.TRANSIENT and fault.server_side,
            ambiguous=kind == Outcome.TRANSIENT,
        )
    if fault.server_side or fault.ips_fault == "SystemFault":
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason="SOAP_FAULT",
            http_status=status,
            remd_code=fault.detail_code,
            remd_message=text,
            category="transient",
            message=f"{fault.ips_fault or fault.code}: {text}",
            transport_failure=True,
            ambiguous=True,
        )
    if fault.ips_fault == "AuthorizationFault":
        category, hint = (
            "configuration",
            (
                "the ИПС does not accept this system's WS-Security certificate or "
                "clientEntityId: check the organisation's remd settings and the "
                "system's registration in ИПС"
            ),
        )
    elif info is not None:  # a code the table does not know: configuration, for a person to look at
        category, hint = info.category, info.hint
    else:
        category, hint = "data", "the request does not match the service schema"
    return SubmitOutcome(
        kind=Outcome.PERMANENT,
        reason="SOAP_FAULT",
        http_status=status,
        remd_code=fault.detail_code or fault.ips_fault,
        remd_message=text,
        category=category,
        hint=hint,
        message=f"{fault.ips_fault or fault.code}: {text}",
    )


def _net(reason: str, message: str, started: float, request: bytes, *, ambiguous: bool) -> SubmitOutcome:
    return SubmitOutcome(
        kind=Outcome.TRANSIENT,
        reason=reason,
        message=message,
        transport_failure=True,
        ambiguous=ambiguous,
        duration=time.perf_counter() - started,
        request=request,
    )


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str], started: float
) -> httpx.Response | SubmitOutcome:
    """POST one request: the answer, or the transient outcome a network failure is (every transport's one table:
    connect timeout/error → not taken; read timeout, reset, other HTTP errors → ``ambiguous``, maybe taken)."""
    try:
        return await client.post(url, content=body, headers=dict(headers))
    except httpx.ConnectTimeout as exc:
        return _net("TIMEOUT", f"connect timeout: {exc}", started, body, ambiguous=False)
    except httpx.ConnectError as exc:
        return _net("CONNECT_ERROR", f"cannot connect: {exc}", started, body, ambiguous=False)
    except httpx.TimeoutException as exc:
        return _net("TIMEOUT", f"no answer in time: {type(exc).__name__}", started, body, ambiguous=True)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        return _net(
            "CONNECTION_RESET", f"connection lost: {type(exc).__name__}: {exc}", started, body, ambiguous=True
        )
    except httpx.HTTPError as exc:
        return _net("HTTP_CLIENT_ERROR", f"{type(exc).__name__}: {exc}", started, body, ambiguous=True)
