"""The status worker's handlers: what it does with each record of ``emd.remd.callbacks`` and ``emd.document.sent``.

``Acknowledger.handle(record)`` (``emd.remd.callbacks``) tells three kinds of record apart:

* a deadline record (``services.pipeline.polling.deadline_of``, written by the ``DeadlineScanner``): the
  document had no callback in time: ask the registry, registered or ``NO_ACKNOWLEDGMENT``
  (``acknowledgment.on_deadline``);
* a poll record (``polling.poll_of``, written by the ``PollScanner`` for routes without callbacks, N3): ask the
  registry, registered or nothing yet (``on_deadline(final=False)``);
* otherwise a callback ИПС delivered (``registerDocumentResult``, or ``getRegistryItemResult``: the record a
  deadline or a reconciliation asked for, persisted by the callback service): ``acknowledgment.handle_callback``,
  which also reconciles a ``NOT_UNIQUE_PROVIDED_ID`` by asking the registry.

``Acknowledger.confirm_sent(record)`` (``emd.document.sent``): acknowledgment is driven by callbacks, so a
``sent`` event only confirms, in the log, that the lifecycle store knows the document (a callback that came
first has already decided it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from producer import events
from services import lifecycle as lc
from services.logs import get_logger
from services.messaging.records import Output, Record
from services.pipeline import acknowledgment
from services.pipeline.polling import deadline_of, poll_of
from services.remd import soap

#: ``async (Document) -> RegistryItem | None``: asks РЭМД (``polling.RegistryPoller``)
Poll = Callable[[lc.Document], Coroutine[Any, Any, soap.RegistryItem | None]]

log = get_logger(__name__)


class Acknowledger:
    """The status worker's handlers.

    :param store: the lifecycle store.
    :param poll: ``async (Document) -> RegistryItem | None``: asks РЭМД (``polling.RegistryPoller``).
    :param environments: ``oid -> environment`` of the organisations (``OrganizationsConfig.environment``).
    :param group: the consumer group of the acknowledger stage (dead-letter headers).
    :param pending_limit: seconds a callback may wait for its document (``EMD_ACK_TIMEOUT_SECONDS``).
    """

    def __init__(
        self,
        *,
        store: lc.LifecycleStore,
        poll: Poll,
        environments: acknowledgment.Environments,
        group: str,
        pending_limit: float,
    ) -> None:
        self.store = store
        self.poll = poll
        self.environments = environments
        self.group = group
        self.pending_limit = pending_limit

    async def handle(self, record: Record) -> list[Output]:
        """One record of ``emd.remd.callbacks``: a deadline, a poll, or a callback."""
        deadline = deadline_of(record)
        document = deadline if deadline is not None else poll_of(record)
        if document is not None:
            # a deadline decides (registered or NO_ACKNOWLEDGMENT); a routine poll waits for the next one
            organization, uid = document
            return await acknowledgment.on_deadline(
                uid,
                organization=organization,
                store=self.store,
                poll=self.poll,
                environments=self.environments,
                group=self.group,
                final=deadline is not None,
            )
        return await acknowledgment.handle_callback(
            record.value,
            store=self.store,
            poll=self.poll,
            received_ms=record.timestamp_ms,
            pending_limit=self.pending_limit,
            environments=self.environments,
            group=self.group,
        )

    async def confirm_sent(self, record: Record) -> list[Output]:
        """One ``sent`` event: logged with the document's state in the lifecycle store; no outputs."""
        event = events.decode(record.value, events.SENT)
        uid, organization = event["data"]["localUid"], event["data"]["organizationOid"]
        doc = await asyncio.to_thread(partial(self.store.get, uid, organization=organization))
        log.info(
            "sent event",
            local_uid=uid,
            state=doc.state if doc else None,
            message_id=event["data"]["submission"]["messageId"],
        )
        return []
