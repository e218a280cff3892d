"""The МИС callback endpoint ИПС calls: ``registerDocumentResult`` and ``getDocumentFile``.

The protocol: steps 4–7 of ``docs/protocol.md#registration-flow``, the messages
``docs/protocol.md#getdocumentfile`` and ``docs/protocol.md#registerdocumentresult``.

``CallbackService.handle(body)`` is the whole protocol, without HTTP or Kafka (both are injected), so it
is tested directly and served by ``services.pipeline.callback_endpoint``; ``read_limited`` is the body reader the
wiring uses. The endpoint faces the internet, so nothing in a request is trusted, and no work is done for
it, until it has passed, in this order:

1. **size**: the body is read in chunks and refused ``413`` as soon as it exceeds ``max_request_bytes``
   (a callback is a few KB): at most that many bytes + 1 are ever read, and none is parsed;
2. **shape**: a SOAP envelope (hardened parser) with a Body;
3. **signature** (``wssec.verify_envelope``) against the pinned ИПС certificates, over the exact bytes:
   Body, Timestamp, MessageID and Action signed (ИПС signs ``wsa:To`` too; it is required, signed, once
   our own addresses are configured);
4. **freshness**: ``wsu:Created`` no older than ``max_age`` and ``wsu:Expires`` not past, each with
   ``max_skew`` of clock difference (a two-year-old signed callback without Expires is refused);
5. **address**: the signed ``wsa:To`` is one of ``own_addresses`` (the ReplyTo we send): a callback ИПС
   signed for another МИС is not ours to act on;
6. **replay**: its MessageID has not been seen within ``max_age`` + skew (``ReplayCache``); a request that
   fails on our side (broker or store down, no key) is forgotten again, so ИПС may deliver it again.

A request refused at any of these steps gets an **unsigned** SOAP fault without ``wsa:RelatesTo``: we never
sign anything in answer to a request we could not authenticate (a forged callback must not obtain a fault
signed with our ИС key, relating to a MessageID it chose). Only then:

* ``registerDocumentResult`` and ``getRegistryItemResult`` (the record a status question asked for, which
  РЭМД sends on the callback too) → ``publish(key, raw_bytes)`` (key = normalised ``relatesToMessage``), and
  only once the broker has confirmed the write, a signed ack with ``wsa:RelatesTo`` = the callback's
  MessageID. Broker down → a ``soap:Server`` fault, so ИПС delivers the callback again. Correlation is by
  MessageID alone, here (the reply key) and in the status worker (``acknowledgment.correlate``): never by
  a bare ``localUid``, which another МИС's document may share. A signed callback that is not a valid
  result (no ``<status>``, say) gets a signed ``soap:Client`` fault.
* ``getDocumentFile`` → exactly the bytes that were signed, from ``lookup_file(localUid)``, in a signed
  reply with ``wsa:RelatesTo``. It is keyed by our ``localUid`` (РЭМД checking a registration) or by
  ``emdrId`` (another ИС asking for a registered document later: ``lookup_emdr_id(emdrId)`` gives the
  localUid). An unknown id → a ``soap:Client`` fault ``DOCUMENT_NOT_FOUND`` naming it.
* ``sendNotice`` / ``sendDocumentFile`` (related-ЭМД notices) → refused with a signed ``soap:Client``
  fault ``NOTICE_NOT_ACCEPTED``: their body is known by name only (``docs/protocol.md#operations``, [P]), and
  publishing a guessed shape to the МИС would make a contract of a guess (docs/transports.md).

``handle`` never raises: whatever goes wrong inside is an unsigned ``soap:Server`` fault, never a bare
HTTP 500 (faults travel with HTTP 500 as SOAP 1.1 prescribes, 413 for an oversized body).

Replies are signed with the key of the information system (clientEntityId) the request is for: in ЕГИСЗ
each ИС has its own key, and a deployment serving several clinics may have several (``ReplyKeys``). The
key is chosen, in order, by

1. the request's ``transportHeader/authInfo/clientEntityId``, when it names one of our ИС (whether ИПС
   puts it on callbacks is not public, ``docs/protocol.md#soap-header``: an unknown value is logged, not
   trusted to decide);
2. the document's organisation: ``lookup_organization(relatesToMessage)`` (the lifecycle store, which
   knows every MessageID we sent) or, for a result, the ``organization`` the callback names; for
   ``getDocumentFile``, the localUid's organisation;
3. the only ИС key, when just one is configured (a single-ИС deployment has nothing to choose).

No key matches → a ``soap:Server`` fault ``no_signing_key`` (unsigned: no key of ours is the right one),
and a result callback is not published, so ИПС delivers it again once the configuration is fixed.

Outcomes (the ``emd_callbacks`` label; every refusal is an HTTP status and SOAP bytes)::

    too_large            the body exceeds max_request_bytes (413, unread beyond limit + 1)
    malformed            not a SOAP request, or a signed one that is not the message expected
    forged               signature missing/invalid/untrusted, or Timestamp expired/stale (WsSecurityError reason kept)
    misaddressed         the signed wsa:To is not one of our addresses
    replayed             its MessageID was already taken within the replay window
    unknown_document     getDocumentFile for a localUid or emdrId we do not hold
    refused              a related-ЭМД notice (sendNotice, sendDocumentFile): not taken, by design
    no_signing_key       no ИС key of ours matches the request: the reply cannot be signed
    broker_unavailable   the callback could not be persisted: ИПС must retry
    store_unavailable    the document file could not be read: ИПС may ask again
    error                anything else that went wrong here (logged): an unsigned Server fault
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from producer.errors import PermanentError
from producer.ids import normalize_message_id
from services import metrics, telemetry
from services.logs import get_logger
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.wssec import WsSecurityError, verify_envelope

__all__ = [
    "CALLBACKS",
    "FORGED",
    "CallbackService",
    "INCOMING_REFERENCES",
    "MAX_REQUEST_BYTES",
    "ReplayCache",
    "Reply",
    "ReplyCredential",
    "ReplyKeys",
    "RequestTooLarge",
    "operation_of",
    "read_limited",
]

log = get_logger(__name__)

#: what an ИПС request to us must have signed ("?" = when present)
INCOMING_REFERENCES = ("Body", "Timestamp", "MessageID", "Action", "To?", "ReplyTo?")
#: the default request limit: a callback or a file request is a few KB (Settings.callback_max_request_bytes)
MAX_REQUEST_BYTES = 64 * 1024

CALLBACKS = Counter(
    "emd_callbacks",
    "Requests to the МИС callback endpoint, by operation and outcome.",
    ["operation", "outcome"],
    registry=metrics.REGISTRY,
)
FORGED = Counter(
    "emd_callbacks_forged",
    "Callback requests refused before they were believed (WS-Security, freshness, address, replay), by reason.",
    ["reason"],
    registry=metrics.REGISTRY,
)
#: outcomes a dashboard shows from the start (a counter's labelled series exists only after its first use)
_REFUSALS = ("too_large", "malformed", "forged", "misaddressed", "replayed", "error")
OUTCOMES = {
    "registerDocumentResult": ("accepted", *_REFUSALS, "no_signing_key", "broker_unavailable"),
    "getRegistryItemResult": ("accepted", *_REFUSALS, "no_signing_key", "broker_unavailable"),
    "getDocumentFile": ("served", *_REFUSALS, "unknown_document", "store_unavailable", "no_signing_key"),
    "unknown": ("too_large", "malformed", "forged"),
}
for _operation, _outcomes in OUTCOMES.items():
    for _outcome in _outcomes:
        CALLBACKS.labels(_operation, _outcome)
for _reason in (
    "WSS_MISSING",
    "WSS_SIGNATURE_INVALID",
    "WSS_DIGEST_MISMATCH",
    "WSS_UNTRUSTED_CERTIFICATE",
    "WSS_EXPIRED",
    "WSS_STALE",
    "WSS_NOT_COVERED",
    "WSS_MALFORMED",
    "WSS_MISADDRESSED",
    "WSS_REPLAYED",
):
    FORGED.labels(_reason)

Publish = Callable[[str, bytes], Awaitable[None]]
LookupFile = Callable[[str], Awaitable[bytes | None]]
#: ``async (emdrId) -> localUid | None``: the document we registered under that registry number
LookupEmdrId = Callable[[str], Awaitable[str | None]]
#: ``async (message_id, local_uid) -> organisation OID | None``: whose document a request is about (a result
#: callback passes its relatesToMessage and no localUid; a file request its localUid)
LookupOrganization = Callable[[str | None, str | None], Awaitable[str | None]]


# --- reading the body ----------------------------------------------------------------------------------


class RequestTooLarge(Exception):
    """The request body is over the limit; ``read`` is how many bytes were read before stopping."""

    def __init__(self, limit: int, read: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit, self.read = limit, read


async def read_limited(
    read: Callable[[int], Awaitable[bytes]], limit: int, *, declared: int | None = None
) -> bytes:
    """The whole body from ``read(n)`` (a stream's read: up to ``n`` bytes, ``b""`` at the end), or
    ``RequestTooLarge`` once it holds more than ``limit`` bytes: never more than ``limit + 1`` are read.
    ``declared``: the Content-Length, refused before reading anything when already over the limit."""
    if declared is not None and declared > limit:
        raise RequestTooLarge(limit, 0)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise RequestTooLarge(limit, size)


# --- replay ----------------------------------------------------------------------------------------------


class ReplayCache:
    """Callback MessageIDs taken within the last ``window`` seconds (at most ``max_entries``, oldest dropped).

    One per process: two replicas do not share it. A replay that reaches the other replica is still refused by
    freshness once the window has passed, and within it changes nothing downstream: the status worker keys a
    callback by its MessageID (the same callback decides an attempt once). The window is the freshness limit,
    so a MessageID is forgotten only when a message carrying it would be refused as stale anyway.
    """

    def __init__(
        self, window: float, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ):
        self.window, self.max_entries, self.clock = window, max_entries, clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, message_id: str) -> bool:
        """Record ``message_id``; False when it is already there (a replay)."""
        now = self.clock()
        with self._lock:
            while self._seen and (
                next(iter(self._seen.values())) < now - self.window or len(self._seen) >= self.max_entries
            ):
                self._seen.popitem(last=False)
            if message_id in self._seen:
                return False
            self._seen[message_id] = now
            return True

    def forget(self, message_id: str) -> None:
        """Let ``message_id`` be delivered again (we failed it: ИПС must be able to retry)."""
        with self._lock:
            self._seen.pop(message_id, None)


# --- reply keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCredential:
    """One information system's reply key: its clientEntityId and the organisations it registers for."""

    key: Any = field(repr=False)
    certificate: Any = field(repr=False)
    client_entity_id: str | None = None
    organizations: frozenset[str] = frozenset()


class ReplyKeys:
    """Which ИС key signs a reply (the order is in the module docstring)."""

    def __init__(self, credentials: Iterable[ReplyCredential]) -> None:
        self.credentials = list(credentials)
        if not self.credentials:
            raise ValueError("at least one ИС reply key is needed")

    def by_client(self, client_entity_id: str | None) -> ReplyCredential | None:
        return next(
            (c for c in self.credentials if client_entity_id and c.client_entity_id == client_entity_id), None
        )

    def by_organization(self, organization: str | None) -> ReplyCredential | None:
        return next((c for c in self.credentials if organization and organization in c.organizations), None)

    def only(self) -> ReplyCredential | None:
        return self.credentials[0] if len(self.credentials) == 1 else None

    def choose(self, client_entity_id: str | None, *organizations: str | None) -> ReplyCredential | None:
        found = self.by_client(client_entity_id)
        if found is None and client_entity_id:
            log.info(
                "request names a clientEntityId that is not ours: choosing the key by organisation",
                client_entity_id=client_entity_id,
            )
        for org in organizations:
            found = found or self.by_organization(org)
        return found or self.only()


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    outcome: str
    operation: str = "unknown"


class _Refused(Exception):
    """A request refused before it was believed: answered with an unsigned fault."""

    def __init__(
        self, outcome: str, reason: str, text: str, *, status: int = 500, code: str = "Client"
    ) -> None:
        super().__init__(text)
        self.outcome, self.reason, self.text, self.status, self.code = outcome, reason, text, status, code


#: the result callbacks persisted for the status worker: operation → its body element
_RESULTS = {
    "registerDocumentResult": n.REGISTER_DOCUMENT_RESULT,
    "getRegistryItemResult": n.GET_REGISTRY_ITEM_RESULT,
}


def operation_of(body_local_name: str) -> str:
    return {
        n.REGISTER_DOCUMENT_RESULT: "registerDocumentResult",
        n.GET_REGISTRY_ITEM_RESULT: "getRegistryItemResult",
        n.GET_DOCUMENT_FILE: "getDocumentFile",
        n.SEND_NOTICE: n.SEND_NOTICE,
        n.SEND_DOCUMENT_FILE: n.SEND_DOCUMENT_FILE,
    }.get(body_local_name, "unknown")


def normalize_address(address: str) -> str:
    """An address as compared with ``wsa:To``: scheme and host lower-case, no default port, no trailing slash."""
    parts = urlsplit(address.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}" + (
        f"?{parts.query}" if parts.query else ""
    )


