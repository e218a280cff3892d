"""The transport an organisation's ``remd.transport`` names, made once per process.

``Transports`` holds one transport per name, so the sender and the status worker share their connection pools.
The interface is ``services.remd.transport``; the implementations are ``services.remd._transports``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.remd._transports.ips import IpsSoapTransport
from services.remd._transports.n3 import N3Transport
from services.remd.transport import Transport

__all__ = ["Transports", "transport_for"]


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
            self._made[name] = transport_for(name, **self._options)
        return self._made[name]

    async def aclose(self) -> None:
        for transport in self._made.values():
            await transport.aclose()
