"""The status worker (sent → acknowledged): thin wiring of ``services.pipeline.acknowledgment``.

One process runs two runtime Stages, one per input topic (the runtime consumes one input per Stage):

* ``status`` on ``emd.document.sent``: the acknowledgement is driven by callbacks, so a ``sent`` event only
  confirms the lifecycle store knows the document (a callback that came first has already decided it);
* ``status-callbacks`` on ``emd.remd.callbacks``: ``acknowledgment.on_callback`` for each persisted
  callback (``handle_callback``: its registry look-ups, for a duplicate registration, use the same
  ``searchRegistryItem`` poll as the deadline), ``on_deadline`` for the deadline records the scanner writes there.

The scanner (every ``ack_scan_interval_seconds``) finds documents accepted more than ``ack_timeout_seconds``
ago and still undecided, and writes one deadline record per document to ``emd.remd.callbacks`` (header
``emd-callback-kind: deadline``, key = its accepted MessageID), so the poll and the dead letter go through
the runtime's produce-then-commit path. Several replicas may write the same deadline: harmless, the
first handled decides and the others find the document decided.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services import events
from services import lifecycle as lc
from services.config import Settings
from services.errors import PermanentError, TransientError
from services.logs import get_logger
from services.messaging import topology
from services.messaging.clients import start_producer
from services.messaging.runtime import Record, Stage
from services.pipeline import acknowledgment
from services.pipeline.organizations import load_organizations
from services.remd import soap

log = get_logger(__name__)

KIND_HEADER = "emd-callback-kind"


class StatusWorker:
    """Both stages and the deadline scanner; ``run()`` is what ``emd worker status`` awaits."""

    def __init__(self, settings: Settings, *, store: Any = None, poll: Any = None) -> None:
        self.settings = settings
        self.store = store or lc.open_store(settings.data_dir, url=settings.lifecycle_store_url)
        self._orgs = None
        self._http: httpx.AsyncClient | None = None  # one connection pool for every poll, made by the first
        self._poll = poll or self._search
        self.sent = Stage(name="status", input_topic=topology.SENT.name, handler=self.handle_sent,
                          dead_letter_topic=topology.SENT_DLT.name, settings=settings)
        self.callbacks = Stage(name="status-callbacks", input_topic=topology.CALLBACKS.name,
                               handler=self.handle_callback, dead_letter_topic=topology.SENT_DLT.name,
                               settings=settings, serve_metrics=False)
        self._stop = asyncio.Event()
        self._fired: set[str] = set()

    # --- handlers -----------------------------------------------------------------------------
    async def handle_sent(self, record: Record) -> list:
        event = events.decode(record.value, events.SENT)
        uid = event["data"]["localUid"]
        doc = await asyncio.to_thread(self.store.get, uid)
        log.info("sent event", local_uid=uid, state=doc.state if doc else None,
                 message_id=event["data"]["submission"]["messageId"])
        return []

    async def handle_callback(self, record: Record) -> list:
        if record.header(KIND_HEADER) == "deadline":
            uid = record.header("emd-local-uid") or ""
            return await acknowledgment.on_deadline(uid, store=self.store, poll=self._poll,
                                                    group=self.callbacks.group_id)
        # the poll also reconciles a NOT_UNIQUE_PROVIDED_ID (a resend of a document already registered)
        return await acknowledgment.handle_callback(
            record.value, store=self.store, poll=self._poll, received_ms=record.timestamp_ms,
            pending_limit=self.settings.ack_timeout_seconds, group=self.callbacks.group_id)

    # --- polling ------------------------------------------------------------------------------
    async def _search(self, doc: lc.Document) -> soap.RegistryItem | None:
        if self._orgs is None:
            self._orgs = load_organizations(self.settings.organizations_file)
        org = self._orgs.organization(doc.organization)
        if org.remd is None or org.remd.system is None:
            raise PermanentError(f"{doc.organization}: no remd settings to poll with", reason="REMD_NOT_CONFIGURED")
        since = (doc.created_at or datetime.now(UTC)) - timedelta(days=1)
        body, _ = soap.build_search_request(
            soap.SearchQuery(organization=doc.organization, kind=doc.kind, register_date_begin=since.date().isoformat(),
                             register_date_end=(datetime.now(UTC) + timedelta(days=1)).date().isoformat()),
            client_entity_id=org.remd.client_entity_id or "", to=org.remd.endpoint,
            key=org.remd.system.signer(), certificate=org.remd.system.certificate)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30)
        try:
            response = await self._http.post(org.remd.endpoint, content=body,
                                             headers={"Content-Type": "application/soap+xml; charset=utf-8"})
            answer = soap.parse_search_response(response.content)
        except (httpx.HTTPError, PermanentError) as exc:
            raise TransientError(f"searchRegistryItem failed: {exc}", reason="POLL_FAILED") from None
        if isinstance(answer, soap.SoapFault) or answer.errors:
            raise TransientError("searchRegistryItem answered an error", reason="POLL_FAILED")
        return next((i for i in answer.items if i.local_uid == doc.local_uid), None)

    # --- deadline scanner ---------------------------------------------------------------------
    async def _scan(self) -> None:
        producer = await start_producer(self.settings, client_id="status-deadlines")
        try:
            while not self._stop.is_set():
                before = datetime.now(UTC) - timedelta(seconds=self.settings.ack_timeout_seconds)
                overdue = await asyncio.to_thread(self.store.overdue, before)
                # forget documents decided since: the set stays as small as the overdue list, not the history
                self._fired &= {uid for uid, _ in overdue}
                for uid, mid in overdue:
                    if uid in self._fired:
                        continue
                    await producer.send_and_wait(topology.CALLBACKS.name, value=b"", key=(mid or uid).encode(),
                                                 headers=[(KIND_HEADER, b"deadline"), ("emd-local-uid", uid.encode())])
                    self._fired.add(uid)
                    log.info("acknowledgment overdue: polling", local_uid=uid, message_id=mid)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.settings.ack_scan_interval_seconds)
                except TimeoutError:
                    pass
        finally:
            await producer.stop()

    def request_stop(self) -> None:
        self._stop.set()
        self.sent.request_stop()
        self.callbacks.request_stop()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        tasks = [asyncio.create_task(self.sent.run(install_signal_handlers=False)),
                 asyncio.create_task(self.callbacks.run(install_signal_handlers=False)),
                 asyncio.create_task(self._scan())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.request_stop()  # one part ended (stop or failure): stop the others
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()
        finally:
            if self._http is not None:
                await self._http.aclose()
            self.store.close()


def build_stage(settings: Settings) -> StatusWorker:
    """``emd worker status``: both stages and the scanner (exposes ``run()`` like a Stage)."""
    return StatusWorker(settings)
