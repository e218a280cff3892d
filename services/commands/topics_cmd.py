"""``emd topics``: create the pipeline's topics (idempotent) and list them."""

from __future__ import annotations

import argparse
import sys

from producer.errors import ConfigurationError
from producer.topology import ALL_TOPICS, ensure_topics
from services.config import Settings
from services.messaging.clients import security_from


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "topics",
        help="create the pipeline's topics (idempotent) and list them",
        description="Create every topic of producer/topology.py that does not exist yet.",
    )
    t.add_argument("--bootstrap", default=None, help="bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    t.set_defaults(func=run_topics)


def run_topics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    bootstrap = args.bootstrap or settings.kafka_bootstrap_servers
    if not bootstrap:
        print("emd topics: give --bootstrap or set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        created = set(
            ensure_topics(
                bootstrap,
                partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
                security=security_from(settings),
            )
        )
    except ConfigurationError as exc:
        print(f"emd topics: {exc}", file=sys.stderr)
        return 2
    for t in ALL_TOPICS:
        print(f"{'created' if t.name in created else 'exists '}  {t.name:34} {t.purpose}")
    return 0