class CallbackService:
    """The callback protocol. Keyword-only settings:

    :param trusted_certificates: the ИПС certificates a request must be signed with (pinned DER).
    :param reply_keys: the ИС keys replies are signed with (``ReplyKeys``), or
    :param key, certificate: the one ИС key and certificate, for a single-ИС deployment.
    :param publish: ``async (key, value)`` returning once the broker acknowledged the write.
    :param lookup_file: ``async (localUid) -> bytes | None``: the exact signed document bytes.
    :param lookup_organization: ``async (messageId, localUid) -> OID | None``: whose document it is
        (default: nobody's; the key is then chosen by clientEntityId, the callback's organisation, or the only key).
    :param lookup_emdr_id: ``async (emdrId) -> localUid | None`` for file requests by registry number
        (default: none known, so such a request is answered DOCUMENT_NOT_FOUND).
    :param own_addresses: the addresses a request's signed ``wsa:To`` must name (our ReplyTo addresses);
        empty: ``wsa:To`` is not checked (a test double; the service wiring always gives them).
    :param publish_timeout: seconds to wait for the broker before answering a fault (default 10).
    :param max_skew: tolerated clock difference on the WS-Security Timestamp (default 300 s).
    :param max_age: oldest ``wsu:Created`` accepted, before the skew (default 300 s); also the replay window.
    :param max_request_bytes: the body limit ``handle`` enforces too (the wiring reads with ``read_limited``).
    :param clock: ``() -> datetime`` (UTC) for the freshness checks (tests).
    """

    def __init__(
        self,
        *,
        trusted_certificates: Iterable[Any],
        publish: Publish,
        lookup_file: LookupFile,
        reply_keys: ReplyKeys | None = None,
        key: Any = None,
        certificate: Any = None,
        lookup_organization: LookupOrganization | None = None,
        lookup_emdr_id: LookupEmdrId | None = None,
        own_addresses: Iterable[str] = (),
        publish_timeout: float = 10.0,
        max_skew: float = 300.0,
        max_age: float = 300.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.trusted = list(trusted_certificates)
        if not self.trusted:
            raise ValueError("at least one trusted ИПС certificate is needed")
        if reply_keys is None:
            if key is None or certificate is None:
                raise ValueError("reply_keys, or key and certificate, are needed to sign replies")
            reply_keys = ReplyKeys([ReplyCredential(key=key, certificate=certificate)])
        self.publish, self.lookup_file = publish, lookup_file
        self.lookup_organization = lookup_organization
        self.lookup_emdr_id = lookup_emdr_id
        self.publish_timeout, self.max_skew, self.max_age = publish_timeout, max_skew, max_age
        self.max_request_bytes = max_request_bytes
        self.clock = clock
        self.replays = ReplayCache(max_age + 2 * max_skew)
        self.configure(reply_keys=reply_keys, own_addresses=own_addresses)

    async def handle(self, body: bytes) -> Reply:
        """Answer one POSTed SOAP request; never raises (the module docstring says what each refusal gets)."""
        operation = "unknown"
        taken: str | None = None
        try:
            if len(body) > self.max_request_bytes:
                return self.too_large()
            try:
                headers, payload = envelope.open_envelope(body)
            except PermanentError as exc:
                raise _Refused(
                    "malformed", "VALIDATION_ERROR", f"not a SOAP request: {exc.message}"
                ) from None
            operation = operation_of(envelope.local_name(payload))
            version = headers.soap_version
            taken = self._authenticate(body, headers, operation)
            reply = await self._dispatch(operation, body, headers, payload, version)
            if reply.outcome in ("broker_unavailable", "store_unavailable", "no_signing_key", "error"):
                self.replays.forget(taken)  # ours to fix: ИПС may deliver the same message again
            return reply
        except _Refused as refused:
            return self._done(operation, refused.outcome, self._unsigned(refused, operation))
        except Exception as exc:  # noqa: BLE001 - whatever happened, the caller gets a SOAP fault, not a crash
            if taken is not None:
                self.replays.forget(taken)
            log.error("callback failed here", operation=operation, error=f"{type(exc).__name__}: {exc}"[:300])
            failure = _Refused("error", "INTERNAL_ERROR", "internal error", code="Server")
            return self._done(operation, "error", self._unsigned(failure, operation))

    def configure(self, *, reply_keys: ReplyKeys, own_addresses: Iterable[str]) -> None:
        """Take a reloaded configuration's ИС keys and addresses (a clinic added, a key rotated)."""
        addresses = frozenset(normalize_address(a) for a in own_addresses if a and a.strip())
        self.reply_keys, self.own_addresses = reply_keys, addresses
        self.required = (
            tuple(r for r in INCOMING_REFERENCES if r != "To?") + ("To",)
            if addresses
            else INCOMING_REFERENCES
        )

    def too_large(self) -> Reply:
        """The answer to a body over ``max_request_bytes`` (the wiring stops reading it at limit + 1)."""
        refused = _Refused(
            "too_large", "REQUEST_TOO_LARGE", f"request over {self.max_request_bytes} bytes", status=413
        )
        return self._done("unknown", "too_large", self._unsigned(refused, "unknown"))

    # --- before anything is believed --------------------------------------------------------------------
    def _authenticate(self, body: bytes, headers: soap.Headers, operation: str) -> str:
        """Signature, freshness, address, replay; the MessageID taken. Raises ``_Refused``."""
        try:
            # verify on the exact received bytes before believing anything in them
            verified = verify_envelope(
                body,
                trusted_certificates=self.trusted,
                required=self.required,
                max_skew=self.max_skew,
                now=self.clock(),
            )
        except WsSecurityError as exc:
            self._refuse_log(operation, exc.reason, exc.message, headers)
            raise _Refused("forged", exc.reason, f"WS-Security check failed ({exc.reason})") from None
        except PermanentError as exc:  # the XML parsed once already: a broken signature structure
            self._refuse_log(operation, "WSS_MALFORMED", exc.message, headers)
            raise _Refused("forged", "WSS_MALFORMED", "WS-Security check failed (WSS_MALFORMED)") from None
        oldest = self.clock() - timedelta(seconds=self.max_age + self.max_skew)
        if verified.created < oldest:
            self._refuse_log(operation, "WSS_STALE", f"created {verified.created.isoformat()}", headers)
            raise _Refused(
                "forged", "WSS_STALE", "WS-Security check failed (WSS_STALE): the message is too old"
            )
        if self.own_addresses and normalize_address(headers.to or "") not in self.own_addresses:
            self._refuse_log(operation, "WSS_MISADDRESSED", f"wsa:To {headers.to!r}", headers)
            raise _Refused(
                "misaddressed", "WSS_MISADDRESSED", "the message is addressed (wsa:To) to another system"
            )
        message_id = normalize_message_id(headers.message_id) or ""
        if not message_id or not self.replays.take(message_id):
            self._refuse_log(operation, "WSS_REPLAYED", "MessageID seen within the replay window", headers)
            raise _Refused("replayed", "WSS_REPLAYED", "this MessageID was already received")
        return message_id

    @staticmethod
    def _refuse_log(operation: str, reason: str, error: str, headers: soap.Headers) -> None:
        FORGED.labels(reason).inc()
        log.warning(
            "callback refused: WS-Security",
            operation=operation,
            reason=reason,
            error=error[:300],
            message_id=headers.message_id,
        )

    def _unsigned(self, refused: _Refused, operation: str) -> Reply:
        """The fault for a request we could not authenticate: unsigned, relating to nothing it chose."""
        body = soap.build_fault(
            code=refused.code,
            reason=refused.text,
            detail_code="AUTHORIZATION_ERROR" if refused.reason.startswith("WSS_") else refused.reason,
            detail_message=refused.text,
            ips_fault="AuthorizationFault" if refused.reason.startswith("WSS_") else None,
            soap_version="1.1",
        )
        return Reply(refused.status, body, refused.outcome)

    # --- authenticated ----------------------------------------------------------------------------------
    async def _dispatch(
        self, operation: str, body: bytes, headers: soap.Headers, payload: Any, version: str
    ) -> Reply:
        if operation in _RESULTS:
            return await self._result(body, version, headers, operation)
        if operation == "getDocumentFile":
            return await self._file(body, version, headers)
        signer = self.reply_keys.choose(headers.client_entity_id)
        if operation in n.REFUSED_NOTICES:
            log.info("related-ЭМД notice refused", operation=operation, message_id=headers.message_id)
            return self._done(
                operation,
                "refused",
                self._fault(
                    "Client",
                    f"{operation}: эта ИС не принимает уведомления о связанных ЭМД; связанный документ "
                    f"запрашивается через demandContent",
                    "NOTICE_NOT_ACCEPTED",
                    headers.message_id,
                    version,
                    signer=signer,
                ),
            )
        return self._done(
            operation,
            "malformed",
            self._fault(
                "Client",
                f"unsupported operation {envelope.local_name(payload)}",
                "VALIDATION_ERROR",
                headers.message_id,
                version,
                signer=signer,
            ),
        )

    async def _organization(self, message_id: str | None, local_uid: str | None) -> str | None:
        if self.lookup_organization is None:
            return None
        try:
            return await self.lookup_organization(message_id, local_uid)
        except Exception as exc:  # noqa: BLE001 - the store is down: the other rules may still choose
            log.warning("organisation look-up failed", local_uid=local_uid, error=repr(exc))
            return None

    def _no_key(self, op: str, headers: soap.Headers, organization: str | None, version: str) -> Reply:
        reason = (
            f"no information-system key for clientEntityId [{headers.client_entity_id or '-'}], "
            f"organisation [{organization or '-'}]: the reply cannot be signed"
        )
        log.error(
            "no ИС key matches the request: answering a fault",
            operation=op,
            client_entity_id=headers.client_entity_id,
            organization=organization,
            message_id=headers.message_id,
        )
        return self._done(
            op,
            "no_signing_key",
            self._fault(
                "Server",
                reason,
                "INTERNAL_ERROR",
                headers.message_id,
                version,
                ips_fault="SystemFault",
                signer=None,
            ),
        )

    async def _result(self, body: bytes, version: str, headers: soap.Headers, op: str) -> Reply:
        try:
            result = soap.parse_callback(body)
        except PermanentError as exc:
            # authenticated, but not a result we can take (no <status>, say): a signed Client fault
            return self._done(
                op,
                "malformed",
                self._fault(
                    "Client",
                    exc.message,
                    "VALIDATION_ERROR",
                    headers.message_id,
                    version,
                    signer=self.reply_keys.choose(headers.client_entity_id),
                ),
            )
        callback_id = result.headers.message_id
        key = normalize_message_id(result.relates_to_message)
        telemetry.annotate(message_id=key, local_uid=result.local_uid)
        # whose document: by the MessageID we sent alone, never by a bare localUid (another МИС may use it)
        organization = await self._organization(key, None)
        signer = self.reply_keys.choose(result.headers.client_entity_id, organization, result.organization)
        if signer is None:  # checked before publishing: ИПС must deliver again once a key is configured
            return self._no_key(op, result.headers, organization or result.organization, version)
        try:
            await asyncio.wait_for(self.publish(key, body), timeout=self.publish_timeout)
        except Exception as exc:  # noqa: BLE001 - whatever the broker did, ИПС must deliver again
            log.warning(
                "callback not persisted, answering a fault",
                relates_to=key,
                callback_id=callback_id,
                error=repr(exc),
            )
            return self._done(
                op,
                "broker_unavailable",
                self._fault(
                    "Server",
                    "callback could not be stored, deliver it again",
                    "INTERNAL_ERROR",
                    callback_id,
                    version,
                    ips_fault="SystemFault",
                    signer=signer,
                ),
            )
        log.info(
            "callback persisted", operation=op, relates_to=key, callback_id=callback_id, status=result.status
        )
        ack = soap.build_callback_ack(
            relates_to=callback_id or "",
            key=signer.key,
            certificate=signer.certificate,
            soap_version=version,
            answering=_RESULTS[op],
        )
        return self._done(op, "accepted", Reply(200, ack, "accepted"))

    async def _file(self, body: bytes, version: str, headers: soap.Headers) -> Reply:
        op = "getDocumentFile"
        try:
            req = soap.parse_file_request(body)
        except PermanentError as exc:
            return self._done(
                op,
                "malformed",
                self._fault(
                    "Client",
                    exc.message,
                    "VALIDATION_ERROR",
                    headers.message_id,
                    version,
                    signer=self.reply_keys.choose(headers.client_entity_id),
                ),
            )
        asked = f"emdrId [{req.emdr_id}]" if req.emdr_id else f"localUid [{req.local_uid}]"
        telemetry.annotate(message_id=req.headers.message_id, local_uid=req.local_uid)
        try:
            local_uid = req.local_uid or await self._by_emdr_id(req.emdr_id or "")
            organization = await self._organization(None, local_uid)
            signer = self.reply_keys.choose(req.headers.client_entity_id, organization)
            data = await self.lookup_file(local_uid) if local_uid else None
        except Exception as exc:  # noqa: BLE001 - a store outage is ours: ИПС may ask again
            log.warning("document file unavailable", asked=asked, error=repr(exc))
            return self._done(
                op,
                "store_unavailable",
                self._fault(
                    "Server",
                    "document store unavailable",
                    "INTERNAL_ERROR",
                    req.headers.message_id,
                    version,
                    ips_fault="SystemFault",
                    signer=self.reply_keys.choose(req.headers.client_entity_id),
                ),
            )
        if data is None:
            log.warning("getDocumentFile for an unknown document", asked=asked)
            return self._done(
                op,
                "unknown_document",
                self._fault(
                    "Client",
                    f"document {asked} is not known to this system",
                    "DOCUMENT_NOT_FOUND",
                    req.headers.message_id,
                    version,
                    signer=signer,
                ),
            )
        if signer is None:
            return self._no_key(op, req.headers, organization, version)
        reply = soap.build_file_response(
            relates_to=req.headers.message_id or "",
            data=data,
            key=signer.key,
            certificate=signer.certificate,
            soap_version=version,
        )
        log.info("document file served", local_uid=local_uid, emdr_id=req.emdr_id, size=len(data))
        return self._done(op, "served", Reply(200, reply, "served"))

    async def _by_emdr_id(self, emdr_id: str) -> str | None:
        return await self.lookup_emdr_id(emdr_id) if self.lookup_emdr_id is not None and emdr_id else None

    def _fault(
        self,
        code: str,
        reason: str,
        detail: str,
        relates_to: str | None,
        version: str,
        *,
        ips_fault: str | None = None,
        signer: ReplyCredential | None,
    ) -> Reply:
        """A SOAP fault to an authenticated request, signed with ``signer`` (unsigned when no key of ours is
        the right one)."""
        body = soap.build_fault(
            code=code,
            reason=reason,
            detail_code=detail,
            detail_message=reason,
            ips_fault=ips_fault,
            relates_to=relates_to,
            soap_version=version,
            key=signer.key if signer else None,
            certificate=signer.certificate if signer else None,
        )
        return Reply(500, body, "fault")

    @staticmethod
    def _done(operation: str, outcome: str, reply: Reply) -> Reply:
        CALLBACKS.labels(operation, outcome).inc()
        return Reply(reply.status, reply.body, outcome, operation)
