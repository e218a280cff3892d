"""``emd config``: print every setting with its effective value and meaning (secrets masked)."""

from __future__ import annotations

import argparse

from services.config import Settings, settings_table_markdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config", help="show the effective configuration (environment variables)", description=__doc__
    )
    p.add_argument("--markdown", action="store_true", help="print the README's configuration table instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table_markdown())
        return 0
    for env, value, doc in Settings.from_env().describe():
        print(f"{env:32} = {value!s:28} {doc}")
    return 0
