"""ИПС ЕГИСЗ: registerDocument over SOAP 1.2 + WS-Security (``services.remd.transport`` says how answers are
classified)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import httpx

from producer.errors import EmdError, TransientError
from services.logs import get_logger
from services.outcome import Outcome
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.transport import (
    LookupRequest,
    RegistryItemRequest,
    SubmitOutcome,
    SubmitRequest,
    classify_answer,
    post,
    retry_after,
)

log = get_logger(__name__)

T = TypeVar("T")


class IpsSoapTransport:
    """registerDocument over SOAP 1.2 + WS-Security to an ИПС endpoint.

    :param client: an ``httpx.AsyncClient`` to use (tests pass one with ``httpx.MockTransport``);
        default: one of our own, closed by ``aclose()``.
    :param connect_timeout: seconds to open a connection (default 10).
    :param read_timeout: seconds to wait for the answer (default 60: ИПС answers slowly under load).
    :param soap_version: "1.2" (default) or "1.1".
    :param max_connections: connection pool size (default 32).
    """

    name = "ips"
    has_callbacks = True
    pushes_document = False

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        soap_version: str = "1.2",
        max_connections: int = 32,
    ) -> None:
        self.soap_version = soap_version
        # Signing runs in threads of our own: the status worker calls lookup() from callback threads that
        # block on it, and a shared default executor full of those would leave none for the signing.
        self._signing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ips-sign")
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def build(self, request: SubmitRequest) -> bytes:
        """The signed registerDocument bytes (CPU work: call it off the event loop)."""
        body, _ = soap.build_register_document(
            request.registration,
            client_entity_id=request.client_entity_id,
            to=request.endpoint,
            reply_to=request.reply_to,
            key=request.key,
            certificate=request.certificate,
            message_id=request.message_id,
            soap_version=self.soap_version,
        )
        return body

    async def submit(self, request: SubmitRequest) -> SubmitOutcome:
        try:
            body = await asyncio.get_running_loop().run_in_executor(self._signing, self.build, request)
        except (ValueError, TypeError, EmdError) as exc:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason="REQUEST_BUILD_FAILED",
                message=f"registerDocument could not be built: {exc}",
            )
        headers = envelope.http_headers(self.soap_version, action=n.ACTION_REGISTER_DOCUMENT)
        started = time.perf_counter()
        response = await post(self._client, request.endpoint, body, headers, started)
        if isinstance(response, SubmitOutcome):
            return response
        outcome = classify_answer(response.status_code, response.content, retry_after=retry_after(response))
        return replace(
            outcome, duration=time.perf_counter() - started, request=body, response=response.content
        )

    async def lookup(self, request: LookupRequest) -> soap.RegistryItem | None:
        """``searchRegistryItem`` for the organisation's documents of that kind and dates; the item of this
        localUid, or ``None``."""
        query = soap.SearchQuery(
            organization=request.organization,
            kind=request.kind,
            register_date_begin=request.since.isoformat(),
            register_date_end=request.until.isoformat(),
        )
        answer = await self._ask(
            "searchRegistryItem",
            partial(
                soap.build_search_request,
                query,
                client_entity_id=request.client_entity_id,
                to=request.endpoint,
                key=request.key,
                certificate=request.certificate,
            ),
            endpoint=request.endpoint,
            action=n.ACTION_SEARCH_REGISTRY_ITEM,
            parse=soap.parse_search_response,
        )
        if isinstance(answer, soap.SoapFault) or answer.errors or answer.status != n.STATUS_SUCCESS:
            # an error answer says nothing about the document: not "unregistered", just not known now
            raise TransientError("searchRegistryItem answered an error", reason="REGISTRY_LOOKUP_FAILED")
        return next((i for i in answer.items if i.local_uid == request.local_uid), None)

    async def ask_registry_item(self, request: RegistryItemRequest) -> None:
        """``getRegistryItem`` for one registry number: returns once РЭМД acknowledged it; the record comes to
        ``request.reply_to`` as a ``getRegistryItemResult`` naming ``request.message_id``."""
        answer = await self._ask(
            "getRegistryItem",
            partial(
                soap.build_get_registry_item,
                emdr_id=request.emdr_id,
                client_entity_id=request.client_entity_id,
                to=request.endpoint,
                reply_to=request.reply_to,
                key=request.key,
                certificate=request.certificate,
                message_id=request.message_id,
            ),
            endpoint=request.endpoint,
            action=n.ACTION_GET_REGISTRY_ITEM,
            parse=soap.parse_registry_item_response,
            message_id=request.message_id,
        )
        if isinstance(answer, soap.SoapFault):
            raise TransientError(
                f"getRegistryItem answered a fault ({answer.detail_code or answer.ips_fault or answer.code})",
                reason="REGISTRY_LOOKUP_FAILED",
                defer=answer.info.retry_after if answer.info else None,
                message_id=request.message_id,
                remd_code=answer.detail_code,
            )
        if not answer.accepted:
            codes = ", ".join(e.code for e in answer.errors) or answer.status
            raise TransientError(
                f"getRegistryItem was not accepted ({codes})",
                reason="REGISTRY_LOOKUP_FAILED",
                defer=max((e.info.retry_after or 0.0 for e in answer.errors), default=0.0) or None,
                message_id=request.message_id,
                remd_code=answer.errors[0].code if answer.errors else None,
            )

    async def _ask(
        self,
        operation: str,
        build: Callable[[], tuple[bytes, Any]],
        *,
        endpoint: str,
        action: str,
        parse: Callable[[bytes], T],
        message_id: str | None = None,
    ) -> T:
        """A registry question: built and signed off the event loop (always as SOAP 1.2), posted, its answer
        parsed; a failure to get one is ``REGISTRY_LOOKUP_FAILED``, transient."""
        body, _ = await asyncio.get_running_loop().run_in_executor(self._signing, build)
        try:
            response = await self._client.post(
                endpoint, content=body, headers=envelope.http_headers("1.2", action=action)
            )
            return parse(response.content)
        except (httpx.HTTPError, EmdError) as exc:
            details: dict[str, Any] = {"message_id": message_id} if message_id else {}
            raise TransientError(
                f"{operation} failed: {type(exc).__name__}: {exc}", reason="REGISTRY_LOOKUP_FAILED", **details
            ) from None

    async def aclose(self) -> None:
        self._signing.shutdown(wait=False)
        if self._own:
            await self._client.aclose()
