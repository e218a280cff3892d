"""The signer's domain: one ``emd.document.created`` event → ``emd.document.signed`` + the МИС's ``signed`` status.

``DocumentSigner.handle(record)`` in order:

1. decode the created event; check that the МИС whose topic it came from may publish for its organisation and
   systemId (``services.pipeline.trust.check_publisher``: ``ORGANIZATION_NOT_ALLOWED``), then the rest of the
   record contract (``producer.contract``: the key is the localUid, the required headers agree with the event,
   the kind is registrable on the creation date), before anything is fetched or signed;
2. read the document's bytes (inline, or from the claim-check store) in a thread, a document over the size limit
   refused before it is read (``DOCUMENT_TOO_LARGE``: by the event's size, then the stored object's);
3. check and sign it: ``services.pipeline.signing.sign_document`` (XSD, Schematron, the doctors' signatures
   verified or made, the organisation's under its МЧД), in a ``SigningPool`` of processes when one is given,
   else in a thread of this process;
4. put an inline document into the claim-check store **before** producing the event that references it
   (``services.documents.store.by_reference``): the signed event, the sender, the status worker and every dead
   letter after this stage carry a few KB instead of the whole document;
5. return the signed event (with ``misId``, the МИС it came from, and ``publishedAt``, when the МИС published it,
   so the status worker measures created → acknowledged) and the ``signed`` status on that МИС's own topic, both
   on the created event's trace.

A ``PermanentError`` from the checks goes to the dead letter with its reason; the МИС hears ``failed``
(``services.pipeline.dead_letter_status.on_dead_letter``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from producer import contract, events
from services.documents.store import DocumentStore, by_reference, document_bytes
from services.messaging.records import Output, Record
from services.pipeline.organizations import OrganizationsConfig
from services.pipeline.signing import sign_document
from services.pipeline.trust import check_publisher

SOURCE = "emd-signer"

#: ``async (data, document, now) -> signatures``: a ``SigningPool``'s ``sign``
Sign = Callable[[dict[str, Any], bytes, dt.datetime], Awaitable[dict[str, Any]]]


class DocumentSigner:
    """The signer stage's handler.

    :param config: the organisations (keys, МЧД, limits).
    :param store: the claim-check store documents are read from and put into.
    :param sign: ``async (data, document, now) -> signatures`` (a ``SigningPool``'s); default
        ``sign_document`` in a thread of this process.
    """

    def __init__(
        self, *, config: OrganizationsConfig, store: DocumentStore, sign: Sign | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.sign = sign or self._sign_in_thread

    async def _sign_in_thread(
        self, data: dict[str, Any], document: bytes, now: dt.datetime
    ) -> dict[str, Any]:
        return await asyncio.to_thread(sign_document, data, document, self.config, now=now)

    async def handle(self, record: Record) -> list[Output]:
        event = events.decode(record.value, expected_type=events.CREATED)
        data = event["data"]
        grant = check_publisher(self.config, record.topic, data)  # before anything is fetched or signed
        contract.check_record(record.key, record.headers, event)
        document = await asyncio.to_thread(
            partial(document_bytes, data["document"], self.store, max_bytes=self.config.max_document_bytes)
        )
        signatures = await self.sign(data, document, dt.datetime.now(dt.UTC))
        # stored (and durable) before the event that references it is produced
        by_ref = await asyncio.to_thread(by_reference, data["document"], document, self.store)
        signed = events.new_event(
            events.SIGNED,
            {
                **data,
                "misId": grant.id,
                "document": by_ref,
                "signatures": signatures,
                "publishedAt": event["time"],
            },
            source=SOURCE,
            trace_id=event["traceId"],
        )
        status = events.new_event(
            events.STATUS,
            events.status_data(
                data["localUid"], events.STATUS_SIGNED, organization=data["organizationOid"], mis_id=grant.id
            ),
            source=SOURCE,
            trace_id=event["traceId"],
        )
        return [Output.of_event(signed), Output.of_event(status)]
