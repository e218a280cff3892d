"""The callback service's HTTP side: ``services.pipeline.callbacks.CallbackService`` served by aiohttp.

``CallbackEndpoint`` is a service of the callback process's ``App`` (``workers/callbacks/worker.py``):

* it waits for the signer's mark in the claim-check store (``require_signer_store``: the references it serves
  to РЭМД are the signer's), starts a producer on ``emd.remd.callbacks`` through the runtime's transport,
  and serves POST on any path on ``EMD_CALLBACK_HOST``:``EMD_CALLBACK_PORT``;
* it reads a body with ``read_limited``: never more than ``EMD_CALLBACK_MAX_REQUEST_BYTES`` + 1 bytes, a
  larger request answered 413 unparsed (``callback_app``), before ``CallbackService`` checks the signature,
  freshness, ``wsa:To`` (``own_addresses``) and replay;
* it signs replies with the information systems' keys alone (``reply_credentials`` of a configuration loaded
  with ``role="callbacks"``), and takes a reloaded configuration's keys and addresses (``reconfigure``);
* ``publish`` returns only after the broker confirmed the write (``Producer.send``), so a callback is on the
  topic before ИПС gets its ack;
* on ``request_stop()`` (SIGTERM) it drains (``services.messaging.shutdown.HttpDrain``): it stops accepting
  connections and lets the requests in progress finish — one whose body is still arriving included — for
  ``EMD_SHUTDOWN_GRACE_SECONDS`` before closing; the producer closes after that, so an acked callback is on the
  topic.

Its metrics and ``/healthz`` are the ``App``'s, on their own port (``EMD_METRICS_PORT``), apart from the SOAP port
the ingress exposes. The lookups read the lifecycle store (what the sender registered) in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from producer import topology
from producer.errors import ConfigurationError
from services import lifecycle, telemetry
from services.config import Settings
from services.crypto.certificates import load_certificate
from services.documents.store import DocumentStore, document_bytes, require_signer_store
from services.logs import get_logger
from services.messaging import tracing, transports
from services.messaging.records import Output
from services.messaging.shutdown import HttpDrain
from services.messaging.transport import Producer, Transport
from services.pipeline.callbacks import (
    CallbackService,
    ReplyCredential,
    ReplyKeys,
    RequestTooLarge,
    read_limited,
)
from services.pipeline.organizations import OrganizationsConfig
from services.remd import envelope

log = get_logger(__name__)

#: after a 413, how long aiohttp goes on receiving the rest of the body, discarding it unbuffered, before it
#: closes: a close with unread bytes pending makes the kernel send a reset that can destroy the 413 before the
#: client reads it (nginx's lingering_close does the same). aiohttp's default is 10 s; 2 s bounds what one
#: oversized request costs, and the handler itself never reads past the limit + 1.
LINGERING_SECONDS = 2.0


def load_ips_certificates(spec: str) -> list[Any]:
    """The pinned ИПС certificates from ``EMD_IPS_CERTIFICATES`` (comma-separated files)."""
    certs = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            certs.append(load_certificate(Path(part).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"EMD_IPS_CERTIFICATES: {part}: {exc}") from None
    if not certs:
        raise ConfigurationError("EMD_IPS_CERTIFICATES is empty: callbacks cannot be verified")
    return certs


def reply_credentials(config: OrganizationsConfig) -> ReplyKeys:
    """The ИС keys replies are signed with: each organisation's ``remd`` system credential, under its
    clientEntityId. An organisation whose key cannot be loaded is left out (its requests get a
    ``no_signing_key`` fault; the others are served)."""
    credentials = []
    for org in config.organizations.values():
        if org.remd is None or org.remd.system is None:
            continue
        if not org.remd.system.usable:
            log.error(
                "organisation's ИС key unusable: its callback replies cannot be signed", organization=org.oid
            )
            continue
        credentials.append(
            ReplyCredential(
                key=org.remd.system.signer(),  # signs XMLDSig via sign_digest
                certificate=org.remd.system.certificate,
                client_entity_id=org.remd.client_entity_id,
                organizations=frozenset({org.oid}),
            )
        )
    if not credentials:
        raise ConfigurationError(
            "no organisation has a usable remd.system_key: callback replies cannot be signed"
        )
    return ReplyKeys(credentials)


def _only_document(store: lifecycle.LifecycleStore, local_uid: str) -> lifecycle.Document | None:
    """The one document under ``local_uid``; None when there is none, or when several organisations use that
    localUid (a request naming only the localUid then names no document: it is not guessed)."""
    found = store.documents_of(local_uid)
    if len(found) > 1:
        log.warning(
            "a localUid of several organisations: the request names no one document", local_uid=local_uid
        )
    return found[0] if len(found) == 1 else None


def own_addresses(config: OrganizationsConfig, settings: Settings) -> list[str]:
    """The addresses a callback's wsa:To may name: every organisation's ``remd.callback_url`` (the ReplyTo the
    sender puts on its requests) and ``EMD_CALLBACK_ADDRESSES``."""
    found = [o.remd.callback_url for o in config.organizations.values() if o.remd and o.remd.callback_url]
    found += [a.strip() for a in settings.callback_addresses.split(",") if a.strip()]
    if not found:
        raise ConfigurationError(
            "no remd.callback_url in the organisations file and EMD_CALLBACK_ADDRESSES is empty: "
            "a callback's wsa:To cannot be checked"
        )
    return found


def organization_lookup(
    store: lifecycle.LifecycleStore,
) -> Callable[[str | None, str | None], Awaitable[str | None]]:
    """``async (messageId, localUid) -> OID | None``: the organisation of the document a request is about: by
    the MessageID we sent when the request names one (a result callback: never by its bare localUid), else by
    our localUid (a file request, which names nothing else)."""

    def lookup(message_id: str | None, local_uid: str | None) -> str | None:
        if message_id:
            # a registration's MessageID, or a registry question's (a getRegistryItemResult answers one)
            found = store.find_by_message_id(message_id) or store.find_registry_request(message_id)
            if found is not None:
                return found[0].organization
        doc = _only_document(store, local_uid) if local_uid else None
        return doc.organization if doc is not None else None

    async def run(message_id: str | None, local_uid: str | None) -> str | None:
        return await asyncio.to_thread(lookup, message_id, local_uid)

    return run


def emdr_lookup(store: lifecycle.LifecycleStore) -> Callable[[str], Awaitable[str | None]]:
    """``async (emdrId) -> localUid | None``: the document we registered under that registry number."""

    def lookup(emdr_id: str) -> str | None:
        doc = store.find_by_emdr_id(emdr_id)
        return doc.local_uid if doc is not None else None

    async def run(emdr_id: str) -> str | None:
        return await asyncio.to_thread(lookup, emdr_id)

    return run


def file_lookup(
    store: lifecycle.LifecycleStore, docs: DocumentStore | None, *, max_bytes: int | None = None
) -> Callable[[str], Awaitable[bytes | None]]:
    """``async (localUid) -> bytes | None`` from the lifecycle store's signed event / document reference; a
    document over ``max_bytes`` is refused before it is read."""

    def lookup(local_uid: str) -> bytes | None:
        doc = _only_document(store, local_uid)
        if doc is None:
            return None
        if doc.signed_event:
            return document_bytes(json.loads(doc.signed_event)["data"]["document"], docs, max_bytes=max_bytes)
        if doc.document_ref and docs is not None:
            return docs.get(doc.document_ref, max_bytes=max_bytes)
        return None

    async def run(local_uid: str) -> bytes | None:
        return await asyncio.to_thread(lookup, local_uid)

    return run


def callback_app(service: CallbackService, *, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """The aiohttp application: POST on any path, the body read with ``read_limited`` (never more than the
    limit + 1 bytes: a larger request is answered 413 and its connection closed, the rest unread)."""

    async def handle(request: web.Request) -> web.Response:
        try:
            body = await read_limited(
                request.content.read, service.max_request_bytes, declared=request.content_length
            )
        except RequestTooLarge as exc:
            log.warning("callback request too large: refused unread", limit=exc.limit, read=exc.read)
            reply = service.too_large()
            response = web.Response(status=reply.status, body=reply.body, headers=_content_type(reply.body))
            response.force_close()  # the connection ends with this answer
            return response
        with telemetry.span("callback", attributes={"emd.stage": "callbacks"}) as span:
            reply = await service.handle(body)
            telemetry.set_outcome(
                span,
                "ok" if reply.status < 400 else reply.outcome,
                reason=None if reply.status < 400 else reply.outcome,
                name=f"callback {reply.operation}",
            )
        return web.Response(status=reply.status, body=reply.body, headers=_content_type(reply.body))

    # aiohttp's own limit is a second fence, should anything call request.read()
    app = web.Application(client_max_size=service.max_request_bytes + 1, middlewares=list(middlewares))
    app.router.add_post("/{tail:.*}", handle)
    return app


def callback_runner(service: CallbackService, *, middlewares: Sequence[Middleware] = ()) -> web.AppRunner:
    """The runner of ``callback_app`` (no access log: ИПС traffic is counted in metrics and logged by outcome),
    stopped as ``HttpDrain.runner``'s is (its drain waits for the requests in flight; then one more second)."""
    return web.AppRunner(
        callback_app(service, middlewares=middlewares),
        access_log=None,
        lingering_time=LINGERING_SECONDS,
        shutdown_timeout=1.0,
    )


