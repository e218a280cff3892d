"""``emd broker`` runs the local Kafka-protocol broker (Tansu) in the foreground, with the pipeline's topics."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from lab.broker import LocalBroker
from lab.dev.config import DEV_MIS_ID
from producer.topology import ensure_topics
from services.config import Settings
from services.logs import configure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker", help="run the local broker (Tansu) on loopback until Ctrl-C", description=__doc__
    )
    p.add_argument(
        "--port", type=int, default=None, help="TCP port (default: EMD_BROKER_PORT, or a free one)"
    )
    p.add_argument("--no-topics", action="store_true", help="do not create the pipeline's topics")
    p.set_defaults(func=run_broker)


def run_broker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    port = args.port if args.port is not None else settings.local_broker_port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalBroker(port=port) as broker:
        if not args.no_topics:
            # the development МИС's topics too: `emd run`/`emd demo` against this broker publish as it
            ensure_topics(
                broker.bootstrap_servers, partitions=settings.kafka_topic_partitions, mis_ids=(DEV_MIS_ID,)
            )
        # what this broker supports: it refuses the idempotent producer, so the workers are told not to ask
        env = " ".join(f"{k}={v}" for k, v in broker.client_env().items())
        print(f"broker ready: export {env}", flush=True)
        print("Ctrl-C to stop (its data is in memory and goes with it)", flush=True)
        try:
            while not stop.wait(0.5):
                if broker.process is None or broker.process.poll() is not None:
                    print("emd broker: the broker process exited", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0
