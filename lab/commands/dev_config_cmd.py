"""``emd certs dev-config DIR``: a development configuration (dev CA, doctors' and organisations' keys, МЧД,
ИС keys) for local runs and the emulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.dev.config import write_dev_config
from services import logs


def register(sub: argparse._SubParsersAction) -> None:
    actions = sub.choices["certs"].get_default("actions")
    d = actions.add_parser(
        "dev-config", help="write a development configuration (dev CA, keys, МЧД)", description=__doc__
    )
    d.add_argument("directory", type=Path)
    d.add_argument("--organizations", type=int, default=1, help="how many organisations (default 1)")
    d.add_argument("--oid", action="append", default=None, help="ФРМО OID of an organisation (repeatable)")
    d.add_argument("--doctor", action="append", default=None, help="a doctor's СНИЛС, 11 digits (repeatable)")
    d.add_argument(
        "--mode", choices=("server", "mis"), default="server", help="signing mode (default server)"
    )
    d.set_defaults(func=run_dev_config)


def run_dev_config(args: argparse.Namespace) -> int:
    logs.configure(level="warning")
    try:
        path = write_dev_config(
            args.directory,
            organizations=args.organizations,
            oids=args.oid,
            doctors=args.doctor or ("12345678901",),
            mode=args.mode,
        )
    except (OSError, ValueError) as exc:
        print(f"emd certs dev-config: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
