"""``emd bench``: what one document costs, and how many the pipeline passes, on this machine (``make bench``).

Starts a broker, the РЭМД emulator, the callback service and every worker as separate processes, with real
signatures both ways, publishes documents made from the samples through the producer library, and prints:

* the ceiling of each stage measured alone (signing one document; building and signing one SOAP request;
  one emulator request, file pull and callback included; broker produce and consume at our record sizes);
* end-to-end documents/s over the steady state, and the ratio to the slowest ceiling;
* created → acknowledged latency p50/p95/p99 at an offered rate (``--rate``, default 20/s);
* CPU milliseconds per document of every process, read from ``/proc`` (robust to a busy machine, which
  wall-clock figures are not), and each one's peak resident memory.

``--backlog N`` instead publishes N documents before the workers start and reports the drain: time and
worker memory at 1k, 10k and 100k acknowledged. Each run is appended to ``docs/benchmarks.md`` (``--record``)
with the machine and the commit. The last line is machine-readable::

    e2e_docs_per_s=X pipeline_cpu_ms_per_doc=C emulator_cpu_ms_per_doc=E producer_cpu_ms_per_doc=P p99_s=L max_worker_rss_mb=M ...
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lab.dev.samples import default_samples


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure throughput, latency and CPU per document of the whole pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--documents",
        type=_positive(int),
        default=3000,
        help="documents to publish after the warm-up (default 3000)",
    )
    p.add_argument(
        "--latency-documents",
        type=int,
        default=None,
        help="how many of them are offered at --rate for the latency figures "
        "(default a fifth, at most 600); the rest go as fast as the МИС publishes",
    )
    p.add_argument(
        "--rate", type=_positive(float), default=20.0, help="offered documents/s for latency (default 20)"
    )
    p.add_argument(
        "--scenario", default="ok", help="emulator scenario (default ok; emd emulator --list-scenarios)"
    )
    p.add_argument(
        "--backlog",
        type=_positive(int),
        default=None,
        help="publish N documents before the workers start; report the drain at 1k, 10k, 100k",
    )
    p.add_argument(
        "--inline-limit",
        type=int,
        default=None,
        help="the producer's inline limit in bytes (default its own; larger documents go by claim-check)",
    )
    p.add_argument(
        "--warm-up",
        type=int,
        default=None,
        help="documents published before measuring (default one of each sample kind)",
    )
    p.add_argument(
        "--ceiling-seconds",
        type=float,
        default=3.0,
        help="seconds to measure each in-process stage ceiling (default 3; 0 skips the ceilings)",
    )
    p.add_argument(
        "--samples",
        type=Path,
        help="folder of СЭМД to generate from (default: the Ministry corpus when "
        "present, else the repository's samples; lab/dev/samples.py)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".emd-data/bench"),
        help="configuration, data and child logs (emptied at start)",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=1800.0,
        help="seconds to wait for each phase (default 1800)",
    )
    p.add_argument(
        "--record",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="append the run to this file (default docs/benchmarks.md; --no-record to skip)",
    )
    p.add_argument(
        "--no-record", dest="record", action="store_const", const=None, help="do not record the run"
    )
    p.set_defaults(func=run)


def _recorded_options(argv: list[str]) -> list[str]:
    """The options as recorded: without the paths of this machine (--workdir, --record, --samples)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workdir", "--record", "--samples"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from lab.dev import bench, ceilings
    from services.logs import configure

    if args.latency_documents is not None and args.latency_documents < 0:
        print("emd bench: --latency-documents must be 0 or more", file=sys.stderr)
        return 2
    if args.warm_up is not None and args.warm_up < 0:
        print("emd bench: --warm-up must be 0 or more", file=sys.stderr)
        return 2
    args.samples = args.samples or default_samples()
    if not args.samples.is_dir():
        print(f"emd bench: no sample folder {args.samples} (give --samples)", file=sys.stderr)
        return 2
    configure(fmt="console", level="warning")
    options = bench.BenchOptions(
        documents=args.documents,
        latency_documents=args.latency_documents,
        rate=args.rate,
        scenario=args.scenario,
        samples=args.samples,
        workdir=args.workdir.resolve(),
        timeout=args.timeout,
        inline_limit=args.inline_limit,
        warm_up=args.warm_up,
    )
    command = "emd bench " + shlex.join(_recorded_options(sys.argv[2:] if sys.argv[1:2] == ["bench"] else []))
    _say(f"machine: {bench.machine()}")
    if args.backlog:
        backlog = bench.run_backlog(options, args.backlog, say=_say)
        table = bench.backlog_table(backlog)
        print(table)
        if args.record is not None:
            bench.record(args.record, command=command, sections=[("Backlog drain:", table)])
        print(
            f"backlog={backlog.documents} drain_docs_per_s={backlog.docs_per_s:.1f} "
            f"max_worker_rss_mb={max(backlog.peak_rss_mb.values(), default=0):.0f}",
            flush=True,
        )
        return 0

    limits = (
        ceilings.measure(
            args.samples, seconds=args.ceiling_seconds, workdir=options.workdir / "ceilings", say=_say
        )
        if args.ceiling_seconds > 0
        else None
    )
    result = bench.run(options, say=_say)
    sections = []
    if limits is not None:
        sections.append(("Each stage alone (its ceiling):", ceilings.table(limits, e2e=result.docs_per_s)))
    sections.append(("The whole pipeline:", bench.e2e_table(result)))
    for title, body in sections:
        print(f"\n{title}\n\n{body}")
    if args.record is not None:
        bench.record(args.record, command=command, sections=sections)
        _say(f"recorded in {args.record}")
    print(bench.summary_line(result), flush=True)
    return 0 if result.lost == 0 and result.acknowledged + result.dead_lettered == result.documents else 1
