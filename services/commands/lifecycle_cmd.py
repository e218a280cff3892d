"""``emd lifecycle migrate`` (create or upgrade the lifecycle database, grant the application role) and
``emd lifecycle prune`` (retention of decided documents): the two jobs of the lifecycle database."""

from __future__ import annotations

import argparse
import sys

from producer.errors import ConfigurationError, TransientError
from services.config import Settings
from services.logs import configure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lifecycle",
        help="the lifecycle database's jobs: migrate (schema, grants), prune (retention)",
        description=__doc__,
    )
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    m = jobs.add_parser(
        "migrate",
        help="create or upgrade the tables (as their owner) and grant the application role",
        description="Create the lifecycle and desk tables that are missing and add the columns a newer version "
        "needs, in the database EMD_LIFECYCLE_STORE names; idempotent. Run it as the tables' owner (the "
        "migration Job), before the new version's pods.",
    )
    m.add_argument(
        "--grant",
        metavar="ROLE",
        help="PostgreSQL role the pods use: gets USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on "
        "every table, nothing more",
    )
    m.set_defaults(func=run_migrate)
    r = jobs.add_parser(
        "prune",
        help="delete documents decided longer ago than the retention, with their attempts",
        description="Retention: documents registered or failed more than EMD_LIFECYCLE_RETENTION_DAYS ago are "
        "deleted with their attempts; documents still on their way are kept whatever their age.",
    )
    r.add_argument(
        "--older-than-days",
        type=float,
        metavar="DAYS",
        help="retention in days (default EMD_LIFECYCLE_RETENTION_DAYS)",
    )
    r.set_defaults(func=run_prune)


def _fail(job: str, message: str) -> int:
    print(f"emd lifecycle {job}: {message}", file=sys.stderr)
    return 2


def run_migrate(args: argparse.Namespace) -> int:
    from services.lifecycle.migrate import migrate

    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    try:
        tables = migrate(settings.data_dir, url=settings.lifecycle_store_url, grant=args.grant)
    except (ConfigurationError, TransientError) as exc:
        return _fail("migrate", exc.message)
    print(
        f"lifecycle database up to date: {', '.join(tables)}"
        + (f"; granted to {args.grant}" if args.grant else "")
    )
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from services.lifecycle.migrate import prune

    settings = Settings.from_env()
    configure(fmt=settings.log_format, level=settings.log_level)
    days = args.older_than_days if args.older_than_days is not None else settings.lifecycle_retention_days
    try:
        documents, attempts = prune(settings.data_dir, url=settings.lifecycle_store_url, older_than_days=days)
    except (ConfigurationError, TransientError) as exc:
        return _fail("prune", exc.message)
    print(f"pruned {documents} documents decided over {days:g} days ago, with {attempts} attempts")
    return 0
