"""The records a stage's handler sees and asks for: ``Record`` consumed, ``Output`` to produce.

``Output.of_event(event)`` is the one place an event becomes a record: the topic of its type, its
``localUid`` as the key (all events of one document in one partition, in order), the pipeline headers.
Dead letters and retry-tier records are ``Output`` too, with the original value and their own headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from producer import events, topology
from services.messaging import deadletter as dl


@dataclass(frozen=True)
class Record:
    """One consumed record, as the handler sees it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Mapping[str, bytes]
    timestamp_ms: int

    def header(self, name: str) -> str | None:
        v = self.headers.get(name)
        return None if v is None else v.decode("utf-8", "replace")

    @property
    def attempt(self) -> int:
        """Attempts already made for this record (0 on first delivery from the input topic)."""
        try:
            return int(self.header(dl.ATTEMPTS) or 0)
        except ValueError:
            return 0


@dataclass(frozen=True)
class Output:
    """A record the handler wants produced. ``value`` may be bytes or a JSON-serialisable dict."""

    topic: str
    value: bytes | Mapping[str, Any]
    key: str | None = None
    headers: Mapping[str, bytes | str] = field(default_factory=dict)

    @classmethod
    def of_event(cls, event: Mapping[str, Any], *, key: str | None = None) -> Output:
        """The record of a pipeline event: its type's topic (a status: its МИС's, by ``data.misId``), keyed by its
        ``localUid`` unless ``key`` is given."""
        return cls(
            topology.topic_of_event(event["type"], event["data"].get("misId")),
            events.encode(dict(event)),
            key if key is not None else event["data"]["localUid"],
            dict(events.headers_for(dict(event))),
        )

    def encoded(self) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        value = (
            self.value
            if isinstance(self.value, (bytes, bytearray))
            else json.dumps(self.value, ensure_ascii=False, separators=(",", ":")).encode()
        )
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in self.headers.items()]
        return (self.key.encode() if self.key is not None else None), bytes(value), headers
