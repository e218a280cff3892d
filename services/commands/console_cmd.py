"""``emd console``: the support console in a browser (docs/support.md); ``emd console add-user NAME``.

    emd console [--host H] [--port P]      serve it (EMD_CONSOLE_HOST/PORT; SIGTERM/Ctrl-C stop it)
    emd console add-user NAME              add or replace a user who may replay and promote; the password
                                           is read from standard input (never from the command line)

Every page needs a login (EMD_CONSOLE_USERS: names with scrypt hashes); at most 10 failed logins per user
and per address in 15 minutes, then a 15-minute lockout. Behind a TLS front, set EMD_CONSOLE_TRUSTED_PROXIES
(and EMD_CONSOLE_SECURE_COOKIES=true when the console is only reached through it).
It reads the dead-letter topics (KAFKA_BOOTSTRAP_SERVERS), the lifecycle store and the support tables
(EMD_LIFECYCLE_STORE / EMD_DATA_DIR), the claim-check store and the organisations file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services import logs
from services.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="the support console (browser): dead letters, documents, clinics, audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=None, help="interface (default EMD_CONSOLE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default EMD_CONSOLE_PORT, 8087)")
    p.set_defaults(func=cmd_serve)
    csub = p.add_subparsers(dest="console_command")
    a = csub.add_parser("add-user", help="add a user who may replay and promote (password from stdin)")
    a.add_argument("name")
    a.add_argument("--users", type=Path, default=None, help="users file (default EMD_CONSOLE_USERS)")
    a.set_defaults(func=cmd_add_user)


def cmd_add_user(args: argparse.Namespace) -> int:
    from services.console.auth import add_user

    if not args.name.strip() or any(c.isspace() for c in args.name):
        print("emd console add-user: the name must be one word", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        print(
            "emd console add-user: give a password of 12 characters or more on standard input",
            file=sys.stderr,
        )
        return 2
    path = args.users or Settings.from_env().console_users_file
    add_user(path, args.name, password)
    print(f"{args.name} added to {path}")
    return 0


def build_console(settings: Settings) -> Any:
    """The console's parts, opened from the settings (also what the tests start)."""
    from services.console.app import Console
    from services.console.auth import Sessions, load_users
    from services.console.index import DeadLetterIndex
    from services.desk import readiness
    from services.desk import replay as replaying
    from services.desk.deadletters import TOPIC_OF_STAGE
    from services.documents.store import store_from_settings
    from services.lifecycle import open_store
    from services.lifecycle.support_tables import open_support_tables
    from services.messaging.clients import kafka_python_config
    from services.pipeline.exchanges import ExchangeArchive
    from services.pipeline.organizations import load_organizations, watch_organizations

    kafka = kafka_python_config(settings)
    tables = open_support_tables(settings.data_dir, url=settings.lifecycle_store_url)
    # certificates and settings only: the console holds no key; reloaded when the file changes
    config = load_organizations(
        settings.organizations_file, max_document_bytes=settings.max_document_bytes, role="console"
    )
    watch_organizations(config, interval=settings.organizations_reload_seconds)

    def organizations() -> Any:
        return config

    def clinic_readiness(oid: str) -> list[Any]:
        ca = Path(settings.organizations_file).parent / "ca.pem"
        cas = readiness.load_cas([ca] if ca.is_file() else [])
        return readiness.check(
            oid,
            organizations(),
            cas=cas,
            clinic_state=tables.clinic(oid).state,
            unpromoted=settings.unpromoted_clinics,
        )

    def replay(filters: Any, dry_run: bool) -> tuple[Any, list[str]]:
        lines: list[str] = []
        summary = replaying.replay(
            kafka,
            filters,
            dry_run=dry_run,
            on_record=lambda action, d, detail: lines.append(
                f"{action} {d.local_uid} ({d.reason}, MessageID {d.message_id or '-'}) → {detail}"
            ),
        )
        return summary, lines

    return Console(
        index=DeadLetterIndex(kafka, list(TOPIC_OF_STAGE.values())).start(),
        lifecycle=open_store(settings.data_dir, url=settings.lifecycle_store_url),
        tables=tables,
        archive=ExchangeArchive(documents=store_from_settings(settings), tables=tables),
        organizations=organizations,
        readiness=clinic_readiness,
        replay=replay,
        sessions=Sessions(load_users(settings.console_users_file)),
        secure_cookies=settings.console_secure_cookies,
        trusted_proxies=[p for p in settings.console_trusted_proxies.split(",") if p.strip()],
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from services.console.app import make_app

    settings = Settings.from_env()
    logs.configure(fmt=settings.log_format, level=settings.log_level)
    if not settings.kafka_bootstrap_servers:
        print(
            "emd console: set KAFKA_BOOTSTRAP_SERVERS (the dead letters live on the cluster)", file=sys.stderr
        )
        return 2
    try:
        console = build_console(settings)
    except (ValueError, OSError) as exc:  # a bad users file or EMD_CONSOLE_TRUSTED_PROXIES entry
        print(f"emd console: {exc}", file=sys.stderr)
        return 2
    if not console.sessions.users:
        print(
            f"emd console: no users in {settings.console_users_file}: nobody can log in, and every page needs "
            "a login (emd console add-user NAME)",
            file=sys.stderr,
        )
    host, port = args.host or settings.console_host, args.port or settings.console_port
    try:
        web.run_app(
            make_app(console),
            host=host,
            port=port,
            print=lambda *_: print(f"emd console: http://{host}:{port}/", flush=True),
            handle_signals=True,
        )
    finally:
        console.index.stop()
        console.lifecycle.close()
        console.tables.close()
    return 0