def _content_type(body: bytes) -> dict[str, str]:
    return {"Content-Type": envelope.content_type(envelope.version_of(body))}


class CallbackEndpoint:
    """The HTTP endpoint ИПС calls, as a service of an ``App``.

    :param settings: host, port, start-up grace, shutdown grace.
    :param store: the lifecycle store (closed by the app's stop hook, not here).
    :param documents: the claim-check store (the signer's).
    :param reply_keys: the ИС keys replies are signed with.
    :param trusted_certificates: the pinned ИПС certificates.
    :param own_addresses: what a callback's signed ``wsa:To`` must name (``own_addresses``).
    :param transport: where callbacks are published (default: ``transports.for_settings(settings)``).
    """

    name = "callbacks"

    def __init__(
        self,
        *,
        settings: Settings,
        store: lifecycle.LifecycleStore,
        documents: DocumentStore,
        reply_keys: ReplyKeys,
        trusted_certificates: list[Any],
        own_addresses: list[str],
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.documents = documents
        self.reply_keys = reply_keys
        self.trusted_certificates = trusted_certificates
        self.own_addresses = own_addresses
        self.service: CallbackService | None = None
        self.transport = transport
        self.host, self.port = settings.callback_host, settings.callback_port
        self._listening = False
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None

    def reconfigure(self, config: OrganizationsConfig) -> None:
        """Take a reloaded configuration's ИС keys and callback addresses (a clinic added, a key rotated)."""
        self.reply_keys = reply_credentials(config)
        self.own_addresses = own_addresses(config, self.settings)
        if self.service is not None:
            self.service.configure(reply_keys=self.reply_keys, own_addresses=self.own_addresses)

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def health(self) -> tuple[bool, str]:
        return True, "ok\n"

    def ready(self) -> tuple[bool, str]:
        return (True, "ok: listening\n") if self._listening else (False, "not ready: not listening yet\n")

    async def run(self, *, burst: bool = False) -> None:
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        await asyncio.to_thread(
            require_signer_store, self.documents, wait=self.settings.startup_grace_seconds
        )
        transport = self.transport or transports.for_settings(self.settings)
        producer = await transport.producer(client_id=self.name, topics=[topology.CALLBACKS.name])
        draining = HttpDrain(grace=self.settings.shutdown_grace_seconds)
        try:
            runner = callback_runner(self._service(producer), middlewares=[draining.middleware])
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, self.port).start()
                self._listening = True
                log.info("callback endpoint listening", host=self.host, port=self.port)
                await self._stopping.wait()
            finally:
                self._listening = False
                await draining.drain(runner, name=self.name)  # no new connections; requests in flight finish
        finally:
            await producer.stop()

    def _service(self, producer: Producer) -> CallbackService:
        async def publish(key: str, value: bytes) -> None:
            await producer.send(tracing.stamped([Output(topology.CALLBACKS.name, value, key)]))

        self.service = CallbackService(
            trusted_certificates=self.trusted_certificates,
            reply_keys=self.reply_keys,
            publish=publish,
            lookup_file=file_lookup(self.store, self.documents, max_bytes=self.settings.max_document_bytes),
            lookup_organization=organization_lookup(self.store),
            lookup_emdr_id=emdr_lookup(self.store),
            own_addresses=self.own_addresses,
            max_age=self.settings.callback_max_age_seconds,
            max_skew=self.settings.callback_clock_skew_seconds,
            max_request_bytes=self.settings.callback_max_request_bytes,
        )
        return self.service
