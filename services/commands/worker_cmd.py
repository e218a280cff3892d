"""``emd worker NAME``: run one pipeline process in the foreground; ``--check`` is its liveness probe."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable

from producer.errors import ConfigurationError
from services import telemetry
from services.config import Settings
from services.logs import configure, get_logger
from services.messaging.app import App
from services.messaging.heartbeat import check_health

#: worker name → "module:build"; ``build(settings)`` returns the process's services.messaging.app.App
WORKERS = {
    "signer": "workers.signer.worker:build",
    "sender": "workers.sender.worker:build",
    "status": "workers.status.worker:build",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a pipeline worker (signer, sender, status)", description=__doc__)
    p.add_argument("name", choices=sorted(WORKERS), help="the stage to run")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if a running stage's heartbeat is fresh, 1 otherwise (exec liveness probe)",
    )
    p.set_defaults(func=run)


def load_build(name: str) -> Callable[[Settings], App]:
    """The ``build(settings)`` of worker ``name``."""
    module, _, attr = WORKERS[name].partition(":")
    build: Callable[[Settings], App] = getattr(importlib.import_module(module), attr)
    return build


def run(args: argparse.Namespace) -> int:
    """Exit 2 with one line on stderr when the configuration keeps the stage from working (at start, not later)."""
    try:
        settings = Settings.from_env()
        if args.check:
            ok, text = check_health(settings, args.name)
            print(text)
            return 0 if ok else 1
        configure(fmt=settings.log_format, level=settings.log_level)
        telemetry.start(f"emd-{args.name}")  # before build: the stores and transports it makes are traced
        if not settings.kafka_bootstrap_servers:
            raise ConfigurationError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (start `emd broker` and export the address it prints)"
            )
        app = load_build(args.name)(settings)
        get_logger("emd.worker").info("starting", stage=args.name, bootstrap=settings.kafka_bootstrap_servers)
        asyncio.run(app.run())
    except ConfigurationError as exc:
        print(f"emd worker {args.name}: {exc.message}", file=sys.stderr, flush=True)
        return 2
    return 0
