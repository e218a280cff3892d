"""``emd topics``: create the pipeline's topics and each МИС's own two (idempotent), and list them.

The МИС are the organisations file's ``mis`` list (``EMD_ORGANIZATIONS``), or those given with ``--mis``.
"""

from __future__ import annotations

import argparse
import sys

from producer import topology
from producer.errors import ConfigurationError
from producer.topology import all_topics, ensure_topics
from services.config import Settings
from services.messaging.clients import security_from
from services.pipeline.organizations import read_mis_ids


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "topics",
        help="create the pipeline's topics (idempotent) and list them",
        description="Create every topic of producer/topology.py that does not exist yet: the pipeline's, and "
        "emd.document.created.<misId> and emd.document.status.<misId> of each МИС.",
    )
    t.add_argument("--bootstrap", default=None, help="bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    t.add_argument(
        "--mis",
        action="append",
        metavar="ID",
        help="a МИС whose topics to create (repeatable; default: the mis list of EMD_ORGANIZATIONS)",
    )
    t.set_defaults(func=run_topics)


def run_topics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    bootstrap = args.bootstrap or settings.kafka_bootstrap_servers
    if not bootstrap:
        print("emd topics: give --bootstrap or set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        mis_ids = args.mis or read_mis_ids(settings.organizations_file)
        for m in mis_ids:
            topology.check_mis_id(m)
        created = set(
            ensure_topics(
                bootstrap,
                mis_ids=mis_ids,
                partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
                security=security_from(settings),
            )
        )
    except ConfigurationError as exc:
        print(f"emd topics: {exc}", file=sys.stderr)
        return 2
    if not mis_ids:
        print("emd topics: no МИС in the organisations file: no created or status topic", file=sys.stderr)
    for t in all_topics(mis_ids):
        print(f"{'created' if t.name in created else 'exists '}  {t.name:40} {t.purpose}")
    return 0
