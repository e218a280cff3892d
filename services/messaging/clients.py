"""Kafka client settings, built from ``Settings`` in one place, for aiokafka (workers) and kafka-python (МИС).

Both producers are idempotent with ``acks=all``: a send is confirmed only when every in-sync replica
has it, and a retried send cannot duplicate. Consumers never auto-commit: the runtime commits only
what it has finished (``services/messaging/runtime.py``).

``KafkaSecurity`` is how every client reaches a secured cluster (TLS with a CA and optionally a client
certificate, SASL SCRAM-SHA-512/256 or PLAIN): read once from the ``KAFKA_SECURITY_*``/``KAFKA_SSL_*``/
``KAFKA_SASL_*`` settings, checked for consistency at start (a missing file or a mechanism without a user
fails loudly, not at the first reconnect), and spelt for each library (aiokafka wants an ``SSLContext``,
kafka-python file names).

``start_producer`` starts a worker's producer and turns what configuration can get wrong into a
``ConfigurationError`` that says how to fix it: a broker still unreachable after the start-up grace, or
one that refuses the idempotent producer ``KAFKA_ENABLE_IDEMPOTENCE=true`` requires. With the setting
unset a refusal is detected, logged, and the producer goes on without idempotence. A broker that lacks a
topic the process needs is a ``ConfigurationError`` too: missing topics are not something to wait for.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.config import Settings
from services.errors import ConfigurationError
from services.logs import get_logger

log = get_logger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """How clients authenticate to the brokers and protect the connection.

    :param protocol: ``PLAINTEXT`` (default, the local broker), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    :param ca_file: PEM CA of the brokers' certificates (default: the system's trust store).
    :param cert_file / key_file: client certificate and key (mTLS); both or neither.
    :param key_password: password of an encrypted ``key_file``.
    :param sasl_mechanism: ``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN``; needed by the SASL protocols.
    :param username / password: the SASL credentials.
    """

    protocol: str = "PLAINTEXT"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    key_password: str = field(default="", repr=False)
    sasl_mechanism: str = ""
    username: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(f"KAFKA_SECURITY_PROTOCOL={self.protocol!r}: expected one of "
                                     f"{', '.join(SECURITY_PROTOCOLS)}")
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigurationError(f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: {self.protocol} needs one "
                                         f"of {', '.join(SASL_MECHANISMS)}")
            if not self.username or not self.password:
                raise ConfigurationError(f"{self.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        elif self.sasl_mechanism or self.username:
            raise ConfigurationError(f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                                     "use SASL (SASL_SSL or SASL_PLAINTEXT)")
        files = {"KAFKA_SSL_CA_FILE": self.ca_file, "KAFKA_SSL_CERT_FILE": self.cert_file,
                 "KAFKA_SSL_KEY_FILE": self.key_file}
        if not self.tls and any(files.values()):
            raise ConfigurationError(f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                                     "use TLS (SSL or SASL_SSL)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigurationError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together (a client certificate "
                                     "and its key)")
        for name, path in files.items():
            if path and not Path(path).is_file():
                raise ConfigurationError(f"{name}={path}: no such file")

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        return cls(protocol=settings.kafka_security_protocol.upper(), ca_file=settings.kafka_ssl_ca_file,
                   cert_file=settings.kafka_ssl_cert_file, key_file=settings.kafka_ssl_key_file,
                   key_password=settings.kafka_ssl_key_password,
                   sasl_mechanism=settings.kafka_sasl_mechanism.upper(), username=settings.kafka_sasl_username,
                   password=settings.kafka_sasl_password)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context (hostname checked, CA pinned when given, client certificate when given)."""
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file, password=self.key_password or None)
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def kafka_python_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options.update(ssl_check_hostname=True, ssl_cafile=self.ca_file or None,
                           ssl_certfile=self.cert_file or None, ssl_keyfile=self.key_file or None,
                           ssl_password=self.key_password or None)
        if self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options


def kafka_python_config(settings: Settings, **options: Any) -> dict[str, Any]:
    """Bootstrap servers and security for any kafka-python client of the pipeline's own tools (admin, dlq)."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers,
            **KafkaSecurity.from_settings(settings).kafka_python_options(), **options}


def aio_producer_config(settings: Settings, *, client_id: str) -> dict[str, Any]:
    return {
        **KafkaSecurity.from_settings(settings).aiokafka_options(),
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
        **KafkaSecurity.from_settings(settings).aiokafka_options(),
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


def sync_producer_config(bootstrap_servers: str, *, client_id: str = "emd-mis",
                         security: KafkaSecurity | None = None) -> dict[str, Any]:
    """kafka-python producer settings for the МИС-side library (``security``: default plaintext)."""
    return {
        **(security or KafkaSecurity()).kafka_python_options(),
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "retries": 5,
        "linger_ms": 5,
        "request_timeout_ms": 15000,
        "delivery_timeout_ms": 30000,
    }


async def start_producer(settings: Settings, *, client_id: str, topics: Sequence[str] = ()) -> AIOKafkaProducer:
    """A started aiokafka producer for a worker on a broker that has ``topics``, or ``ConfigurationError``."""
    config = aio_producer_config(settings, client_id=client_id)
    deadline = time.monotonic() + settings.startup_grace_seconds
    while True:
        producer = AIOKafkaProducer(**config)
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            if time.monotonic() >= deadline:
                raise unreachable(settings.kafka_bootstrap_servers, exc,
                                  after=settings.startup_grace_seconds) from None
            await asyncio.sleep(1.0)
            continue
        except KafkaError as exc:  # the broker answered, with an error (InitProducerId, authentication…)
            await producer.stop()
            if not config["enable_idempotence"]:
                raise ConfigurationError(f"the Kafka broker at {settings.kafka_bootstrap_servers} refuses "
                                         f"a producer: {exc}") from None
            if settings.kafka_enable_idempotence:
                raise ConfigurationError(
                    f"the Kafka broker at {settings.kafka_bootstrap_servers} refuses idempotent producers "
                    f"(InitProducerId: {exc}); KAFKA_ENABLE_IDEMPOTENCE=true requires them: use a broker "
                    "that grants them (IdempotentWrite), or unset the variable") from None
            log.warning("broker refuses idempotent producers: producing without idempotence (acks=all; "
                        "downstream is idempotent by localUid)", bootstrap=settings.kafka_bootstrap_servers,
                        error=str(exc), client=client_id)
            config = {**config, "enable_idempotence": False}
            continue
        try:
            await _require_topics(producer, topics, settings=settings)
        except BaseException:
            await producer.stop()
            raise
        return producer


def unreachable(bootstrap_servers: str, exc: BaseException, *, after: float) -> ConfigurationError:
    """What every command says when no broker answers at KAFKA_BOOTSTRAP_SERVERS."""
    return ConfigurationError(f"the Kafka broker at {bootstrap_servers} is unreachable ({after:.0f} s after "
                              f"start): {exc}; check KAFKA_BOOTSTRAP_SERVERS, or start one with `emd broker`")


async def _require_topics(producer: AIOKafkaProducer, names: Sequence[str], *, settings: Settings) -> None:
    """``ConfigurationError`` when a topic a process needs is missing: a deployment error, not a reason to wait."""
    existing = (await producer.client.fetch_all_metadata()).topics()
    missing = sorted(set(names) - existing)
    if missing:
        raise ConfigurationError(f"topics missing on the Kafka broker at {settings.kafka_bootstrap_servers}: "
                                 f"{', '.join(missing)}; create them with `emd topics`")
