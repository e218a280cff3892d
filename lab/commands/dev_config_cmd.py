"""``emd certs dev-config DIR``: a development configuration (dev CA, doctors' and organisations' keys, МЧД,
ИС keys) for local runs and the emulator.

It writes ``DIR/organizations.json`` (``EMD_ORGANIZATIONS`` of the signer, sender, status worker and callback
service) and ``DIR/systems.json`` (``emd emulator --systems``), whose addresses agree with ``emd emulator`` and
``emd callbacks`` on their default ports (8085, 8086). The organisations and doctors are those given, or those of
the documents named with ``--for DOC.xml``: a document is signed only by doctors the file holds a key for
(``DOCTOR_KEY_UNKNOWN`` otherwise). Every component run as its own process: docs/integration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.dev.config import SYSTEMS_FILE, write_dev_config
from producer.errors import EmdError
from services import logs


def register(sub: argparse._SubParsersAction) -> None:
    actions = sub.choices["certs"].get_default("actions")
    d = actions.add_parser(
        "dev-config",
        help="write a development configuration (dev CA, keys, МЧД) and the emulator's systems.json",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("directory", type=Path)
    d.add_argument("--organizations", type=int, default=1, help="how many organisations (default 1)")
    d.add_argument("--oid", action="append", default=None, help="ФРМО OID of an organisation (repeatable)")
    d.add_argument("--doctor", action="append", default=None, help="a doctor's СНИЛС, 11 digits (repeatable)")
    d.add_argument(
        "--for",
        dest="documents",
        action="append",
        type=Path,
        default=[],
        metavar="DOC.xml",
        help="cover this СЭМД: its organisation (custodian) and every signer's СНИЛС (repeatable)",
    )
    d.add_argument(
        "--mode", choices=("server", "mis"), default="server", help="signing mode (default server)"
    )
    d.set_defaults(func=run_dev_config)


def run_dev_config(args: argparse.Namespace) -> int:
    logs.configure(level="warning")
    try:
        oids, doctors = _covered(args)
        path = write_dev_config(
            args.directory,
            organizations=args.organizations,
            oids=oids or None,
            doctors=doctors or ("12345678901",),
            mode=args.mode,
        )
    except (OSError, ValueError, EmdError) as exc:
        print(f"emd certs dev-config: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} and {path.parent / SYSTEMS_FILE}: run each component as docs/integration.md says",
        file=sys.stderr,
    )
    print(path)
    return 0


def _covered(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The organisation OIDs and doctors' СНИЛС asked for, with those of every ``--for`` document."""
    from lab.dev.local_pipeline import participants

    oids, doctors = list(args.oid or ()), list(args.doctor or ())
    named = [(str(p), p.read_bytes()) for p in args.documents]
    doc_oids, doc_snils = participants(named)
    return sorted({*oids, *doc_oids}), sorted({*doctors, *doc_snils})
