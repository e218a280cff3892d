"""``emd``: the one command-line entry point. Each subcommand lives next to the code it drives.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>`` on it. Modules are listed here in pipeline order.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command modules, in the order ``emd --help`` lists them
COMMAND_MODULES = [
    "services.commands.broker_cmd",     # emd broker, emd topics
    "producer.cli",                     # emd publish
    "services.commands.sign_cmd",       # emd sign, emd verify (detached CAdES-BES)
    "services.commands.worker_cmd",     # emd worker NAME [--check]
    "services.commands.validate_cmd",   # emd validate (СЭМД XSD + Schematron)
    "services.commands.config_cmd",     # emd config
    "services.commands.emulator_cmd",   # emd emulator (ИПС/РЭМД sandbox)
    "services.commands.certs_cmd",      # emd certs check / dev-config
    "services.commands.callbacks_cmd",  # emd callbacks, emd status LOCALUID
    "services.commands.run_cmd",        # emd run, emd demo (the whole pipeline locally)
    "services.commands.dlq_cmd",        # emd dlq list/show/export/ticket/replay
    "services.commands.clinic_cmd",     # emd clinic list/check/test/promote/suspend
    "services.commands.console_cmd",    # emd console (support console in a browser), add-user
    "services.commands.bench_cmd",      # emd bench (throughput, latency, CPU per document)
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emd",
        description="emd-pipeline: electronic medical documents from a МИС to РЭМД over Kafka "
                    "(created → signed → sent → acknowledged).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
