"""Kafka security: TLS and SASL settings from the environment, spelt for aiokafka, kafka-python and librdkafka,
over real TLS."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from producer.client import DocumentPublisher
from producer.errors import ConfigurationError
from producer.kafka import KafkaSecurity, sync_producer_config
from producer.topology import Topic, created_topic, ensure_topics
from services.config import Settings
from services.messaging._transports.confluent import ConfluentTransport
from services.messaging.clients import aio_producer_config, security_from
from services.messaging.records import Output
from tests.kafka_helpers import read_all
from tests.test_producer import GOOD  # the producer tests' valid СЭМД
from tests.tls_front import TlsBroker, make_pki

CREATED = created_topic("tls-mis")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA with a server certificate for 127.0.0.1 and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("kafka-pki"))


@pytest.fixture(scope="module")
def tls_broker(pki):
    """The local broker reachable only over mutual TLS."""
    with TlsBroker(pki) as b:
        yield b


def _tls_env(pki, bootstrap: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_FILE": str(pki["ca.pem"]),
        "KAFKA_SSL_CERT_FILE": str(pki["client.pem"]),
        "KAFKA_SSL_KEY_FILE": str(pki["client.key"]),
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
    }


class TestSettings:
    def test_plaintext_is_the_default(self):
        """With no security variables, clients speak plaintext and get no TLS or SASL options."""
        security = security_from(Settings.from_env({}))
        assert (
            {"security_protocol": "PLAINTEXT"}
            == security.aiokafka_options()
            == security.kafka_python_options()
        )

    def test_sasl_scram_over_tls_is_spelt_for_both_libraries(self, pki):
        """SASL_SSL with SCRAM-SHA-512 gives aiokafka a verifying SSLContext and kafka-python the CA file."""
        security = security_from(
            Settings.from_env(
                {
                    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                    "KAFKA_SASL_MECHANISM": "scram-sha-512",
                    "KAFKA_SASL_USERNAME": "emd-sender",
                    "KAFKA_SASL_PASSWORD": "s3cret",
                    "KAFKA_SSL_CA_FILE": str(pki["ca.pem"]),
                }
            )
        )
        aio = security.aiokafka_options()
        assert ("SASL_SSL", "SCRAM-SHA-512", "emd-sender", "s3cret") == (
            aio["security_protocol"],
            aio["sasl_mechanism"],
            aio["sasl_plain_username"],
            aio["sasl_plain_password"],
        )
        assert aio["ssl_context"].verify_mode == ssl.CERT_REQUIRED and aio["ssl_context"].check_hostname
        sync = security.kafka_python_options()
        assert (str(pki["ca.pem"]), "SCRAM-SHA-512", "emd-sender") == (
            sync["ssl_cafile"],
            sync["sasl_mechanism"],
            sync["sasl_plain_username"],
        )

    def test_librdkafka_gets_the_same_tls_and_sasl(self, pki):
        """SASL_SSL spelt for librdkafka: the CA and client files, the host name checked, the SASL credentials;
        without a CA file it trusts the system's store, as the other clients do."""
        security = KafkaSecurity(
            protocol="SASL_SSL",
            ca_file=str(pki["ca.pem"]),
            cert_file=str(pki["client.pem"]),
            key_file=str(pki["client.key"]),
            key_password="k3y",
            sasl_mechanism="SCRAM-SHA-256",
            username="emd-signer",
            password="s3cret",
        )
        assert {
            "security.protocol": "sasl_ssl",
            "ssl.ca.location": str(pki["ca.pem"]),
            "ssl.certificate.location": str(pki["client.pem"]),
            "ssl.key.location": str(pki["client.key"]),
            "ssl.key.password": "k3y",
            "ssl.endpoint.identification.algorithm": "https",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "emd-signer",
            "sasl.password": "s3cret",
        } == security.librdkafka_options()
        assert {
            "security.protocol": "ssl",
            "ssl.ca.location": "probe",
            "ssl.endpoint.identification.algorithm": "https",
        } == KafkaSecurity(protocol="SSL").librdkafka_options()
        assert {"security.protocol": "plaintext"} == KafkaSecurity().librdkafka_options()

    def test_sasl_plain_without_tls(self):
        """SASL_PLAINTEXT with PLAIN carries the credentials and no TLS options."""
        options = KafkaSecurity(
            protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u", password="p"
        ).kafka_python_options()
        assert {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "u",
            "sasl_plain_password": "p",
        } == options

    def test_the_password_is_not_in_the_repr(self):
        """A logged KafkaSecurity never shows the SASL or key password."""
        security = KafkaSecurity(
            protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u", password="hunter2"
        )
        assert "hunter2" not in repr(security)

    def test_the_passwords_are_masked_by_emd_config(self):
        """`emd config` masks the SASL and key passwords."""
        rows = {
            env: value
            for env, value, _ in Settings.from_env(
                {"KAFKA_SASL_PASSWORD": "hunter2", "KAFKA_SSL_KEY_PASSWORD": "hunter3"}
            ).describe()
        }
        assert ("***", "***") == (rows["KAFKA_SASL_PASSWORD"], rows["KAFKA_SSL_KEY_PASSWORD"])

    @pytest.mark.parametrize(
        ("env", "names"),
        [
            ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
            (
                {
                    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "KAFKA_SASL_MECHANISM": "GSSAPI",
                    "KAFKA_SASL_USERNAME": "u",
                    "KAFKA_SASL_PASSWORD": "p",
                },
                "KAFKA_SASL_MECHANISM",
            ),
            ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_USERNAME"),
            ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_"),
            ({"KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_"),
            (
                {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
                "KAFKA_SSL_CA_FILE",
            ),
            (
                {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": "/etc/hostname"},
                "KAFKA_SSL_KEY_FILE",
            ),
        ],
    )
    def test_an_inconsistent_setting_fails_at_start_naming_the_variable(self, env, names):
        """A protocol, mechanism, missing credential or missing file is refused when the settings are read."""
        with pytest.raises(ConfigurationError, match=names):
            security_from(Settings.from_env(env))

    def test_the_producer_library_keeps_idempotence_with_security(self, pki):
        """The МИС producer config under TLS still asks for acks=all and idempotence."""
        config = sync_producer_config(
            "k:9093", security=KafkaSecurity(protocol="SSL", ca_file=str(pki["ca.pem"]))
        )
        assert ("all", True, "SSL") == (
            config["acks"],
            config["enable_idempotence"],
            config["security_protocol"],
        )


@pytest.mark.integration
class TestOverMutualTls:
    def test_topics_are_created_over_tls(self, tls_broker, pki):
        """ensure_topics reaches a TLS-only cluster with the client certificate."""
        security = security_from(Settings.from_env(_tls_env(pki, tls_broker.bootstrap_servers)))
        created = ensure_topics(
            tls_broker.bootstrap_servers,
            partitions=1,
            topics=(CREATED, Topic("emd.tls", "t")),
            security=security,
        )
        assert sorted([CREATED.name, "emd.tls"]) == sorted(created)
        assert "emd-worker" in tls_broker.peers

    def test_a_worker_producer_writes_over_tls(self, tls_broker, pki):
        """A worker's aiokafka producer, configured from the environment, writes through mutual TLS."""
        settings = Settings.from_env(_tls_env(pki, tls_broker.bootstrap_servers))
        ensure_topics(
            tls_broker.bootstrap_servers,
            partitions=1,
            topics=(Topic("emd.tls", "t"),),
            security=security_from(settings),
        )

        async def send() -> None:
            producer = AIOKafkaProducer(**aio_producer_config(settings, client_id="tls-test"))
            await producer.start()
            try:
                await producer.send_and_wait("emd.tls", b"over tls", key=b"k")
            finally:
                await producer.stop()

        asyncio.run(send())
        assert [b"over tls"] == [
            r.value for r in read_all(tls_broker.bootstrap_servers, "emd.tls", expect=1, **_read_tls(pki))
        ]

    def test_a_librdkafka_worker_producer_writes_over_tls(self, tls_broker, pki):
        """The librdkafka transport's producer (EMD_KAFKA_CLIENT=confluent), configured from the environment,
        writes through mutual TLS."""
        settings = Settings.from_env(
            {**_tls_env(pki, tls_broker.bootstrap_servers), "EMD_KAFKA_CLIENT": "confluent"}
        )
        ensure_topics(
            tls_broker.bootstrap_servers,
            partitions=1,
            topics=(Topic("emd.tls.rd", "t"),),
            security=security_from(settings),
        )

        async def send() -> None:
            producer = await ConfluentTransport(settings).producer(client_id="tls-rd", topics=["emd.tls.rd"])
            try:
                await producer.send([Output("emd.tls.rd", b"over tls, librdkafka", key="k")])
            finally:
                await producer.stop()

        asyncio.run(send())
        assert [b"over tls, librdkafka"] == [
            r.value for r in read_all(tls_broker.bootstrap_servers, "emd.tls.rd", expect=1, **_read_tls(pki))
        ]

    def test_the_mis_publisher_publishes_over_tls(self, tls_broker, pki, tmp_path):
        """DocumentPublisher with KafkaSecurity publishes a document through mutual TLS."""
        settings = Settings.from_env(_tls_env(pki, tls_broker.bootstrap_servers))
        ensure_topics(
            tls_broker.bootstrap_servers, partitions=1, topics=(CREATED,), security=security_from(settings)
        )
        with DocumentPublisher(
            tls_broker.bootstrap_servers, mis_id="tls-mis", security=security_from(settings)
        ) as pub:
            published = pub.publish(GOOD.read_bytes())
        records = read_all(tls_broker.bootstrap_servers, CREATED.name, **_read_tls(pki))
        assert published.local_uid.encode() in [r.key for r in records]

    def test_a_client_without_the_certificate_is_refused(self, tls_broker, pki):
        """Without the client certificate the handshake fails: the TLS front is really checking."""
        settings = Settings.from_env(
            {
                **_tls_env(pki, tls_broker.bootstrap_servers),
                "KAFKA_SSL_CERT_FILE": "",
                "KAFKA_SSL_KEY_FILE": "",
            }
        )

        async def start() -> None:
            producer = AIOKafkaProducer(
                **{**aio_producer_config(settings, client_id="no-cert"), "request_timeout_ms": 3000}
            )
            try:
                await producer.start()
            finally:
                await producer.stop()

        with pytest.raises(KafkaConnectionError):
            asyncio.run(start())


def _read_tls(pki) -> dict[str, str]:
    return {
        "security_protocol": "SSL",
        "ssl_cafile": str(pki["ca.pem"]),
        "ssl_certfile": str(pki["client.pem"]),
        "ssl_keyfile": str(pki["client.key"]),
    }
