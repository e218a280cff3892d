"""The МИС callback endpoint ИПС calls: ``registerDocumentResult`` and ``getDocumentFile`` (brief §4, §8.3–8.4).

``CallbackService.handle(body)`` is the whole protocol, without HTTP or Kafka (both are injected), so it
is tested directly and wired by ``workers/callbacks/worker.py``. Every request:

1. is verified (``wssec.verify_envelope``) against the pinned ИПС certificates. Callbacks are requests
   addressed to us but ИПС need not sign ``wsa:To``, so the required coverage is Body, Timestamp,
   MessageID and Action (To/ReplyTo when present). Unsigned, forged, expired → a SOAP Fault (HTTP 500,
   ``soap:Client``), logged, counted in ``emd_callbacks_forged``; nothing is published or read.
2. ``registerDocumentResult`` → ``publish(key, raw_bytes)`` (key = normalised ``relatesToMessage``),
   and only once the broker has confirmed the write, a signed ack with ``wsa:RelatesTo`` = the
   callback's MessageID. Broker down → a ``soap:Server`` fault, so ИПС delivers the callback again.
   Processing (correlation, state) is the status worker's job, from the topic (ИПС etiquette: answer fast).
3. ``getDocumentFile`` → exactly the bytes that were signed, from ``lookup_file(localUid)``, in a signed
   reply with ``wsa:RelatesTo``. It is keyed by our ``localUid`` (РЭМД checking a registration) or by
   ``emdrId`` (another ИС asking for a registered document later: ``lookup_emdr_id(emdrId)`` gives the
   localUid). An unknown id → a ``soap:Client`` fault ``DOCUMENT_NOT_FOUND`` naming it.
4. ``sendNotice`` / ``sendDocumentFile`` (related-ЭМД notices) → verified like every request, then refused
   with a signed ``soap:Client`` fault ``NOTICE_NOT_ACCEPTED``: their body is known by name only (addendum
   [P]), and publishing a guessed shape to the МИС would make a contract of a guess (docs/transports.md).

Replies are signed with the key of the information system (clientEntityId) the request is for: in ЕГИСЗ
each ИС has its own key, and a deployment serving several clinics may have several (``ReplyKeys``). The
key is chosen, in order, by

1. the request's ``transportHeader/authInfo/clientEntityId``, when it names one of our ИС (whether ИПС
   puts it on callbacks is not public, brief §2.3: an unknown value is logged, not trusted to decide);
2. the document's organisation: ``lookup_organization(relatesToMessage, localUid)`` (the lifecycle store,
   which knows every MessageID we sent) or, for a result, the ``organization`` the callback names; for
   ``getDocumentFile``, the localUid's organisation;
3. the only ИС key, when just one is configured (a single-ИС deployment has nothing to choose).

No key matches → a ``soap:Server`` fault ``no_signing_key`` (unsigned: no key of ours is the right one),
and a result callback is not published, so ИПС delivers it again once the configuration is fixed.

Error hierarchy (what a caller of ``handle`` sees is always an HTTP status and SOAP bytes)::

    CallbackRejected            → HTTP 500 + soap Fault, outcome label in emd_callbacks
    ├── forged                  signature missing/invalid/untrusted/expired (WsSecurityError reason kept)
    ├── malformed               not the SOAP message expected
    ├── unknown_document        getDocumentFile for a localUid or emdrId we do not hold
    ├── refused                 a related-ЭМД notice (sendNotice, sendDocumentFile): not taken, by design
    ├── no_signing_key          no ИС key of ours matches the request: the reply cannot be signed
    └── broker_unavailable      the callback could not be persisted: ИПС must retry
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from producer.errors import PermanentError
from producer.ids import normalize_message_id
from services import metrics
from services.logs import get_logger
from services.remd import envelope, soap
from services.remd import names as n
from services.remd.wssec import verify_envelope

__all__ = [
    "CALLBACKS",
    "FORGED",
    "CallbackService",
    "INCOMING_REFERENCES",
    "ReplyCredential",
    "ReplyKeys",
    "operation_of",
]

log = get_logger(__name__)

#: what an ИПС request to us must have signed ("?" = when present)
INCOMING_REFERENCES = ("Body", "Timestamp", "MessageID", "Action", "To?", "ReplyTo?")

CALLBACKS = Counter(
    "emd_callbacks",
    "Requests to the МИС callback endpoint, by operation and outcome.",
    ["operation", "outcome"],
    registry=metrics.REGISTRY,
)
FORGED = Counter(
    "emd_callbacks_forged",
    "Callback requests refused for their WS-Security, by reason.",
    ["reason"],
    registry=metrics.REGISTRY,
)
#: outcomes a dashboard shows from the start (a counter's labelled series exists only after its first use)
OUTCOMES = {
    "registerDocumentResult": ("accepted", "forged", "malformed", "no_signing_key", "broker_unavailable"),
    "getDocumentFile": ("served", "forged", "malformed", "unknown_document", "store_unavailable"),
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
    "WSS_NOT_COVERED",
    "WSS_MALFORMED",
):
    FORGED.labels(_reason)

Publish = Callable[[str, bytes], Awaitable[None]]
LookupFile = Callable[[str], Awaitable[bytes | None]]
#: ``async (emdrId) -> localUid | None``: the document we registered under that registry number
LookupEmdrId = Callable[[str], Awaitable[str | None]]
#: ``async (message_id, local_uid) -> organisation OID | None``: whose document a request is about
LookupOrganization = Callable[[str | None, str | None], Awaitable[str | None]]


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


def operation_of(body_local_name: str) -> str:
    return {
        n.REGISTER_DOCUMENT_RESULT: "registerDocumentResult",
        n.GET_DOCUMENT_FILE: "getDocumentFile",
        n.SEND_NOTICE: n.SEND_NOTICE,
        n.SEND_DOCUMENT_FILE: n.SEND_DOCUMENT_FILE,
    }.get(body_local_name, "unknown")


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
    :param publish_timeout: seconds to wait for the broker before answering a fault (default 10).
    :param max_skew: tolerated clock difference on the WS-Security Timestamp (default 300 s).
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
        publish_timeout: float = 10.0,
        max_skew: float = 300.0,
    ) -> None:
        self.trusted = list(trusted_certificates)
        if not self.trusted:
            raise ValueError("at least one trusted ИПС certificate is needed")
        if reply_keys is None:
            if key is None or certificate is None:
                raise ValueError("reply_keys, or key and certificate, are needed to sign replies")
            reply_keys = ReplyKeys([ReplyCredential(key=key, certificate=certificate)])
        self.reply_keys = reply_keys
        self.publish, self.lookup_file = publish, lookup_file
        self.lookup_organization = lookup_organization
        self.lookup_emdr_id = lookup_emdr_id
        self.publish_timeout, self.max_skew = publish_timeout, max_skew

    async def handle(self, body: bytes) -> Reply:
        """Answer one POSTed SOAP request: the acknowledgement, the file, or a SOAP fault saying what is wrong.
        Only a bug (an exception no step expects) escapes, and the HTTP server answers it with a bare 500."""
        operation = "unknown"
        try:
            headers, payload = envelope.open_envelope(body)
            operation = operation_of(envelope.local_name(payload))
            version = headers.soap_version
        except PermanentError as exc:
            return self._done(
                operation,
                "malformed",
                self._fault(
                    "Client",
                    f"not a SOAP request: {exc.message}",
                    "VALIDATION_ERROR",
                    None,
                    "1.1",
                    signer=self.reply_keys.only(),
                ),
            )
        try:
            # verify on the exact received bytes before believing anything in them
            verify_envelope(
                body, trusted_certificates=self.trusted, required=INCOMING_REFERENCES, max_skew=self.max_skew
            )
        except PermanentError as exc:
            FORGED.labels(exc.reason).inc()
            log.warning(
                "callback refused: WS-Security",
                operation=operation,
                reason=exc.reason,
                error=exc.message,
                message_id=headers.message_id,
            )
            # nothing in a forged request is believed: no store look-up to choose the key
            return self._done(
                operation,
                "forged",
                self._fault(
                    "Client",
                    f"WS-Security check failed ({exc.reason})",
                    "AUTHORIZATION_ERROR",
                    headers.message_id,
                    version,
                    ips_fault="AuthorizationFault",
                    signer=self.reply_keys.choose(headers.client_entity_id),
                ),
            )
        if operation == "registerDocumentResult":
            return await self._result(body, version)
        if operation == "getDocumentFile":
            return await self._file(body, version)
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
                    signer=self.reply_keys.choose(headers.client_entity_id),
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
                signer=self.reply_keys.choose(headers.client_entity_id),
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

    async def _result(self, body: bytes, version: str) -> Reply:
        op = "registerDocumentResult"
        try:
            result = soap.parse_register_result(body)
        except PermanentError as exc:
            return self._done(
                op,
                "malformed",
                self._fault(
                    "Client", exc.message, "VALIDATION_ERROR", None, version, signer=self.reply_keys.only()
                ),
            )
        callback_id = result.headers.message_id
        key = normalize_message_id(result.relates_to_message)
        organization = await self._organization(key, result.local_uid)
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
        log.info("callback persisted", relates_to=key, callback_id=callback_id, status=result.status)
        ack = soap.build_callback_ack(
            relates_to=callback_id or "", key=signer.key, certificate=signer.certificate, soap_version=version
        )
        return self._done(op, "accepted", Reply(200, ack, "accepted"))

    async def _file(self, body: bytes, version: str) -> Reply:
        op = "getDocumentFile"
        try:
            req = soap.parse_file_request(body)
        except PermanentError as exc:
            return self._done(
                op,
                "malformed",
                self._fault(
                    "Client", exc.message, "VALIDATION_ERROR", None, version, signer=self.reply_keys.only()
                ),
            )
        asked = f"emdrId [{req.emdr_id}]" if req.emdr_id else f"localUid [{req.local_uid}]"
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
        """A SOAP fault, signed with ``signer`` (unsigned when no key of ours is the right one)."""
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
        return Reply(reply.status, reply.body, outcome)
