"""``emd certs check``: days to expiry of every configured certificate and МЧД.

``check`` exits 0 when everything is valid for at least ``--days`` more days (default 30), 1 when
something expires within that window (or already has, or a key cannot be unlocked), 2 when the
configuration cannot be read. Output: one line per certificate / МЧД, soonest first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from producer.errors import ConfigurationError
from services import logs
from services.config import Settings
from services.pipeline.organizations import load_organizations
from services.pipeline.signing import mchd_expiry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certs",
        help="configured certificates and МЧД: expiry check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="certs_command", metavar="ACTION")
    p.set_defaults(actions=csub)  # where a plugin adds its own (the lab: dev-config)
    c = csub.add_parser("check", help="days to expiry of every certificate and МЧД; exit 1 if any is due")
    c.add_argument("--days", type=int, default=30, help="warn window in days (default 30)")
    c.add_argument(
        "--config",
        type=Path,
        default=None,
        help="organisations file (default: EMD_ORGANIZATIONS, config/organizations.json)",
    )
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_check(args: argparse.Namespace) -> int:
    logs.configure(level="warning")  # stdout is for the report
    if args.days < 0:
        print("emd certs check: --days must be 0 or more", file=sys.stderr)
        return 2
    path = args.config or Settings.from_env().organizations_file
    try:
        config = load_organizations(path)
    except ConfigurationError as exc:
        print(f"emd certs check: {exc.message}", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC)
    rows = []  # (seconds left, line)
    for org, role, cred in config.credentials():
        cert = cred.certificate
        left = (cert.not_after - now).total_seconds()
        state = "" if cred.usable else "  KEY UNUSABLE (wrong or missing password)"
        name = cert.common_name or "?"
        rows.append(
            (
                left if cred.usable else -1e18,
                f"{left / 86400:9.1f} days  certificate  {org.oid}  {role:<12} serial {cert.serial_number:x}  "
                f"{name}  until {cert.not_after:%Y-%m-%d}{state}",
            )
        )
    for org in config.organizations.values():
        if org.mchd is not None:
            poa = org.mchd.poa
            left = (mchd_expiry(poa) - now).total_seconds()
            revoked = "  REVOKED" if poa.number in config.revoked else ""
            rows.append(
                (
                    left if not revoked else -1e18,
                    f"{left / 86400:9.1f} days  МЧД          {org.oid}  {poa.number}  until "
                    f"{poa.valid_until.isoformat()}{revoked}",
                )
            )
    rows.sort(key=lambda r: r[0])
    due = [line for left, line in rows if left < args.days * 86400]
    for _, line in rows:
        print(line)
    if due:
        print(f"{len(due)} of {len(rows)} expire within {args.days} days (or are unusable)", file=sys.stderr)
        return 1
    print(f"all {len(rows)} valid for more than {args.days} days")
    return 0
