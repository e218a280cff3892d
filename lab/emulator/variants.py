"""The ``ips-variants`` scenario: what РЭМД/ИПС sends the МИС, in every shape real traffic shows
(``docs/protocol.md#callback-shapes``).

A :class:`Shape` fixes, for one registration, how its ``getDocumentFile`` and ``registerDocumentResult`` are
written: SOAP 1.1 or 1.2 (each message kind), WS-Addressing with a prefix or unprefixed with ИПС's fixed wsu:Ids, a ReplyTo
with either anonymous URI (or none), the spelling of ``relatesToMessage`` (bare, ``urn:uuid:`` upper case,
upper case without hyphens, ``uuid:``, the mail-style ``<…>``), ``kind`` as text / ``kind/code`` / attribute,
``registrationDate`` or ``registrationDateTime``, ``status`` success or OK, ``documentStatus``,
``registrationWarnings`` and a ``creationDateTime`` inside ``registryItem``. :func:`shape_for` walks every
option of every dimension within the first few registrations (dimension *i* takes option ``(seq + i) % k``),
so any run of a dozen documents exercises them all.

The scenario also asks each registered document again later by its ``emdrId``, as another ИС would
(:class:`LaterRequests`): the bytes served must be exactly those registered.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from services.remd import names as n
from services.remd.soap import RegisterResult, RemdError

__all__ = ["DIMENSIONS", "LaterRequests", "Shape", "shape_for", "shaped_result", "spell"]

#: every dimension and its options, in the order shape_for assigns them
DIMENSIONS: dict[str, tuple[Any, ...]] = {
    "soap_version": ("1.1", "1.2"),
    "file_soap_version": ("1.2", "1.1"),
    "wsa_prefix": (False, True),
    "reply_to": (n.WSA_ANONYMOUS_2004, None, n.WSA_ANONYMOUS),
    "spelling": ("urn-upper", "plain", "compact-upper", "uuid-prefix", "mail"),
    "kind_form": ("code", "text", "attribute"),
    "date_element": (n.REGISTRATION_DATE, n.REGISTRATION_DATE_TIME),
    "status": (n.STATUS_OK, n.STATUS_SUCCESS),
    "document_status": (True, False),
    "warnings": (True, False),
    "creation_in_item": (True, False),
}


@dataclass(frozen=True, slots=True)
class Shape:
    """How one registration's messages to the МИС are written; the defaults are the emulator's plain ones."""

    soap_version: str = "1.1"  #: of the registerDocumentResult callback
    file_soap_version: str = "1.2"  #: of the getDocumentFile requests
    wsa_prefix: bool = True
    reply_to: str | None = None
    spelling: str = "plain"
    kind_form: str = "text"
    date_element: str = n.REGISTRATION_DATE_TIME
    status: str = n.STATUS_SUCCESS
    document_status: bool = False
    warnings: bool = False
    creation_in_item: bool = False

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments of ``soap.build_register_result`` for this shape."""
        return {
            "soap_version": self.soap_version,
            "wsa_prefix": self.wsa_prefix,
            "fixed_ids": not self.wsa_prefix,
            "reply_to": self.reply_to,
            "kind_form": self.kind_form,
            "date_element": self.date_element,
        }


def shape_for(seq: int) -> Shape:
    """The shape of the ``seq``-th registration: each dimension cycles through its options, offset by its index."""
    return Shape(
        **{name: options[(seq + i) % len(options)] for i, (name, options) in enumerate(DIMENSIONS.items())}
    )


def spell(message_id: str, spelling: str) -> str:
    """A MessageID as a gateway may write it; every spelling normalises back to the same id."""
    try:
        value = uuid.UUID(message_id.strip().lower().removeprefix("urn:uuid:").removeprefix("uuid:"))
    except ValueError:
        return message_id
    return {
        "plain": str(value),
        "urn-upper": f"urn:uuid:{str(value).upper()}",
        "compact-upper": value.hex.upper(),
        "uuid-prefix": f"uuid:{value}",
        "mail": f"<{value}>",  # the mail-style Message-ID form some gateways and journals write
    }[spelling]


#: the remark a warned registration carries (a real .305 code for an ИПС remark)
WARNING = RemdError(
    "IPS_VALIDATION_WARNING", "Замечание по результатам проверок ИПС: эмулятор, сценарий ips-variants"
)


def shaped_result(result: RegisterResult, shape: Shape, *, creation_date_time: str | None) -> RegisterResult:
    """``result`` as this shape writes it: spelling, status word, documentStatus, warnings, creation time."""
    out = replace(result, relates_to_message=spell(result.relates_to_message, shape.spelling))
    if result.registry_item is None:
        return out
    item = result.registry_item
    if shape.warnings:
        item = replace(item, warnings=(WARNING,))
    if shape.creation_in_item:
        item = replace(item, creation_date_time=creation_date_time)
    return replace(
        out,
        registry_item=item,
        status=shape.status,
        document_status=n.DOCUMENT_STATUS_REGISTERED if shape.document_status else None,
    )


class LaterRequests:
    """Calls due later, on one daemon thread: ``schedule(delay, fn)``; ``fn()`` returns a delay to run again, or None.

    Stops with the emulator (``stop`` event); a call that raises is logged by the caller's own handling.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._heap: list[tuple[float, int, Callable[[], float | None]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, call: Callable[[], float | None]) -> None:
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emd-emulator-later", daemon=True)
                self._thread.start()
            self._changed.notify()

    def pending(self) -> int:
        with self._changed:
            return len(self._heap)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                wait = self._heap[0][0] - time.monotonic() if self._heap else 0.5
                if wait > 0:
                    self._changed.wait(min(wait, 0.5))
                    continue
                _, _, call = heapq.heappop(self._heap)
            again = call()
            if again is not None:
                self.schedule(again, call)
