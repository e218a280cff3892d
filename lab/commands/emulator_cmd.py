"""``emd emulator``: run the ИПС/РЭМД emulator in the foreground (a sandbox for МИС teams, ``make run``).

Exit codes: 0 stopped by SIGINT/SIGTERM or ``--list-scenarios``, 2 usage errors (bad systems file,
unreadable key, port in use).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from lab.dev.ports import DEV_EMULATOR_PORT
from producer.errors import EmdError

EXIT_OK, EXIT_USAGE = 0, 2


def register(sub: argparse._SubParsersAction) -> None:
    from lab.emulator.faults import SCENARIOS

    p = sub.add_parser(
        "emulator",
        help="run the ИПС/РЭМД emulator (SOAP sandbox with fault injection)",
        description="An HTTP SOAP server that behaves like ИПС + РЭМД: registerDocument, "
        "getDocumentFile pulls, registerDocumentResult callbacks, polling, faults. "
        "Control API under /_emulator/ (see docs/emulator.md).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=DEV_EMULATOR_PORT,
        help=f"port (default {DEV_EMULATOR_PORT}, where `emd certs dev-config` points; 0 = any free port)",
    )
    p.add_argument(
        "--scenario", default="ok", choices=SCENARIOS, help="behaviour (default ok; see --list-scenarios)"
    )
    p.add_argument(
        "--list-scenarios", action="store_true", help="print the scenarios, one line each, and exit"
    )
    p.add_argument(
        "--systems",
        metavar="FILE",
        help="JSON: registered ИС (clientEntityId → certificates) and N3 clients (token → ЛПУ id)",
    )
    p.add_argument("--key", metavar="FILE", help="the emulator's signing key (default: a fresh dev key)")
    p.add_argument("--certificate", metavar="FILE", help="its certificate (with --key)")
    p.add_argument(
        "--write-certificate",
        metavar="FILE",
        help="write the emulator's certificate (PEM) here, for the МИС to trust its callbacks",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG (default 0)")
    p.add_argument(
        "--trusted-ca",
        metavar="FILE",
        action="append",
        default=[],
        help="an accredited CA (PEM/DER); signatures whose certificate no such CA issued are rejected "
        "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT (repeatable; default: any issuer)",
    )
    p.add_argument(
        "--state",
        metavar="DIR",
        help="keep registrations and accepted requests here, so a restart forgets nothing "
        "(default: memory only, a fresh test stand at every start)",
    )
    p.add_argument(
        "--outage-seconds", type=float, default=30.0, help="outage scenario: how long (default 30)"
    )
    p.add_argument(
        "--outage-from",
        choices=("first-request", "start"),
        default="first-request",
        help="outage scenario: when it begins (default first-request)",
    )
    p.add_argument(
        "--outage-mode",
        choices=("503", "refused"),
        default="503",
        help="outage scenario: HTTP 503 or connection refused (default 503)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.emulator.faults import SCENARIOS, scenario

    if args.list_scenarios:
        width = max(map(len, SCENARIOS))
        for name in SCENARIOS:
            print(f"{name:<{width}}  {scenario(name).description}")
        return EXIT_OK
    from lab.emulator import Emulator, load_systems
    from lab.emulator.systems import load_n3_tokens
    from services import telemetry
    from services.config import Settings
    from services.crypto import keys
    from services.crypto.certificates import load_certificate
    from services.logs import configure

    if bool(args.key) != bool(args.certificate):
        print("emd emulator: --key and --certificate go together", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = Settings.from_env()
        configure(fmt=settings.log_format, level=settings.log_level)  # its jobs' outcomes go to stderr
        telemetry.start("emd-emulator", instrument=("httpx",))  # its file pulls and callbacks carry the trace
        systems = load_systems(args.systems) if args.systems else []
        n3_tokens = load_n3_tokens(args.systems) if args.systems else {}
        key = keys.load_private_key(args.key) if args.key else None
        cert = load_certificate(args.certificate) if args.certificate else None
        accredited = [load_certificate(path) for path in args.trusted_ca]
        emu = Emulator(
            args.host,
            args.port,
            scenario=args.scenario,
            systems=systems,
            key=key,
            certificate=cert,
            seed=args.seed,
            outage_seconds=args.outage_seconds,
            outage_from=args.outage_from,
            outage_mode=args.outage_mode,
            state_dir=args.state,
            accredited=accredited,
            n3_tokens=n3_tokens,
        )
        emu.start()
    except (EmdError, OSError, ValueError) as exc:
        print(f"emd emulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.write_certificate:
        with open(args.write_certificate, "wb") as out:
            out.write(emu.certificate.to_pem())
    print(
        f"emd emulator listening on {emu.url} (scenario {args.scenario}, {len(systems)} system(s))",
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return EXIT_OK
