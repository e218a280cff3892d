"""``emd validate``: check a СЭМД file against the Ministry XSD and Schematron of its kind."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from producer.errors import PermanentError
from services import logs
from services.documents.validation import known_kinds, validate_semd


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check a СЭМД against its kind's XSD and Schematron",
        description=__doc__ + " Exit status: 0 valid (or no schema for the kind), "
        "1 invalid, 2 unreadable input.",
    )
    p.add_argument("file", type=Path, help="the СЭМД XML file")
    p.add_argument(
        "--kind",
        required=True,
        help="НСИ 1.2.643.5.1.13.13.11.1520 code; kinds with schemas: " + ", ".join(known_kinds()),
    )
    p.add_argument("--no-schematron", action="store_true", help="check the XSD only")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--limit", type=int, default=20, help="problems to print (default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.configure(level="warning")  # stdout is for the report (and --json)
    try:
        data = args.file.read_bytes()
        report = validate_semd(data, args.kind, schematron=not args.no_schematron)
    except OSError as exc:
        print(f"emd validate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except PermanentError as exc:
        print(f"emd validate: {args.file}: {exc.reason}: {exc.message}", file=sys.stderr)
        return 2
    problems = [("xsd", e.line, e.message) for e in report.xsd_errors] + [
        (f"schematron {f.kind}", f.line, f.message) for f in report.schematron_failures
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "kind": report.kind,
                    "valid": report.valid,
                    "checkedXsd": report.checked_xsd,
                    "checkedSchematron": report.checked_schematron,
                    "problems": [{"check": c, "line": line, "message": m} for c, line, m in problems],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print(report.summary())
        for check, line, message in problems[: args.limit]:
            print(f"  {check:18} line {line or '?':>5}  {message}")
        if len(problems) > args.limit:
            print(f"  … and {len(problems) - args.limit} more")
    return 0 if report.valid else 1
