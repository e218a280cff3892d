"""The callback service's HTTP side: ``services.pipeline.callbacks.CallbackService`` served by aiohttp.

``CallbackEndpoint`` is a service of the callback process's ``App`` (``workers/callbacks/worker.py``):

* it waits for the signer's mark in the claim-check store (``require_signer_store``: the references it serves
  to РЭМД are the signer's), starts a producer on ``emd.remd.callbacks`` through the runtime's transport,
  and serves POST on any path on ``EMD_CALLBACK_HOST``:``EMD_CALLBACK_PORT``;
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from producer import topology
from producer.errors import ConfigurationError
from services import lifecycle
from services.config import Settings
from services.crypto.certificates import load_certificate
from services.documents.store import DocumentStore, document_bytes, require_signer_store
from services.logs import get_logger
from services.messaging import transports
from services.messaging.records import Output
from services.messaging.shutdown import HttpDrain
from services.messaging.transport import Producer, Transport
from services.pipeline.callbacks import CallbackService, ReplyCredential, ReplyKeys
from services.pipeline.organizations import load_organizations
from services.remd import envelope

log = get_logger(__name__)

#: the largest request body accepted (a getDocumentFile request is small; a result callback a few KB)
MAX_BODY_BYTES = 64 * 1024 * 1024


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


def reply_credentials(settings: Settings) -> ReplyKeys:
    """The ИС keys replies are signed with: each organisation's ``remd`` system credential, under its
    clientEntityId. An organisation whose key cannot be loaded is left out (its requests get a
    ``no_signing_key`` fault; the others are served)."""
    config = load_organizations(settings.organizations_file)
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


def organization_lookup(
    store: lifecycle.LifecycleStore,
) -> Callable[[str | None, str | None], Awaitable[str | None]]:
    """``async (messageId, localUid) -> OID | None``: the organisation of the document a request is about."""

    def lookup(message_id: str | None, local_uid: str | None) -> str | None:
        found = store.find_by_message_id(message_id) if message_id else None
        if found is not None:
            return found[0].organization
        doc = store.get(local_uid) if local_uid else None
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
    store: lifecycle.LifecycleStore, docs: DocumentStore | None
) -> Callable[[str], Awaitable[bytes | None]]:
    """``async (localUid) -> bytes | None`` from the lifecycle store's signed event / document reference."""

    def lookup(local_uid: str) -> bytes | None:
        doc = store.get(local_uid)
        if doc is None:
            return None
        if doc.signed_event:
            return document_bytes(json.loads(doc.signed_event)["data"]["document"], docs)
        if doc.document_ref and docs is not None:
            return docs.get(doc.document_ref)
        return None

    async def run(local_uid: str) -> bytes | None:
        return await asyncio.to_thread(lookup, local_uid)

    return run


class CallbackEndpoint:
    """The HTTP endpoint ИПС calls, as a service of an ``App``.

    :param settings: host, port, start-up grace, shutdown grace.
    :param store: the lifecycle store (closed by the app's stop hook, not here).
    :param documents: the claim-check store (the signer's).
    :param reply_keys: the ИС keys replies are signed with.
    :param trusted_certificates: the pinned ИПС certificates.
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
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.documents = documents
        self.reply_keys = reply_keys
        self.trusted_certificates = trusted_certificates
        self.transport = transport
        self.host, self.port = settings.callback_host, settings.callback_port
        self._listening = False
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None

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
            runner = draining.runner(self._web_app(producer, draining))
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

    def _web_app(self, producer: Producer, draining: HttpDrain) -> web.Application:
        async def publish(key: str, value: bytes) -> None:
            await producer.send([Output(topology.CALLBACKS.name, value, key)])

        service = CallbackService(
            trusted_certificates=self.trusted_certificates,
            reply_keys=self.reply_keys,
            publish=publish,
            lookup_file=file_lookup(self.store, self.documents),
            lookup_organization=organization_lookup(self.store),
            lookup_emdr_id=emdr_lookup(self.store),
        )

        async def handle(request: web.Request) -> web.Response:
            reply = await service.handle(await request.read())
            return web.Response(
                status=reply.status,
                body=reply.body,
                headers={"Content-Type": envelope.content_type(envelope.version_of(reply.body))},
            )

        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[draining.middleware])
        app.router.add_post("/{tail:.*}", handle)
        return app
