"""``emd``: the one command-line entry point. Each subcommand lives next to the code it drives.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>`` on it. Modules are listed here in pipeline order.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from producer.files import PRIVATE_UMASK

#: the deployable's command modules, in the order ``emd --help`` lists them
COMMAND_MODULES = [
    "services.commands.topics_cmd",  # emd topics
    "services.commands.publish_cmd",  # emd publish
    "services.commands.sign_cmd",  # emd sign, emd verify (detached CAdES-BES)
    "services.commands.worker_cmd",  # emd worker NAME [--check]
    "services.commands.validate_cmd",  # emd validate (СЭМД XSD + Schematron)
    "services.commands.config_cmd",  # emd config
    "services.commands.certs_cmd",  # emd certs check
    "services.commands.callbacks_cmd",  # emd callbacks
    "services.commands.status_cmd",  # emd status LOCALUID
    "services.commands.lifecycle_cmd",  # emd lifecycle migrate/prune
    "services.commands.dlq_cmd",  # emd dlq list/show/export/ticket/replay
    "services.commands.request_cmd",  # emd request DOC.xml (every request it would send, nothing sent)
    "services.commands.clinic_cmd",  # emd clinic list/check/test/promote/suspend
    "services.commands.console_cmd",  # emd console (support console in a browser), add-user
]
#: installed packages add commands under this entry-point group (the development tooling, emd-lab, adds
#: ``emd run``, ``emd demo``, ``emd broker``, ``emd emulator``, ``emd bench`` and ``emd certs dev-config``);
#: the deployable never names them, so a production install simply has none
PLUGIN_GROUP = "emd.commands"


def _plugins() -> list[Any]:
    return [ep.load() for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emd",
        description="emd-pipeline: electronic medical documents from a МИС to РЭМД over Kafka "
        "(created → signed → sent → acknowledged).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in [*map(importlib.import_module, COMMAND_MODULES), *_plugins()]:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # files at rest are private (producer.files): whatever this process and its children write is 0600 / 0700
    os.umask(PRIVATE_UMASK)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
