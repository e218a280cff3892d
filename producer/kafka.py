"""Kafka connection settings shared by every client: the МИС library's producer (kafka-python), the
pipeline's own tools, and the workers (aiokafka or librdkafka, ``services.messaging.clients``).

``KafkaSecurity`` is how a client reaches a secured cluster (TLS with a CA and optionally a client certificate,
SASL SCRAM-SHA-512/256 or PLAIN), checked for consistency when it is made (a missing file or a mechanism
without a user fails loudly, not at the first reconnect), and spelt for each library: aiokafka wants an
``SSLContext``, kafka-python file names, librdkafka (confluent-kafka) its dotted configuration properties.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import ConfigurationError

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
            raise ConfigurationError(
                f"KAFKA_SECURITY_PROTOCOL={self.protocol!r}: expected one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigurationError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: {self.protocol} needs one "
                    f"of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.username or not self.password:
                raise ConfigurationError(f"{self.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        elif self.sasl_mechanism or self.username:
            raise ConfigurationError(
                f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                "use SASL (SASL_SSL or SASL_PLAINTEXT)"
            )
        files = {
            "KAFKA_SSL_CA_FILE": self.ca_file,
            "KAFKA_SSL_CERT_FILE": self.cert_file,
            "KAFKA_SSL_KEY_FILE": self.key_file,
        }
        if not self.tls and any(files.values()):
            raise ConfigurationError(
                f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                "use TLS (SSL or SASL_SSL)"
            )
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigurationError(
                "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together (a client certificate and its key)"
            )
        for name, path in files.items():
            if path and not Path(path).is_file():
                raise ConfigurationError(f"{name}={path}: no such file")

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
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def kafka_python_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options.update(
                ssl_check_hostname=True,
                ssl_cafile=self.ca_file or None,
                ssl_certfile=self.cert_file or None,
                ssl_keyfile=self.key_file or None,
                ssl_password=self.key_password or None,
            )
        if self.sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def librdkafka_options(self) -> dict[str, str]:
        """librdkafka's configuration properties (confluent-kafka's producer, consumer and admin client).

        The same checks as the other spellings: the brokers' host name is verified
        (``ssl.endpoint.identification.algorithm=https``), the CA is the given file or, without one, the
        system's trust store (``probe``: the wheel's own OpenSSL does not know where Debian keeps it).
        """
        options = {"security.protocol": self.protocol.lower()}
        if self.tls:
            options["ssl.ca.location"] = self.ca_file or "probe"
            options["ssl.endpoint.identification.algorithm"] = "https"
            if self.cert_file:
                options["ssl.certificate.location"] = self.cert_file
                options["ssl.key.location"] = self.key_file
                if self.key_password:
                    options["ssl.key.password"] = self.key_password
        if self.sasl:
            options.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.username,
                    "sasl.password": self.password,
                }
            )
        return options


def sync_producer_config(
    bootstrap_servers: str, *, client_id: str = "emd-mis", security: KafkaSecurity | None = None
) -> dict[str, Any]:
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


def unreachable(bootstrap_servers: str, exc: BaseException, *, after: float) -> ConfigurationError:
    """What every command says when no broker answers at KAFKA_BOOTSTRAP_SERVERS."""
    return ConfigurationError(
        f"the Kafka broker at {bootstrap_servers} is unreachable ({after:.0f} s after "
        f"start): {exc}; check KAFKA_BOOTSTRAP_SERVERS, or start one with `emd broker`"
    )
