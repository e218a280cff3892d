"""``emd run`` and ``emd demo``: the whole pipeline on one machine, on the embedded defaults.

Starts (or uses, with KAFKA_BOOTSTRAP_SERVERS) a broker, creates the topics, writes a development
configuration (dev CA, doctors' and organisations' keys, МЧД, ИС keys), starts the РЭМД/ИПС emulator, the
callback service and the three workers as child processes, publishes documents, and follows them from
topic to topic until each is acknowledged or dead-lettered.

* ``emd run`` (``make run``): the Ministry sample documents, a live terminal view, then a summary. Ctrl-C
  stops everything; no process is left behind.
* ``emd demo --documents N``: N documents generated from the samples with fresh localUids, no live view;
  exit 0 only when every document reached a final state; the last line is machine-readable:
  ``acknowledged=A dead_lettered=D unfinished=U lost=L duplicated=R``. ``unfinished``: documents still on their
  way at the timeout (on a topic, not final yet); ``lost``: published, acknowledged by the broker, and on no
  topic at all.

Afterwards the run's data stays in ``WORKDIR/data`` until the next run: the last lines print the
``EMD_DATA_DIR=… emd status LOCALUID`` and ``… emd dlq show LOCALUID`` commands that read it. The run keeps its
own data directory, rather than writing into the default one, because everything in it (development keys,
emulator, lifecycle database) belongs to that run and is replaced by the next. A broker the run spawned keeps
its topics in memory, so its dead letters are written to ``WORKDIR/data/dead-letters.jsonl`` before it stops;
``emd dlq`` reads them there when no ``KAFKA_BOOTSTRAP_SERVERS`` is set.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from lab.broker import LocalBroker
from lab.dev.config import DEV_MIS_ID
from lab.dev.local_pipeline import LocalPipeline, sample_documents
from lab.dev.samples import default_samples
from lab.dev.supervisor import Supervisor
from lab.dev.watch import STAGES, PipelineWatcher, Snapshot
from producer.errors import ConfigurationError
from producer.files import private_dir
from producer.topology import ensure_topics
from services import telemetry
from services.commands.arguments import whole_number
from services.config import Settings
from services.desk import reader
from services.logs import configure


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run",
        help="run the whole pipeline locally on the Ministry samples, with a live view",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(r)
    r.add_argument(
        "--samples",
        type=Path,
        help="folder of СЭМД to publish (default: the Ministry corpus when "
        "present, else the repository's samples; lab/dev/samples.py)",
    )
    r.set_defaults(func=run, documents=None)

    d = sub.add_parser(
        "demo",
        help="non-interactive run: N generated documents, machine-readable result",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(d)
    d.add_argument("--documents", type=int, default=100, help="how many documents (default 100)")
    d.add_argument("--samples", type=Path, help="folder of СЭМД to generate from (default as for emd run)")
    d.set_defaults(func=run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for every document (default 600)"
    )
    p.add_argument("--scenario", default="ok", help="emulator scenario (emd emulator --list-scenarios)")
    p.add_argument(
        "--until",
        choices=STAGES[1:],
        default="acknowledged",
        help="the stage that counts as done (default acknowledged: the whole pipeline)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".emd-data/run"),
        help="configuration, data and child logs (emptied at start)",
    )
    p.add_argument(
        "--n3-clinics",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="route the first N clinics through the emulator's N3.Health face instead of ИПС, side by "
        "side with the others (default 0; docs/transports.md)",
    )


# ------------------------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> int:
    """Exit 2 with one line for a configuration error (a broker not answering…), 1 when a component stopped."""
    try:
        return _run(args)
    except ConfigurationError as exc:
        print(f"emd {getattr(args, 'command', 'run')}: {exc.message}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level="warning")
    telemetry.start("emd-mis", instrument=())  # this process is the МИС: each document's trace starts here
    interactive = args.documents is None and sys.stdout.isatty()
    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    private_dir(workdir)  # what a run writes is private (0700 directories, 0600 files)

    # every sample the producer accepts, made new (created now); one whose kind is not in force today would be
    # refused at the door (KIND_NOT_VALID_ON_DATE) and is listed with the other samples left out
    samples = args.samples or default_samples()
    documents, refused = sample_documents(samples, args.documents)
    say = print if args.documents is None else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    say(
        f"{len(documents)} documents from {samples} to publish, each with a fresh localUid and created now"
        + (f"; {len(refused)} samples left out (reasons at the end)" if refused else "")
    )

    with ExitStack() as stack:
        if settings.kafka_bootstrap_servers:
            bootstrap, kafka_env = settings.kafka_bootstrap_servers, {}
        else:
            broker = stack.enter_context(
                LocalBroker(port=settings.local_broker_port, log_path=workdir / "broker.log")
            )
            bootstrap, kafka_env = broker.bootstrap_servers, broker.client_env()
        ensure_topics(
            bootstrap,
            partitions=settings.kafka_topic_partitions,
            mis_ids=(DEV_MIS_ID,),
            timeout_s=max(1.0, settings.startup_grace_seconds),
        )
        say(f"broker: {bootstrap}")

        pipeline = LocalPipeline(
            workdir=workdir,
            bootstrap_servers=bootstrap,
            documents=documents,
            kafka_env=kafka_env,
            scenario=args.scenario,
            n3_clinics=args.n3_clinics,
        )
        stack.callback(pipeline.stop)
        pipeline.start()
        say(
            f"emulator: {pipeline.emulator_url} (scenario {args.scenario}); callbacks: {pipeline.callback_url}; "
            f"logs: {pipeline.supervisor.log_dir}"
        )
        if pipeline.n3_organizations:
            say(f"through N3.Health: {', '.join(pipeline.n3_organizations)}; the others through ИПС")
        say("metrics: " + ", ".join(f"{name} {url}" for name, url in pipeline.metrics_urls().items()))
        say(pipeline.console_hint())

        watcher = PipelineWatcher(bootstrap, final_stage=args.until).start()
        stack.callback(watcher.stop)
        if not settings.kafka_bootstrap_servers:  # the broker's topics go with it: keep its dead letters
            stack.callback(_keep_dead_letters, watcher, pipeline.data_dir)
        expected = set(pipeline.publish(say=say))
        view = _LiveView(interactive, pipeline.supervisor)
        try:
            snap = watcher.wait_for(expected, timeout=args.timeout, on_tick=view.tick)
        except KeyboardInterrupt:
            say("\ninterrupted: stopping every component...")
            return 130
        except ComponentStopped as exc:  # a component that cannot work will not come back: say why now
            print(f"emd {getattr(args, 'command', 'run')}: {exc}", file=sys.stderr, flush=True)
            return 1
        duplicated = pipeline.duplicates()
        _summary(snap, refused, workdir, pipeline.emulator_url, say, args.until, pipeline.n3_organizations)
        _where(pipeline.data_dir, watcher, expected, say, kept=not settings.kafka_bootstrap_servers)
        print(
            f"acknowledged={snap.final - snap.dead_lettered} dead_lettered={snap.dead_lettered} "
            f"unfinished={snap.unfinished} lost={snap.unseen} duplicated={duplicated}",
            flush=True,
        )
        return 0 if snap.final == snap.total and duplicated == 0 else 1


class ComponentStopped(Exception):
    """A child exited during the run; the message is the line it left (a configuration error says what to fix)."""

    def __init__(self, name: str, sup: Supervisor) -> None:
        lines = [line for line in sup.tail(name, 40).splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("emd ")]  # how `emd` commands report errors
        super().__init__(f"the {name} stopped: {(said or lines or ['(no output)'])[-1]}")


class _LiveView:
    """A few lines redrawn in place on a terminal; a line every 5 s otherwise."""

    def __init__(self, interactive: bool, sup: Supervisor) -> None:
        self.interactive, self.sup = interactive, sup
        self.lines = 0
        self.last_plain = 0.0

    def tick(self, snap: Snapshot) -> None:
        dead_children = self.sup.dead()
        if dead_children:
            raise ComponentStopped(dead_children[0], self.sup)
        text = [
            "  ".join(f"{s}: {snap.per_stage[s]:>4}" for s in STAGES)
            + f"  dead-lettered: {snap.dead_lettered:>4}",
            f"final {snap.final}/{snap.total}   {snap.rate:.1f} documents/s",
        ]
        for e in snap.errors[-3:]:
            ids = f" MessageID {e.message_ids[-1]}" if e.message_ids else ""
            text.append(f"  ✗ {e.local_uid} [{e.stage}] {e.reason}{ids}: {e.message[:90]}")
        if self.interactive:
            sys.stdout.write(("\x1b[F\x1b[K" * self.lines) + "\n".join(text) + "\n")
            sys.stdout.flush()
            self.lines = len(text)
        elif time.monotonic() - self.last_plain >= 5:
            print(text[0] + "  " + text[1], file=sys.stderr, flush=True)
            self.last_plain = time.monotonic()


def _summary(
    snap: Snapshot, refused, workdir: Path, emulator_url: str, say, until: str, n3_orgs: Sequence[str] = ()
) -> None:
    say("")
    say(
        f"{snap.final - snap.dead_lettered} {until}, {snap.dead_lettered} dead-lettered, "
        f"{snap.unfinished} unfinished (still on their way at the timeout), {snap.unseen} lost (on no topic), "
        f"of {snap.total} published"
    )
    for e in snap.dead_letters:
        say(f"  dead letter: {e.local_uid} at {e.stage}: {e.reason} — {e.message[:120]}")
        if e.message_ids:  # each route's own ids, for that route's support (docs/transports.md)
            kind = "N3 X-Request-IDs" if e.organization in n3_orgs else "ИПС MessageIDs"
            say(f"    {kind}: {', '.join(e.message_ids)}")
    for name, reason in refused:
        say(f"  left out: {name}: {reason[:140]}")
    say(f"logs: {workdir / 'logs'}; emulator control API: {emulator_url}/_emulator/requests")


def _keep_dead_letters(watcher: PipelineWatcher, data_dir: Path) -> None:
    """The dead letters read from the run's own broker, kept where ``emd dlq`` finds them once it is gone."""
    reader.keep(watcher.dead_letter_records(), data_dir / reader.KEPT_FILE)


def _where(data_dir: Path, watcher: PipelineWatcher, uids: set[str], say, *, kept: bool) -> None:
    """The commands that read this run's documents and dead letters afterwards, with one of its localUids each."""
    env = f"EMD_DATA_DIR={shlex.quote(str(data_dir))}"
    dead = sorted(uid for uid in uids if uid in watcher.dead)
    done = sorted(uid for uid in uids if uid not in watcher.dead and watcher.is_final(uid))
    example = (done or dead or sorted(uids) or ["LOCALUID"])[0]
    say(f"this run's data: {data_dir} (kept until the next run)")
    lines = [("one document's history:", f"emd status {example}"), ("its dead letters:", "emd dlq list")]
    if dead:
        lines.append(("one of them in full:", f"emd dlq show {dead[0]}"))
    for label, command in lines:
        say(f"  {label:<24} {env} {command}")
    if not kept:
        say("  (the dead letters are on the cluster KAFKA_BOOTSTRAP_SERVERS names: keep it set)")
