"""Every Kafka topic of the pipeline: name, partitions, retention, key. One place, created at start.

Keys: every document topic is keyed by ``localUid``, so one document's events stay in one partition,
in order, across every stage. Retry and dead-letter topics keep the key of the record they carry.

Each МИС has two topics of its own, named by its ``misId`` (docs/security.md, "The trust model"): it writes
``emd.document.created.<misId>`` and reads ``emd.document.status.<misId>``, and its Kafka user may do nothing
else (``access``). The broker enforces who writes a topic, so the topic a record arrives on names its writer in a
form the МИС cannot forge; the signer reads the misId from it (``mis_of_created_topic``) and refuses a document
outside that МИС's grant. The per-МИС topics exist for the МИС of the deployment (the organisations file's
``mis`` list): ``all_topics(mis_ids)``, ``ensure_topics(..., mis_ids=...)``.

Dead-letter topics follow Spring's convention (``<source topic>.dlt``, same partition count, so a
record can keep its partition) and keep records for 30 days: support staff inspect, export and
replay them (``emd dlq``). The signer's one dead-letter topic, ``emd.document.created.dlt``, takes the failures
of every МИС's created topic (which is why ``dlt`` and ``retry`` are not allowed as a misId). Retry tiers are
separate topics per delay level (``…retry.0`` … ``…retry.N``) so a record waiting six hours never holds up one
due in a minute (Spring/Uber non-blocking retries).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
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


#: the МИС's topics, one pair per МИС: ``created_topic(misId)``, ``status_topic(misId)``
CREATED_PREFIX = "emd.document.created."
STATUS_PREFIX = "emd.document.status."
CREATED_PURPOSE = "МИС <misId> (producer) → signer: a new СЭМД to sign and register; only that МИС writes it"
STATUS_PURPOSE = "every stage → МИС <misId>: its documents' outcomes; only that МИС reads it"
STATUS_RETENTION_MS = 30 * DAY_MS

#: a МИС's id: lower-case letters, digits and dashes, at most 64 characters (a topic and a Kafka user name
#: are built from it); ``dlt`` and ``retry`` would name the dead-letter and retry topics
MIS_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
RESERVED_MIS_IDS = frozenset({"dlt", "retry"})
_MIS_ID = re.compile(MIS_ID_PATTERN)

SIGNED = Topic("emd.document.signed", "signer → sender: document with doctor and organisation signatures")
SENT = Topic("emd.document.sent", "sender → status: РЭМД accepted registerDocument (MessageID, attempt)")
ACKNOWLEDGED = Topic(
    "emd.document.acknowledged",
    "status → anyone: РЭМД registered the document (emdrId)",
    retention_ms=30 * DAY_MS,
)
CALLBACKS = Topic(
    "emd.remd.callbacks",
    "callback service → status: raw registerDocumentResult callbacks from ИПС, persisted first",
    key="relatesToMessage (normalised MessageID)",
    retention_ms=14 * DAY_MS,
)


def is_mis_id(mis_id: object) -> bool:
    """Whether ``mis_id`` may name a МИС's topics and Kafka user."""
    return isinstance(mis_id, str) and bool(_MIS_ID.match(mis_id)) and mis_id not in RESERVED_MIS_IDS


def check_mis_id(mis_id: str) -> str:
    """``mis_id`` if it may name a МИС's topics and Kafka user, else ``ConfigurationError``."""
    if not is_mis_id(mis_id):
        raise ConfigurationError(
            f"misId {mis_id!r}: expected lower-case letters, digits and dashes (at most 64, starting with a "
            f"letter or digit), not {' or '.join(sorted(RESERVED_MIS_IDS))}",
            reason="MIS_ID_INVALID",
        )
    return mis_id


def created_topic(mis_id: str) -> Topic:
    """``emd.document.created.<misId>``: where that МИС, and only it, publishes its documents."""
    return Topic(CREATED_PREFIX + check_mis_id(mis_id), CREATED_PURPOSE.replace("<misId>", mis_id))


def status_topic(mis_id: str) -> Topic:
    """``emd.document.status.<misId>``: that МИС's documents' outcomes, which only it reads."""
    return Topic(
        STATUS_PREFIX + check_mis_id(mis_id),
        STATUS_PURPOSE.replace("<misId>", mis_id),
        retention_ms=STATUS_RETENTION_MS,
    )


def mis_of_created_topic(name: str) -> str | None:
    """The misId whose created topic ``name`` is, or None (another topic, the dead letters, a bad name)."""
    if not name.startswith(CREATED_PREFIX):
        return None
    mis_id = name[len(CREATED_PREFIX) :]
    return mis_id if is_mis_id(mis_id) else None


def mis_topics(mis_ids: Iterable[str]) -> tuple[Topic, ...]:
    """The created and status topics of each МИС."""
    return tuple(t for m in mis_ids for t in (created_topic(m), status_topic(m)))


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


