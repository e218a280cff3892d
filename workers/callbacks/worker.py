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
from services.pipeline.callbacks import CallbackService, ReplyCredential, ReplyKeys
from services.pipeline.organizations import load_organizations
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


def organization_lookup(store: lifecycle.LifecycleStore):
    """``async (messageId, localUid) -> OID | None``: the organisation of the document a request is about."""

    def lookup(message_id: str | None, local_uid: str | None) -> str | None:
        # a registration's MessageID, or a registry question's (a getRegistryItemResult answers one)
        found = (
            (store.find_by_message_id(message_id) or store.find_registry_request(message_id))
            if message_id
            else None
        )
        if found is not None:
            return found[0].organization
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


async def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the endpoint until ``stop`` is set (or forever)."""
    reply_keys = reply_credentials(settings)
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
    )

    async def handle(request: web.Request) -> web.Response:
        reply = await service.handle(await request.read())
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": envelope.content_type(envelope.version_of(reply.body))},
        )

    metrics_server = MetricsServer(host=settings.metrics_host, port=settings.metrics_port).start()
    log.info("metrics", url=metrics_server.url)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
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
