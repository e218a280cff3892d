"""Kafka client settings, built from ``Settings`` in one place, for aiokafka (workers) and kafka-python (МИС).

Both producers are idempotent with ``acks=all``: a send is confirmed only when every in-sync replica
has it, and a retried send cannot duplicate. Consumers never auto-commit: the runtime commits only
what it has finished (``services/messaging/runtime.py``).

``security_from`` reads ``producer.kafka.KafkaSecurity`` (TLS, SASL) once from the ``KAFKA_SECURITY_*``/
``KAFKA_SSL_*``/``KAFKA_SASL_*`` settings.

``start_producer`` starts a worker's producer and turns what configuration can get wrong into a
``ConfigurationError`` that says how to fix it: a broker still unreachable after the start-up grace, or
one that refuses the idempotent producer ``KAFKA_ENABLE_IDEMPOTENCE=true`` requires. With the setting
unset a refusal is detected, logged as one warning (the production default was refused), and the producer
goes on without idempotence; aiokafka's own ERROR line about the refused InitProducerId is dropped, since
this is handled and said here. The local broker (Tansu) refuses it: ``emd run`` and the line ``emd broker``
prints set ``KAFKA_ENABLE_IDEMPOTENCE=false`` for it, so a healthy local start logs neither. A broker that
lacks a topic the process needs is a ``ConfigurationError`` too: missing topics are not something to wait for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from producer.errors import ConfigurationError
from producer.kafka import KafkaSecurity, unreachable
from services.config import Settings
from services.logs import get_logger
from services.messaging.trust import observe_kafka_ca

log = get_logger(__name__)


def security_from(settings: Settings) -> KafkaSecurity:
    """The ``KAFKA_SECURITY_*``/``KAFKA_SSL_*``/``KAFKA_SASL_*`` settings as a ``KafkaSecurity``."""
    return KafkaSecurity(
        protocol=settings.kafka_security_protocol.upper(),
        ca_file=settings.kafka_ssl_ca_file,
        cert_file=settings.kafka_ssl_cert_file,
        key_file=settings.kafka_ssl_key_file,
        key_password=settings.kafka_ssl_key_password,
        sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
    )


def kafka_python_config(settings: Settings, **options: Any) -> dict[str, Any]:
    """Bootstrap servers and security for any kafka-python client of the pipeline's own tools (admin, dlq)."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **security_from(settings).kafka_python_options(),
        **options,
    }


def aio_producer_config(settings: Settings, *, client_id: str) -> dict[str, Any]:
    return {
        **security_from(settings).aiokafka_options(),
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_id}",
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence is not False,
        "linger_ms": 5,
        "max_request_size": 1024 * 1024,
        "request_timeout_ms": 30000,
    }


def aio_consumer_config(settings: Settings, *, group_id: str, client_id: str) -> dict[str, Any]:
    return {
        **security_from(settings).aiokafka_options(),
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_id}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "isolation_level": "read_committed",
    }


class _RefusedInitProducerId(logging.Filter):
    """Drops aiokafka's ERROR about a refused InitProducerId: ``start_producer`` handles that refusal and says so
    itself (a warning, or a ConfigurationError when idempotence is required), so the library's line is noise that
    reads as a failure on a healthy start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unexpected error during InitProducerIdRequest")


_REFUSED_INIT_PRODUCER_ID = _RefusedInitProducerId()


async def start_producer(
    settings: Settings, *, client_id: str, topics: Sequence[str] = ()
) -> AIOKafkaProducer:
    """A started aiokafka producer for a worker on a broker that has ``topics``, or ``ConfigurationError``."""
    sender_log = logging.getLogger("aiokafka.producer.sender")
    if _REFUSED_INIT_PRODUCER_ID not in sender_log.filters:
        sender_log.addFilter(_REFUSED_INIT_PRODUCER_ID)
    observe_kafka_ca(settings.kafka_ssl_ca_file)  # what this process trusts, for EmdKafkaCaExpiresSoon
    config = aio_producer_config(settings, client_id=client_id)
    deadline = time.monotonic() + settings.startup_grace_seconds
    while True:
        producer = AIOKafkaProducer(**config)
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            if time.monotonic() >= deadline:
                raise unreachable(
                    settings.kafka_bootstrap_servers, exc, after=settings.startup_grace_seconds
                ) from None
            await asyncio.sleep(1.0)
            continue
        except KafkaError as exc:  # the broker answered, with an error (InitProducerId, authentication…)
            await producer.stop()
            if not config["enable_idempotence"]:
                raise ConfigurationError(
                    f"the Kafka broker at {settings.kafka_bootstrap_servers} refuses a producer: {exc}"
                ) from None
            if settings.kafka_enable_idempotence:
                raise ConfigurationError(
                    f"the Kafka broker at {settings.kafka_bootstrap_servers} refuses idempotent producers "
                    f"(InitProducerId: {exc}); KAFKA_ENABLE_IDEMPOTENCE=true requires them: use a broker "
                    "that grants them (IdempotentWrite), or unset the variable"
                ) from None
            log.warning(
                "broker refuses idempotent producers: producing without idempotence (acks=all; "
                "downstream is idempotent by localUid)",
                bootstrap=settings.kafka_bootstrap_servers,
                error=str(exc),
                client=client_id,
            )
            config = {**config, "enable_idempotence": False}
            continue
        try:
            await _require_topics(producer, topics, settings=settings)
        except BaseException:
            await producer.stop()
            raise
        return producer


async def _require_topics(producer: AIOKafkaProducer, names: Sequence[str], *, settings: Settings) -> None:
    """``ConfigurationError`` when a topic a process needs is missing: a deployment error, not a reason to wait."""
    existing = (await producer.client.fetch_all_metadata()).topics()
    missing = sorted(set(names) - existing)
    if missing:
        raise ConfigurationError(
            f"topics missing on the Kafka broker at {settings.kafka_bootstrap_servers}: "
            f"{', '.join(missing)}; create them with `emd topics`"
        )
