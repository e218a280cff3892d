"""Every Kafka topic of the pipeline: name, partitions, retention, key. One place, created at start.

Keys: every document topic is keyed by ``localUid``, so one document's events stay in one partition,
in order, across every stage. Retry and dead-letter topics keep the key of the record they carry.

Dead-letter topics follow Spring's convention (``<source topic>.dlt``, same partition count, so a
record can keep its partition) and keep records for 30 days: support staff inspect, export and
replay them (``emd dlq``). Retry tiers are separate topics per delay level (``…retry.0`` … ``…retry.N``)
so a record waiting six hours never holds up one due in a minute (Spring/Uber non-blocking retries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from producer import events
from producer.errors import ConfigurationError
from producer.kafka import KafkaSecurity, unreachable

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    #: who writes it → who reads it, and what the value is (docs/topics.md says more)
    purpose: str
    key: str = "localUid"
    retention_ms: int = 7 * DAY_MS
    #: None: the deployment's default partition count (Settings.kafka_topic_partitions)
    partitions: int | None = None
    cleanup_policy: str = "delete"


CREATED = Topic("emd.document.created", "МИС (producer) → signer: a new СЭМД to sign and register")
SIGNED = Topic("emd.document.signed", "signer → sender: document with doctor and organisation signatures")
SENT = Topic("emd.document.sent", "sender → status: РЭМД accepted registerDocument (MessageID, attempt)")
ACKNOWLEDGED = Topic(
    "emd.document.acknowledged",
    "status → anyone: РЭМД registered the document (emdrId)",
    retention_ms=30 * DAY_MS,
)
STATUS = Topic(
    "emd.document.status",
    "every stage → МИС: the document's outcome, for the МИС to show",
    retention_ms=30 * DAY_MS,
)
CALLBACKS = Topic(
    "emd.remd.callbacks",
    "callback service → status: raw registerDocumentResult callbacks from ИПС, persisted first",
    key="relatesToMessage (normalised MessageID)",
    retention_ms=14 * DAY_MS,
)

#: retry tiers of the sender (exponential backoff levels; delays come from the sender's settings)
SENDER_RETRY_TIERS = 6
SENDER_RETRIES = tuple(
    Topic(f"emd.document.signed.retry.{n}", f"sender → sender: transient failure, retry tier {n}")
    for n in range(SENDER_RETRY_TIERS)
)


def dead_letter(source: Topic) -> Topic:
    return Topic(
        f"{source.name}.dlt",
        f"dead letters of the stage reading {source.name}: original record + failure headers",
        retention_ms=30 * DAY_MS,
    )


CREATED_DLT = dead_letter(CREATED)  # signer failures
SIGNED_DLT = dead_letter(SIGNED)  # sender failures (after the retry tiers, or permanent at once)
SENT_DLT = dead_letter(SENT)  # status failures: РЭМД rejected, or no acknowledgment

ALL_TOPICS: tuple[Topic, ...] = (
    CREATED,
    SIGNED,
    SENT,
    ACKNOWLEDGED,
    STATUS,
    CALLBACKS,
    *SENDER_RETRIES,
    CREATED_DLT,
    SIGNED_DLT,
    SENT_DLT,
)
DEAD_LETTER_TOPICS = (CREATED_DLT, SIGNED_DLT, SENT_DLT)

#: event type → the topic its events go to (each pipeline event type has a topic of its own)
EVENT_TOPICS = {
    events.CREATED: CREATED,
    events.SIGNED: SIGNED,
    events.SENT: SENT,
    events.ACKNOWLEDGED: ACKNOWLEDGED,
    events.STATUS: STATUS,
}


def topic_of_event(event_type: str) -> str:
    """The topic name events of ``event_type`` are produced to."""
    return EVENT_TOPICS[event_type].name


def topic_config(topic: Topic, *, min_insync_replicas: int = 1) -> dict[str, str]:
    """The broker-side configuration of ``topic``: what ``ensure_topics`` creates and the Strimzi KafkaTopics say.

    ``min.insync.replicas`` makes ``acks=all`` mean something: a write is refused (and retried by the
    producer) unless that many replicas have it, so losing one broker loses no acknowledged record.
    """
    return {
        "retention.ms": str(topic.retention_ms),
        "cleanup.policy": topic.cleanup_policy,
        "min.insync.replicas": str(min_insync_replicas),
    }


def ensure_topics(
    bootstrap_servers: str,
    *,
    partitions: int = 6,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
    topics: tuple[Topic, ...] = ALL_TOPICS,
    timeout_s: float = 30.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create whichever of ``topics`` do not exist yet; return the names created. Idempotent.

    ``min_insync_replicas`` must not exceed ``replication_factor`` (no write could ever succeed);
    ``security``: TLS/SASL to the brokers (default plaintext).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

    if not 1 <= min_insync_replicas <= replication_factor:
        raise ConfigurationError(
            f"KAFKA_MIN_INSYNC_REPLICAS={min_insync_replicas} must be between 1 and "
            f"KAFKA_REPLICATION_FACTOR={replication_factor}"
        )
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="emd-topology",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **(security or KafkaSecurity()).kafka_python_options(),
        )
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise unreachable(bootstrap_servers, exc, after=timeout_s) from None
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        created = []
        for t in wanted:  # one by one: a concurrent creator must not fail the whole batch
            config = topic_config(t, min_insync_replicas=min_insync_replicas)
            try:
                admin.create_topics(
                    [NewTopic(t.name, t.partitions or partitions, replication_factor, topic_configs=config)]
                )
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics created", extra={"count": len(created), "bootstrap": bootstrap_servers})
        return created
    finally:
        admin.close()


@dataclass(frozen=True)
class Access:
    """What one component reads and writes, and its consumer groups: the least privilege its Kafka user gets."""

    reads: tuple[Topic, ...]
    writes: tuple[Topic, ...]
    #: consumer groups it joins; a name ending in ``*`` is a prefix (``emd dlq replay`` derives one per filter)
    groups: tuple[str, ...] = ()


#: every component's topics and consumer groups (deploy/k8s KafkaUsers are generated from this;
#: tests/test_workers.py checks the groups against the stages the workers build: ``emd-<stage name>``)
ACCESS: dict[str, Access] = {
    "signer": Access(reads=(CREATED,), writes=(SIGNED, STATUS, CREATED_DLT), groups=("emd-signer",)),
    "sender": Access(
        reads=(SIGNED, *SENDER_RETRIES),
        writes=(SENT, STATUS, *SENDER_RETRIES, SIGNED_DLT),
        groups=("emd-sender",),
    ),
    "status": Access(
        # the dead-letter topics: its lease holder counts the unhandled ones (services/desk/unhandled.py)
        reads=(SENT, CALLBACKS, *DEAD_LETTER_TOPICS),
        writes=(ACKNOWLEDGED, STATUS, SENT_DLT, SENDER_RETRIES[0], CALLBACKS),
        groups=("emd-acknowledger", "emd-acknowledger-sent"),
    ),
    "callbacks": Access(reads=(), writes=(CALLBACKS,)),
    "dlq": Access(reads=DEAD_LETTER_TOPICS, writes=(CREATED, SIGNED, SENT), groups=("emd-dlq-replay*",)),
}
