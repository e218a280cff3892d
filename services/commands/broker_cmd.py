"""``emd broker`` runs the local Kafka-protocol broker in the foreground; ``emd topics`` creates the topology."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from services.config import Settings
from services.errors import ConfigurationError
from services.logs import configure
from services.messaging.broker import LocalBroker
from services.messaging.clients import KafkaSecurity
from services.messaging.topology import ALL_TOPICS, ensure_topics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run the local broker (Tansu) on loopback until Ctrl-C",
                       description=__doc__)
    p.add_argument("--port", type=int, default=None, help="TCP port (default: EMD_BROKER_PORT, or a free one)")
    p.add_argument("--no-topics", action="store_true", help="do not create the pipeline's topics")
    p.set_defaults(func=run_broker)

    t = sub.add_parser("topics", help="create the pipeline's topics (idempotent) and list them",
                       description="Create every topic of services/messaging/topology.py that does not exist yet.")
    t.add_argument("--bootstrap", default=None, help="bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    t.set_defaults(func=run_topics)


def run_broker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    port = args.port if args.port is not None else settings.local_broker_port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalBroker(port=port) as broker:
        if not args.no_topics:
            ensure_topics(broker.bootstrap_servers, partitions=settings.kafka_topic_partitions)
        print(f"broker ready: export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        print("Ctrl-C to stop (its data is in memory and goes with it)", flush=True)
        try:
            while not stop.wait(0.5):
                if broker.process is None or broker.process.poll() is not None:
                    print("emd broker: the broker process exited", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def run_topics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    bootstrap = args.bootstrap or settings.kafka_bootstrap_servers
    if not bootstrap:
        print("emd topics: give --bootstrap or set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        created = set(ensure_topics(bootstrap, partitions=settings.kafka_topic_partitions,
                                    replication_factor=settings.kafka_replication_factor,
                                    min_insync_replicas=settings.kafka_min_insync_replicas,
                                    security=KafkaSecurity.from_settings(settings)))
    except ConfigurationError as exc:
        print(f"emd topics: {exc}", file=sys.stderr)
        return 2
    for t in ALL_TOPICS:
        print(f"{'created' if t.name in created else 'exists '}  {t.name:34} {t.purpose}")
    return 0
