"""Which ``Transport`` a process uses: the one module that knows the implementations.

``for_settings(settings)`` is what a worker gets when it names none: the client ``EMD_KAFKA_CLIENT`` names
(aiokafka by default, or confluent: librdkafka) on the cluster of ``KAFKA_BOOTSTRAP_SERVERS``. Tests hand a ``MemoryTransport`` to the ``App``/``Stage`` themselves. A second
client library is a module in ``_transports/`` and one entry in ``CLIENTS``.
"""

from __future__ import annotations

from collections.abc import Callable

from producer.errors import ConfigurationError
from services.config import Settings
from services.messaging._transports.aiokafka import AiokafkaTransport
from services.messaging._transports.confluent import ConfluentTransport
from services.messaging._transports.memory import MemoryBroker, MemoryTransport
from services.messaging.transport import Transport

#: client name → how to make its transport from the settings
CLIENTS: dict[str, Callable[[Settings], Transport]] = {
    "aiokafka": AiokafkaTransport,
    "confluent": ConfluentTransport,
}

DEFAULT_CLIENT = "aiokafka"


def for_settings(settings: Settings, client: str | None = None) -> Transport:
    """The transport of ``client`` (default: ``EMD_KAFKA_CLIENT``) on the cluster ``settings`` names."""
    name = client if client is not None else settings.kafka_client
    try:
        make = CLIENTS[name.strip().lower()]
    except KeyError:
        raise ConfigurationError(
            f"EMD_KAFKA_CLIENT={name!r}: expected one of {', '.join(sorted(CLIENTS))}"
        ) from None
    return make(settings)


def in_memory(broker: MemoryBroker | None = None) -> MemoryTransport:
    """A transport on an in-process broker (a new one unless ``broker`` is given): tests and burst runs."""
    return MemoryTransport(broker)


__all__ = [
    "CLIENTS",
    "DEFAULT_CLIENT",
    "MemoryBroker",
    "MemoryTransport",
    "Transport",
    "for_settings",
    "in_memory",
]
