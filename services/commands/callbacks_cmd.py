"""``emd callbacks``: the МИС callback endpoint for ИПС (``registerDocumentResult``, ``getDocumentFile``)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from producer.errors import ConfigurationError
from services import telemetry
from services.config import Settings
from services.logs import configure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "callbacks",
        help="serve the callback endpoint ИПС calls (registerDocumentResult, getDocumentFile)",
        description=__doc__,
    )
    p.add_argument("--host", help="interface (default EMD_CALLBACK_HOST)")
    p.add_argument("--port", type=int, help="port (default EMD_CALLBACK_PORT)")
    p.set_defaults(func=run_callbacks)


def run_callbacks(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    if not settings.kafka_bootstrap_servers:
        print("emd callbacks: KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    from workers.callbacks.worker import build

    if args.host is not None:
        settings = dataclasses.replace(settings, callback_host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, callback_port=args.port)
    try:
        telemetry.start("emd-callbacks")  # before build: the document store it makes is traced
        asyncio.run(build(settings).run())
    except ConfigurationError as exc:
        print(f"emd callbacks: {exc.message}", file=sys.stderr)
        return 2
    return 0
