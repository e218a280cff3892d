"""The transport an organisation's ``remd.transport`` names, made once per process.

``Transports`` holds one transport per name, so the sender and the status worker share their connection pools.
The interface is ``services.remd.transport``; the implementations are ``services.remd._transports``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services import telemetry
from services.remd import soap
from services.remd._transports.ips import IpsSoapTransport
from services.remd._transports.n3 import N3Transport
from services.remd.transport import LookupRequest, SubmitOutcome, SubmitRequest, Transport

__all__ = ["Traced", "Transports", "transport_for"]


def transport_for(name: str, **options: Any) -> Transport:
    """The transport an organisation's ``remd.transport`` names: "ips" (ИПС ЕГИСЗ) or "n3" (N3.Health)."""
    if name == "ips":
        return IpsSoapTransport(**options)
    if name == "n3":
        return N3Transport(**options)
    raise ValueError(f"unknown РЭМД transport {name!r}")


class Transports:
    """One transport per name for a process, made on first use (``transport_for``) and closed together.

    :param options: passed to ``transport_for`` (timeouts).
    :param preset: transports to use instead of making them (tests pass fakes).
    """

    def __init__(
        self, *, options: Mapping[str, Any] | None = None, preset: Mapping[str, Transport] | None = None
    ) -> None:
        self._options = dict(options or {})
        self._made: dict[str, Transport] = dict(preset or {})

    def get(self, name: str) -> Transport:
        if name not in self._made:
            made = transport_for(name, **self._options)
            self._made[name] = Traced(made) if telemetry.enabled() else made
        return self._made[name]

    async def aclose(self) -> None:
        for transport in self._made.values():
            await transport.aclose()


#: the operations each route's ``submit`` and ``lookup`` are, as their spans are named
OPERATIONS = {
    "ips": ("registerDocument", "searchRegistryItem"),
    "n3": ("AddMedRecord", "registration"),
}


class Traced:
    """A transport whose every call is a client span (``ips registerDocument``…) with the MessageID and localUid;
    the HTTP requests under it carry ``traceparent`` (httpx's instrumentation). Made only when tracing is on."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.has_callbacks = inner.has_callbacks
        self.pushes_document = inner.pushes_document
        self._submit, self._lookup = OPERATIONS.get(inner.name, ("submit", "lookup"))

    async def submit(self, request: SubmitRequest) -> SubmitOutcome:
        with telemetry.span(
            f"{self.name} {self._submit}",
            kind="client",
            attributes={
                telemetry.MESSAGE_ID: request.message_id,
                telemetry.LOCAL_UID: request.registration.local_uid,
                "emd.transport": self.name,
                "rpc.system": "soap",
                "rpc.method": self._submit,
            },
        ) as span:
            outcome = await self.inner.submit(request)
            telemetry.set_outcome(
                span, "ok" if outcome.accepted else outcome.kind, reason=outcome.remd_code or outcome.reason
            )
            return outcome

    async def lookup(self, request: LookupRequest) -> soap.RegistryItem | None:
        with telemetry.span(
            f"{self.name} {self._lookup}",
            kind="client",
            attributes={
                telemetry.LOCAL_UID: request.local_uid,
                "emd.transport": self.name,
                "rpc.system": "soap",
                "rpc.method": self._lookup,
            },
        ):
            return await self.inner.lookup(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