#: signer failures, of every МИС's created topic
CREATED_DLT = Topic(
    CREATED_PREFIX + "dlt",
    "dead letters of the signer (every emd.document.created.<misId>): original record + failure headers",
    retention_ms=30 * DAY_MS,
)
SIGNED_DLT = dead_letter(SIGNED)  # sender failures (after the retry tiers, or permanent at once)
SENT_DLT = dead_letter(SENT)  # status failures: РЭМД rejected, or no acknowledgment

#: the topics every deployment has, whatever its МИС
PIPELINE_TOPICS: tuple[Topic, ...] = (
    SIGNED,
    SENT,
    ACKNOWLEDGED,
    CALLBACKS,
    *SENDER_RETRIES,
    CREATED_DLT,
    SIGNED_DLT,
    SENT_DLT,
)
DEAD_LETTER_TOPICS = (CREATED_DLT, SIGNED_DLT, SENT_DLT)


def all_topics(mis_ids: Iterable[str]) -> tuple[Topic, ...]:
    """Every topic of a deployment whose МИС are ``mis_ids``: theirs, then the pipeline's."""
    return (*mis_topics(mis_ids), *PIPELINE_TOPICS)


#: event type → the topic its events go to, for the types whose topic is not a МИС's own
EVENT_TOPICS = {
    events.SIGNED: SIGNED,
    events.SENT: SENT,
    events.ACKNOWLEDGED: ACKNOWLEDGED,
}


def topic_of_event(event_type: str, mis_id: str | None = None) -> str:
    """The topic name events of ``event_type`` are produced to; a status goes to its МИС's topic (``mis_id``).

    A created event has no such topic here: each МИС publishes to its own (``created_topic``)."""
    if event_type == events.STATUS:
        if not mis_id:
            raise ValueError("a status event goes to its МИС's topic: the misId is needed")
        return status_topic(mis_id).name
    if event_type not in EVENT_TOPICS:
        raise ValueError(f"events of type {event_type!r} are not produced by the pipeline")
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
    mis_ids: Sequence[str] = (),
    topics: tuple[Topic, ...] | None = None,
    timeout_s: float = 30.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create whichever of ``topics`` do not exist yet; return the names created. Idempotent.

    ``topics``: default ``all_topics(mis_ids)``, the pipeline's and those of the МИС ``mis_ids``.
    ``min_insync_replicas`` must not exceed ``replication_factor`` (no write could ever succeed);
    ``security``: TLS/SASL to the brokers (default plaintext).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

    if topics is None:
        topics = all_topics(mis_ids)
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


#: the Kafka principal of a МИС is ``mis-<misId>`` (the KafkaUser ``emd-mis-<misId>``)
MIS_PRINCIPAL_PREFIX = "mis-"


def mis_groups(mis_id: str) -> tuple[str, ...]:
    """The consumer groups a МИС may use: ``emd-mis-<misId>`` itself and any ``emd-mis-<misId>.<name>``.

    The prefix ends with a dot, which no misId contains: a bare ``emd-mis-<misId>`` prefix would also cover the
    groups of every МИС whose id merely starts with it (``emd-mis-a`` those of ``emd-mis-ab``), and a МИС that may
    join another's group can take its partitions away from it."""
    return (f"emd-mis-{mis_id}", f"emd-mis-{mis_id}.*")


def access(mis_ids: Sequence[str]) -> dict[str, Access]:
    """Every component's topics and consumer groups in a deployment whose МИС are ``mis_ids`` (deploy/k8s
    KafkaUsers are generated from this; tests/test_workers.py checks the groups against the stages the workers
    build: ``emd-<stage name>``).

    Each МИС (``mis-<misId>``) writes only its created topic and reads only its status topic. The signer reads
    every МИС's created topic; every stage that tells a МИС writes every status topic. Support (``dlq``) writes
    the created topics too: a replayed signer dead letter goes back to the topic its МИС wrote it to."""
    ids = [check_mis_id(m) for m in mis_ids]
    created = tuple(created_topic(m) for m in ids)
    statuses = tuple(status_topic(m) for m in ids)
    components: dict[str, Access] = {
        "signer": Access(reads=created, writes=(SIGNED, *statuses, CREATED_DLT), groups=("emd-signer",)),
        "sender": Access(
            reads=(SIGNED, *SENDER_RETRIES),
            writes=(SENT, *statuses, *SENDER_RETRIES, SIGNED_DLT),
            groups=("emd-sender",),
        ),
        "status": Access(
            # the dead-letter topics: its lease holder counts the unhandled ones (services/desk/unhandled.py)
            reads=(SENT, CALLBACKS, *DEAD_LETTER_TOPICS),
            writes=(ACKNOWLEDGED, *statuses, SENT_DLT, SENDER_RETRIES[0], CALLBACKS),
            groups=("emd-acknowledger", "emd-acknowledger-sent"),
        ),
        "callbacks": Access(reads=(), writes=(CALLBACKS,)),
        "dlq": Access(reads=DEAD_LETTER_TOPICS, writes=(*created, SIGNED, SENT), groups=("emd-dlq-replay*",)),
    }
    for m in ids:
        components[MIS_PRINCIPAL_PREFIX + m] = Access(
            reads=(status_topic(m),), writes=(created_topic(m),), groups=mis_groups(m)
        )
    return components
