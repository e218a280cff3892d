"""The deployed transport: aiokafka, configured from ``Settings`` by ``services.messaging.clients``.

Consumers join their group with auto-commit off, ``read_committed`` and the stage's session timeouts; the
producer is idempotent with ``acks=all`` and ``send`` waits for every acknowledgement. TLS and SASL come
from the ``KAFKA_*`` settings (``clients.security_from``). aiokafka's rebalance listener is awaited inside
its rebalance, so the runtime's ``revoked`` finishes and commits before the partition moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiokafka
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from services.config import Settings
from services.messaging.clients import aio_consumer_config, start_producer
from services.messaging.records import Output, Record
from services.messaging.transport import (
    CommitFailed,
    EndOffset,
    RebalanceListener,
    SendFailed,
    TopicPartition,
)


class AiokafkaTransport:
    """Consumers and producers of one process on the cluster ``settings`` names."""

    name = "aiokafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def consumer(self, *, group_id: str, client_id: str) -> AiokafkaConsumer:
        return AiokafkaConsumer(aio_consumer_config(self.settings, group_id=group_id, client_id=client_id))

    async def producer(self, *, client_id: str, topics: Sequence[str] = ()) -> AiokafkaProducer:
        return AiokafkaProducer(await start_producer(self.settings, client_id=client_id, topics=topics))


class AiokafkaConsumer:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self._consumer = aiokafka.AIOKafkaConsumer(**config)

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._consumer.subscribe(list(topics), listener=_Listener(listener))
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def fetch(self, *, timeout: float, max_records: int) -> Mapping[TopicPartition, Sequence[Record]]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        return {
            TopicPartition(tp.topic, tp.partition): [_record(r) for r in rs] for tp, rs in batches.items()
        }

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(_tp(partition), offset)

    def pause(self, partition: TopicPartition) -> None:
        self._consumer.pause(_tp(partition))

    def resume(self, partition: TopicPartition) -> None:
        if partition in self.assignment():
            self._consumer.resume(_tp(partition))

    async def position(self, partition: TopicPartition) -> int | None:
        try:
            return int(await self._consumer.position(_tp(partition)))
        except IllegalStateError:  # no longer assigned: a rebalance took it meanwhile
            return None

    def end_offset(self, partition: TopicPartition) -> EndOffset | None:
        if partition not in self.assignment():
            return None
        tp = _tp(partition)
        end = self._consumer.last_stable_offset(tp)
        if end is None:
            end = self._consumer.highwater(tp)
        seen_ms = self._consumer.last_poll_timestamp(tp)  # when the fetch response that said so came
        return None if end is None or seen_ms is None else EndOffset(int(end), seen_ms / 1000)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit({_tp(tp): offset for tp, offset in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            raise CommitFailed(str(exc)) from exc


class AiokafkaProducer:
    def __init__(self, producer: aiokafka.AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(self, outputs: Sequence[Output]) -> None:
        try:
            futures = []
            for out in outputs:
                key, value, headers = out.encoded()
                futures.append(await self._producer.send(out.topic, value=value, key=key, headers=headers))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise SendFailed(str(exc)) from exc

    async def stop(self) -> None:
        await self._producer.stop()


class _Listener(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped: its base is Any
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._listener.revoked(frozenset(TopicPartition(tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._listener.assigned(frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned))


def _tp(partition: TopicPartition) -> Any:
    return aiokafka.TopicPartition(partition.topic, partition.partition)


def _record(raw: Any) -> Record:
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key.decode("utf-8", "replace") if raw.key is not None else None,
        value=raw.value or b"",
        headers={k: v for k, v in (raw.headers or ())},
        timestamp_ms=raw.timestamp,
    )
