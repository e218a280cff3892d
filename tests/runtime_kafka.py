"""One interface over the brokers the runtime's tests run on: the in-memory broker and the real one (Tansu).

A test body gets a ``TestKafka`` (the ``kafka`` fixture of ``tests/test_runtime.py``, parametrised over both)
and never asks which it is: it creates topics, sends inputs, builds stages on ``kafka.transport`` with
``kafka.settings(...)``, runs them, and reads what reached a topic as ``Record``\\ s. The real broker keeps the
memory broker honest: every body passes on both, and on the real broker through librdkafka (``ConfluentKafka``,
the transport ``EMD_KAFKA_CLIENT=confluent`` picks).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from producer.topology import Topic, ensure_topics
from services.config import Settings
from services.messaging.records import Record
from services.messaging.transport import Transport
from services.messaging.transports import MemoryBroker, MemoryTransport, for_settings
from tests.kafka_helpers import read_all

Value = bytes | Mapping[str, Any]


def _bytes(value: Value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


class TestKafka:
    """What a runtime test needs from a broker."""

    __test__ = False  # not a test class, whatever its name
    name = "?"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.run = uuid.uuid4().hex[:8]

    def topics(self, *suffixes: str, partitions: int = 2) -> dict[str, str]:
        """Fresh topics of this test (``{suffix: name}``)."""
        names = {s: f"rt.{self.run}.{s}" for s in suffixes}
        self._create(list(names.values()), partitions)
        return names

    def settings(self, **overrides: Any) -> Settings:
        """Settings for a stage of this test (data under its tmp_path, a short shutdown grace)."""
        return Settings.from_env(
            **{
                "data_dir": self.tmp_path,
                "kafka_enable_idempotence": False,
                "shutdown_grace_seconds": 5.0,
                **self._settings(),
                **overrides,
            }
        )

    def stage_name(self, label: str = "rt") -> str:
        """A stage name of this test's own (so its consumer group is new on a shared broker)."""
        return f"{label}-{self.run}"

    @property
    def transport(self) -> Transport:
        raise NotImplementedError

    def send(
        self, topic: str, items: Sequence[tuple[str | None, Value]], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Produce ``(key, value)`` records, each with ``headers``, and wait for the broker's acks."""
        raise NotImplementedError

    def read(self, topic: str, *, expect: int | None = None) -> list[Record]:
        """Every record of ``topic`` (``expect``: how many the test is sure to find, to wait for them)."""
        raise NotImplementedError

    def _create(self, names: list[str], partitions: int) -> None:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {}


class MemoryKafka(TestKafka):
    """The in-memory broker of ``services.messaging._transports.memory``."""

    name = "memory"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.broker = MemoryBroker()
        self._transport = MemoryTransport(self.broker)

    @property
    def transport(self) -> Transport:
        return self._transport

    def _create(self, names: list[str], partitions: int) -> None:
        for name in names:
            self.broker.create_topic(name, partitions)

    def send(
        self, topic: str, items: Sequence[tuple[str | None, Value]], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        for key, value in items:
            self.broker.produce(
                topic, _bytes(value), key=key.encode() if key is not None else None, headers=headers
            )

    def read(self, topic: str, *, expect: int | None = None) -> list[Record]:
        return self.broker.records(topic)


class TansuKafka(TestKafka):
    """The real local broker (the session's ``broker`` fixture), through aiokafka as deployed."""

    name = "tansu"

    def __init__(self, tmp_path: Path, bootstrap: str) -> None:
        super().__init__(tmp_path)
        self.bootstrap = bootstrap

    def _settings(self) -> dict[str, Any]:
        return {"kafka_bootstrap_servers": self.bootstrap}

    @property
    def transport(self) -> Transport:
        return for_settings(self.settings())

    def _create(self, names: list[str], partitions: int) -> None:
        ensure_topics(self.bootstrap, partitions=partitions, topics=tuple(Topic(n, "test") for n in names))

    def send(
        self, topic: str, items: Sequence[tuple[str | None, Value]], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            for key, value in items:
                producer.send(
                    topic,
                    key=key.encode() if key is not None else None,
                    value=_bytes(value),
                    headers=list(headers),
                )
            producer.flush()
        finally:
            producer.close()

    def read(self, topic: str, *, expect: int | None = None) -> list[Record]:
        raws = read_all(self.bootstrap, topic, expect=expect, idle=0.5 if expect is not None else 1.5)
        return [
            Record(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key.decode() if r.key is not None else None,
                value=r.value,
                headers=dict(r.headers or ()),
                timestamp_ms=r.timestamp,
            )
            for r in sorted(raws, key=lambda r: (r.partition, r.offset))
        ]


class ConfluentKafka(TansuKafka):
    """The real local broker through the librdkafka transport (confluent-kafka)."""

    name = "confluent"

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "kafka_client": "confluent"}
