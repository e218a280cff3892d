"""The N3.Health route: the second ``Transport`` (``services.remd.transport``), for clinics whose МИС reaches
ФРЭМД through N3 (the route of the dental МИС this project started from).

``submit`` sends the signed СЭМД with every signature attached to an EmkService ``AddCase`` (SOAP 1.1, auth
GUID as the first parameter and as ``Authorization: N3 <GUID>``, our request id in ``X-Request-ID``:
``services.remd.n3``). N3 registers it in РЭМД itself and calls nobody back (as far as is public), so
``has_callbacks`` is False: the status worker polls ``lookup``, a document-storage search, until the
document shows its РЭМД number. Classification, as for ИПС (``transport`` module docstring)::

    accepted    AddCaseResponse
    transient   network failures (transport.post), HTTP 5xx / 408 / 429, a non-SOAP 2xx, s:Server faults,
                a RequestFault whose ErrorCode is a transient РЭМД code
    permanent   s:Client faults (RequestFault: ErrorCode, Message), HTTP 401/403 (the token), other 4xx

:param client: an ``httpx.AsyncClient`` (tests pass one with ``httpx.MockTransport``); default: our own.
:param connect_timeout / read_timeout: seconds (defaults 10 / 60). :param max_connections: pool size (32).
"""

from __future__ import annotations

import time
from dataclasses import replace

import httpx

from producer.errors import EmdError, TransientError
from services.logs import get_logger
from services.outcome import Outcome
from services.remd import envelope, n3, soap
from services.remd import n3_names as names
from services.remd.transport import (
    LookupRequest,
    SubmitOutcome,
    SubmitRequest,
    classify_fault,
    post,
)

__all__ = ["N3Transport", "classify_n3_answer"]

log = get_logger(__name__)


def _auth(token: str) -> dict[str, str]:
    return {names.AUTH_HEADER: f"{names.AUTH_SCHEME} {token}"}


def classify_n3_answer(status: int, body: bytes) -> SubmitOutcome:
    """What an EmkService answer to ``AddCase`` means (the table in the module docstring)."""
    try:
        answer = n3.parse_add_case_answer(body)
    except EmdError as exc:
        if status in (401, 403):
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason=f"HTTP_{status}",
                http_status=status,
                category="configuration",
                message=f"HTTP {status}: N3 refuses the organisation's token",
                hint="check the organisation's remd.n3 token and ЛПУ id with Нетрика",
            )
        if status >= 500 or status in (408, 429):
            return SubmitOutcome(
                kind=Outcome.TRANSIENT,
                reason=f"HTTP_{status}",
                http_status=status,
                transport_failure=True,
                ambiguous=status >= 500,
                message=f"HTTP {status} without a SOAP answer",
            )
        if 400 <= status < 500:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason=f"HTTP_{status}",
                http_status=status,
                category="configuration",
                message=f"HTTP {status} without a SOAP answer",
                hint="check the organisation's remd.endpoint (the N3 EmkService address)",
            )
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason="MALFORMED_ANSWER",
            http_status=status,
            transport_failure=True,
            ambiguous=True,
            message=f"answer is not an AddCase response ({exc.reason})",
        )
    if answer is True:
        return SubmitOutcome(kind=Outcome.ACCEPTED, reason="ACCEPTED", http_status=status)
    return classify_fault(answer, status)


class N3Transport:
    """Registrations through N3.Health's EmkService; registry look-ups through its document storage."""

    name = "n3"
    has_callbacks = False
    pushes_document = True

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def submit(self, request: SubmitRequest) -> SubmitOutcome:
        if request.document is None or not request.auth_token or not request.lpu_id:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason="REQUEST_BUILD_FAILED",
                category="configuration",
                message="an N3 case needs the document, the organisation's N3 token and its ЛПУ id",
            )
        try:
            body = n3.build_add_case(
                request.registration,
                document=request.document,
                token=request.auth_token,
                lpu_id=request.lpu_id,
            )
        except (ValueError, TypeError, EmdError) as exc:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason="REQUEST_BUILD_FAILED",
                message=f"AddCase could not be built: {exc}",
            )
        headers = {
            **envelope.http_headers("1.1"),
            "SOAPAction": f'"{n3.soap_action()}"',
            **_auth(request.auth_token),
            names.REQUEST_ID_HEADER: request.message_id,
        }
        started = time.perf_counter()
        response = await post(self._client, request.endpoint, body, headers, started)
        if isinstance(response, SubmitOutcome):
            return response
        outcome = classify_n3_answer(response.status_code, response.content)
        return replace(
            outcome, duration=time.perf_counter() - started, request=body, response=response.content
        )

    async def lookup(self, request: LookupRequest) -> soap.RegistryItem | None:
        """The document-storage search for the organisation's documents of that kind and dates: this localUid's
        item once it carries a РЭМД number, else ``None``."""
        query = n3.search_query(
            organization=request.organization, kind=request.kind, since=request.since, until=request.until
        )
        try:
            response = await self._client.post(
                request.endpoint, json=query, headers=_auth(request.auth_token or "")
            )
            response.raise_for_status()
            items = n3.parse_search_answer(response.json())
        except (httpx.HTTPError, ValueError, EmdError) as exc:
            raise TransientError(
                f"N3 document storage search failed: {type(exc).__name__}: {exc}",
                reason="REGISTRY_LOOKUP_FAILED",
            ) from None
        return next((i for i in items if i.local_uid == request.local_uid and i.emdr_id), None)

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()
