"""``emd callbacks``: the HTTP endpoint ИПС calls (thin wiring of ``services.pipeline.callbacks.CallbackService``).

Its metrics (``emd_callbacks_total``, ``emd_callbacks_forged_total``…) and ``/healthz`` are served on their own
port (``EMD_METRICS_PORT``), apart from the SOAP port the ingress exposes: the world reaches the callback
endpoint, only Prometheus and the kubelet the metrics.

aiohttp serves POST on any path; the publisher is an aiokafka producer with ``acks=all`` whose
``send_and_wait`` returns only after the broker confirmed the write; the file lookup reads the lifecycle
store (what the sender registered) and resolves the bytes through the claim-check store, the signer's: the
service does not start until it finds the signer's mark there (``require_signer_store``). Replies are
signed per information system: every organisation's ``remd`` system key, chosen per request by
``services.pipeline.callbacks.ReplyKeys`` (clientEntityId, then the document's organisation from the lifecycle store).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from producer import topology
from producer.errors import ConfigurationError
from services import lifecycle
from services.config import Settings
from services.crypto.certificates import load_certificate
from services.documents.store import DocumentStore, document_bytes, require_signer_store, store_from_settings
from services.logs import get_logger
from services.messaging.clients import start_producer
from services.metrics import MetricsServer
from services.pipeline.callbacks import (
    CallbackService,
    ReplyCredential,
    ReplyKeys,
    RequestTooLarge,
    read_limited,
)
from services.pipeline.organizations import OrganizationsConfig, load_organizations, watch_organizations
from services.remd import envelope

log = get_logger(__name__)


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


def organization_lookup(store: lifecycle.LifecycleStore):
    """``async (messageId, localUid) -> OID | None``: the organisation of the document a request is about: by
    the MessageID we sent when the request names one (a result callback: never by its bare localUid), else by
    our localUid (a file request, which names nothing else)."""

    def lookup(message_id: str | None, local_uid: str | None) -> str | None:
        if message_id:
            found = store.find_by_message_id(message_id)
            return found[0].organization if found is not None else None
        doc = store.get(local_uid) if local_uid else None
        return doc.organization if doc is not None else None

    async def run(message_id: str | None, local_uid: str | None) -> str | None:
        return await asyncio.to_thread(lookup, message_id, local_uid)

    return run


def emdr_lookup(store: lifecycle.LifecycleStore):
    """``async (emdrId) -> localUid | None``: the document we registered under that registry number."""

    def lookup(emdr_id: str) -> str | None:
        doc = store.find_by_emdr_id(emdr_id)
        return doc.local_uid if doc is not None else None

    async def run(emdr_id: str) -> str | None:
        return await asyncio.to_thread(lookup, emdr_id)

    return run


def file_lookup(store: lifecycle.LifecycleStore, docs: DocumentStore | None):
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


def callback_app(service: CallbackService) -> web.Application:
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
        reply = await service.handle(body)
        return web.Response(status=reply.status, body=reply.body, headers=_content_type(reply.body))

    # aiohttp's own limit is a second fence, should anything call request.read()
    app = web.Application(client_max_size=service.max_request_bytes + 1)
    app.router.add_post("/{tail:.*}", handle)
    return app


#: after a 413, how long aiohttp goes on receiving the rest of the body, discarding it unbuffered, before it
#: closes: a close with unread bytes pending makes the kernel send a reset that can destroy the 413 before the
#: client reads it (nginx's lingering_close does the same). aiohttp's default is 10 s; 2 s bounds what one
#: oversized request costs, and the handler itself never reads past the limit + 1.
LINGERING_SECONDS = 2.0


def callback_runner(service: CallbackService) -> web.AppRunner:
    """The runner of ``callback_app`` (no access log: ИПС traffic is counted in metrics and logged by outcome)."""
    return web.AppRunner(callback_app(service), access_log=None, lingering_time=LINGERING_SECONDS)


def _content_type(body: bytes) -> dict[str, str]:
    return {"Content-Type": envelope.content_type(envelope.version_of(body))}


async def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the endpoint until ``stop`` is set (or forever)."""
    # the ИС keys alone (never a doctor's or an organisation's); reloaded when their Secret changes
    config = load_organizations(settings.organizations_file, role="callbacks")
    reply_keys = reply_credentials(config)
    trusted = load_ips_certificates(settings.ips_certificates)
    store = lifecycle.open_store(
        settings.data_dir, url=settings.lifecycle_store_url, wait=settings.startup_grace_seconds
    )
    docs = store_from_settings(settings)
    await asyncio.to_thread(require_signer_store, docs, wait=settings.startup_grace_seconds)
    producer = await start_producer(settings, client_id="callbacks", topics=[topology.CALLBACKS.name])

    async def publish(k: str, value: bytes) -> None:
        await producer.send_and_wait(topology.CALLBACKS.name, value=value, key=k.encode())

    service = CallbackService(
        trusted_certificates=trusted,
        reply_keys=reply_keys,
        publish=publish,
        lookup_file=file_lookup(store, docs),
        lookup_organization=organization_lookup(store),
        lookup_emdr_id=emdr_lookup(store),
        own_addresses=own_addresses(config, settings),
        max_age=settings.callback_max_age_seconds,
        max_skew=settings.callback_clock_skew_seconds,
        max_request_bytes=settings.callback_max_request_bytes,
    )

    config.on_reload(
        lambda c: service.configure(reply_keys=reply_credentials(c), own_addresses=own_addresses(c, settings))
    )
    watch_organizations(config, interval=settings.organizations_reload_seconds)
    metrics_server = MetricsServer(host=settings.metrics_host, port=settings.metrics_port).start()
    log.info("metrics", url=metrics_server.url)
    runner = callback_runner(service)
    await runner.setup()
    site = web.TCPSite(
        runner, host or settings.callback_host, port if port is not None else settings.callback_port
    )
    await site.start()
    log.info(
        "callback endpoint listening",
        host=host or settings.callback_host,
        port=port if port is not None else settings.callback_port,
    )
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
        await producer.stop()
        store.close()
        metrics_server.stop()
