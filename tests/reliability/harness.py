"""The whole-system run: every component a separate process, killed at random, РЭМД misbehaving, bad input.

``Run(plan).execute()`` starts a local broker, a throwaway PostgreSQL (the lifecycle store), the emulator (with
its state dir, so it keeps its registry across its own restarts), the three workers and the callback service
(``LocalPipeline``), then, all from this thread (a child dies with the thread that started it:
PR_SET_PDEATHSIG), on a schedule drawn from ``plan.seed``:

* publishes ``plan.documents`` valid documents through the МИС library, spread over the chaos window;
* injects every case of ``tests.reliability.bad_inputs`` at its entry point;
* ``kill -9``s ``plan.kills`` components chosen round-robin in a shuffled order among signer, sender, status,
  callbacks and the emulator, at random moments, and restarts each after a short random pause;
* stops PostgreSQL for ``plan.pg_outage_seconds`` mid-run, then starts it again on the same port and data;
* runs the emulator in its ``rejections`` scenario (``faults.rejection_for`` predicts which documents РЭМД
  refuses) with probabilistic fault rules for the synchronous exchange and the callbacks on top (re-posted
  after each emulator restart, since rules live in its memory).

The local broker is not restarted: this Tansu build stores in memory (or S3) only, so a restart would lose
every topic (``docs/reliability.md``). Then it waits until every document is final and hands the evidence to
``tests.reliability.report``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lab.broker import LocalBroker
from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
from lab.dev.local_pipeline import LocalPipeline, as_new_document, sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from lab.dev.watch import PipelineWatcher
from producer.cda import extract
from producer.client import DocumentPublisher
from producer.topology import ensure_topics
from producer.xmlsafe import parse_xml
from services.documents import validation
from services.documents.store import FilesystemStore
from tests import signing_lab
from tests.postgres_server import PostgresServer
from tests.reliability import bad_inputs
from tests.reliability.report import Result, evaluate

#: what the run kills
KILLABLE = ("signer", "sender", "status", "callbacks", "emulator")

#: short timings so every fault resolves within the run (settings, never assertions)
ENV = {
    "EMD_SENDER_RETRY_BASE_SECONDS": "1",
    "EMD_SENDER_RETRY_MAX_SECONDS": "5",
    "EMD_SENDER_MAX_ATTEMPTS": "60",
    "EMD_SENDER_READ_TIMEOUT": "5",
    "EMD_SENDER_CONNECT_TIMEOUT": "2",
    "EMD_SENDER_BREAKER_COOL_DOWN": "2",
    "EMD_SENDER_RATE_LIMIT_DEFER_SECONDS": "2",
    "EMD_ACK_TIMEOUT_SECONDS": "60",
    "EMD_ACK_SCAN_INTERVAL_SECONDS": "5",
    "EMD_SHUTDOWN_GRACE_SECONDS": "5",
    "EMD_RETRY_IN_PLACE_MAX_SECONDS": "120",
    "EMD_STARTUP_GRACE_SECONDS": "120",
    "EMD_LOG_LEVEL": "info",
    "EMD_MAX_DOCUMENT_BYTES": str(bad_inputs.MAX_BYTES),
}

#: РЭМД misbehaving on top of the rejections scenario (docs/emulator.md: fault injection)
FAULT_RULES: list[dict[str, Any]] = [
    {"fault": "latency", "operation": "registerDocument", "probability": 0.05, "delay": 1.0},
    {"fault": "http_error", "operation": "registerDocument", "probability": 0.03, "status": 503},
    {"fault": "timeout", "operation": "registerDocument", "probability": 0.01, "delay": 7.0},
    {"fault": "reset", "operation": "registerDocument", "probability": 0.02},
    {"fault": "rate_limit", "operation": "registerDocument", "probability": 0.02},
    {"fault": "soap_fault", "operation": "registerDocument", "probability": 0.02},
    {
        "fault": ["reset", "http_error", "timeout"],
        "operation": "registerDocument",
        "probability": 0.02,
        "process": True,
        "delay": 7.0,
    },
    {"fault": "callback_lost", "operation": "registerDocument", "probability": 0.02},
    {"fault": "callback_duplicate", "operation": "registerDocument", "probability": 0.05},
    {"fault": "callback_early", "operation": "registerDocument", "probability": 0.03},
    {"fault": "callback_late", "operation": "registerDocument", "probability": 0.05, "delay": 3.0},
    {"fault": "callback_out_of_order", "operation": "registerDocument", "probability": 0.03},
    {
        "fault": ["latency", "http_error", "reset"],
        "operation": "searchRegistryItem",
        "probability": 0.1,
        "delay": 1.0,
    },
]


@dataclass
class Plan:
    """What one run does. ``window``: seconds over which documents, kills and the outage are spread."""

    workdir: Path
    documents: int = 2000
    kills: int = 24
    pg_outage_seconds: float = 30.0
    window: float = 300.0
    seed: int = 11
    timeout: float = 1500.0
    partitions: int = 6


@dataclass
class Evidence:
    """What the run leaves for the report."""

    plan: Plan
    bootstrap: str
    good: list[str]  # localUids of the valid documents published
    cases: list[tuple[bad_inputs.Case, bad_inputs.Outcome | None]]
    kills: list[tuple[float, str]]
    pg_outages: list[tuple[float, float]]
    registry_file: Path
    log_files: list[Path]
    sensitive: dict[str, set[str]]
    finished: bool
    elapsed: float
    notes: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)  # processes of the run still alive after it stopped


def _valid(data: bytes) -> bool:
    report = validation.validate_semd(data, extract(parse_xml(data)).kind_code)
    return not report.xsd_errors and not report.schematron_failures


def valid_documents(count: int) -> list[tuple[str, bytes]]:
    """``count`` fresh documents of the repository samples a clinic registers today that pass their XSD and
    Schematron (the run blocks on Schematron, so a failing one is bad input, not a valid document)."""
    base, _ = sample_documents(REPOSITORY_SAMPLES, None)
    pool = [(name, data) for name, data in base if _valid(data)]
    return [(pool[i % len(pool)][0], as_new_document(pool[i % len(pool)][1])) for i in range(count)]


def name_spellings(family: str, given: str, patronymic: str | None = None) -> set[str]:
    """Every way a log could spell one person's name: Фамилия Имя [Отчество], in capitals, given name first,
    and with initials (Фамилия И., Фамилия И.О., Фамилия И. О., И.О. Фамилия)."""
    f, g = family.strip(), given.strip()
    initials = [f"{g[0]}."] + (
        [f"{g[0]}.{patronymic[0]}.", f"{g[0]}. {patronymic[0]}."] if patronymic else []
    )
    out = {f"{f} {g}", f"{g} {f}", f"{f} {g}".upper(), f"{g} {f}".upper()}
    out |= {f"{f} {i}" for i in initials} | {f"{i} {f}" for i in initials[1:]}
    if patronymic:
        out |= {f"{f} {g} {patronymic}", f"{g} {patronymic} {f}", f"{f} {g} {patronymic}".upper()}
    return out


def sensitive_values(*secret_dirs: Path) -> dict[str, set[str]]:
    """The patients' and doctors' СНИЛС, names and birth dates of every sample the run draws from, in the
    spellings a log could show them, and the run's own secrets (the password and token files in
    ``secret_dirs``): what no log line may contain."""
    out: dict[str, set[str]] = {
        "СНИЛС": set(),
        "full name": set(),
        "name spelling": set(),
        "birth date": set(),
        "secret": set(),
    }
    for path in REPOSITORY_SAMPLES.glob("*.xml"):
        meta = extract(parse_xml(path.read_bytes()))
        for person in [meta.patient, *meta.signers]:
            if person is None:
                continue
            s = "".join(ch for ch in (person.snils or "") if ch.isdigit())
            if len(s) == 11:
                out["СНИЛС"] |= {s, f"{s[:3]}-{s[3:6]}-{s[6:9]} {s[9:]}"}
            if person.family and person.given:
                out["full name"].add(f"{person.family} {person.given}")
                out["name spelling"] |= name_spellings(person.family, person.given, person.patronymic)
        if meta.patient is not None and meta.patient.birth_date:
            b = meta.patient.birth_date
            out["birth date"] |= {b.isoformat(), b.strftime("%Y%m%d"), b.strftime("%d.%m.%Y")}
    out["name spelling"] -= out["full name"]
    for directory in secret_dirs:
        for path in directory.glob("*"):
            if path.is_file() and path.suffix in (".pass", ".password", ".token"):
                value = path.read_text(encoding="utf-8", errors="replace").strip()
                if len(value) >= 6:  # a value this long is no ordinary word of a log line
                    out["secret"].add(value)
    return out


def _with_console_password(values: dict[str, set[str]], password: str) -> dict[str, set[str]]:
    """The console's development password is a secret of the run too (printed to the terminal, never logged)."""
    if password:
        values["secret"].add(password)
    return values


class Run:
    def __init__(self, plan: Plan, *, say=print) -> None:
        self.plan = plan
        self.say = say
        self.rng = random.Random(plan.seed)
        self.workdir = plan.workdir.resolve()
        self.t0 = time.monotonic()
        self.kills: list[tuple[float, str]] = []
        self.pg_outages: list[tuple[float, float]] = []
        self.notes: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- the run ------------------------------------------------------------------------------
    def execute(self) -> Result:
        plan = self.plan
        self.workdir.mkdir(parents=True, exist_ok=True)
        good_docs = valid_documents(plan.documents)
        self.say(f"{len(good_docs)} valid documents; PostgreSQL, broker, pipeline starting in {self.workdir}")
        pg = PostgresServer().start()
        try:
            with LocalBroker(log_path=self.workdir / "broker.log") as broker:
                ensure_topics(broker.bootstrap_servers, partitions=plan.partitions, mis_ids=(DEV_MIS_ID,))
                evidence = self._with_broker(broker, pg, good_docs)
                pg_log = Path(pg.root or self.workdir) / "server.log"
                if pg_log.exists():
                    shutil.copy(pg_log, self.workdir / "postgres.log")
                return evaluate(evidence)  # while the broker still holds the topics
        finally:
            pg.stop()

    def _with_broker(self, broker: LocalBroker, pg: PostgresServer, good_docs) -> Evidence:
        plan = self.plan
        lab_dir = self.workdir / "lab"
        lab_dir.mkdir()
        built = signing_lab.build_lab(lab_dir)
        lab_config = json.loads(built.config_path.read_text(encoding="utf-8"))
        defect_oids = {oid for oid, _ in signing_lab.DEFECT_ORGS.values()} | {signing_lab.MIS_OID}

        def configure(config: dict[str, Any]) -> None:
            config["schematron"] = "block"
            config["mchd_revoked"] = lab_config.get("mchd_revoked", [])
            remd = config["organizations"][0]["remd"]
            for org in lab_config["organizations"]:
                if org["oid"] in defect_oids:
                    config["organizations"].append({**_absolute(org, lab_dir), "remd": dict(remd)})
                    config["mis"][0]["organizations"].append(org["oid"])  # the development МИС's grant

        env = {**ENV, "EMD_LIFECYCLE_STORE": pg.url}
        # the configuration covers the valid documents' clinics and the Schematron-invalid sample's
        participants = [
            *good_docs,
            ("CertOnPayForMedServ.xml", (REPOSITORY_SAMPLES / "CertOnPayForMedServ.xml").read_bytes()),
        ]
        pipeline = LocalPipeline(
            workdir=self.workdir / "run",
            bootstrap_servers=broker.bootstrap_servers,
            documents=participants,
            kafka_env=broker.client_env(),
            scenario="rejections",
            emulator_args=[
                "--trusted-ca",
                str(self.workdir / "lab" / "lab-ca.pem"),
                "--trusted-ca",
                str(self.workdir / "run" / "config" / "ca.pem"),
            ],
            env=env,
            configure=configure,
        )
        watcher = PipelineWatcher(broker.bootstrap_servers).start()
        store = FilesystemStore(pipeline.data_dir / "documents")
        try:
            pipeline.start()
            self._wait_healthy(pipeline)
            pipeline.add_rules(FAULT_RULES)
            with DocumentPublisher(
                broker.bootstrap_servers,
                mis_id=DEV_MIS_ID,
                store=store,
                system_id=DEV_SYSTEM_IDS[0],
                max_bytes=bad_inputs.MAX_BYTES,
            ) as publisher:
                ctx = bad_inputs.Context(
                    bootstrap=broker.bootstrap_servers,
                    publisher=publisher,
                    store_root=store.root,
                    callback_url=pipeline.callback_url,
                    emulator_key=bad_inputs.identity(pipeline.config_dir)[0],
                    emulator_certificate=bad_inputs.identity(pipeline.config_dir)[1],
                    lab=built,
                )
                good, cases = self._chaos(pipeline, pg, publisher, ctx, good_docs)
            expected = set(good) | {c.key for c, o in cases if o is None}
            finished = self._settle(pipeline, watcher, expected)
        finally:
            watcher.stop()
            pipeline.stop()
        left = left_behind(pipeline.data_dir)
        logs = sorted((self.workdir / "run" / "logs").glob("*.log")) + [
            self.workdir / name for name in ("broker.log", "postgres.log", "harness.log")
        ]
        return Evidence(
            plan=plan,
            bootstrap=broker.bootstrap_servers,
            good=good,
            cases=cases,
            kills=self.kills,
            pg_outages=self.pg_outages,
            registry_file=self.workdir / "run" / "emulator-state" / "registry.jsonl",
            log_files=logs,
            sensitive=_with_console_password(
                sensitive_values(lab_dir, pipeline.config_dir), pipeline.console_password
            ),
            finished=finished,
            elapsed=self.now(),
            notes=self.notes,
            left_behind=left,
        )

    def _chaos(
        self,
        pipeline: LocalPipeline,
        pg: PostgresServer,
        publisher: DocumentPublisher,
        ctx: bad_inputs.Context,
        good_docs,
    ) -> tuple[list[str], list]:
        plan = self.plan
        events = self._schedule(self.now(), good_docs)
        good: list[str] = []
        cases: list = []
        restarts: list[tuple[float, str]] = []
        pg_up_at: float | None = None
        last_say = 0.0
        while events or restarts or pg_up_at is not None:
            now = self.now()
            for due in [r for r in restarts if r[0] <= now]:
                restarts.remove(due)
                self._restart(pipeline, due[1])
            self._revive(pipeline, pending={name for _, name in restarts})
            if pg_up_at is not None and pg_up_at <= now:
                self._pg_up(pg)
                self.pg_outages[-1] = (self.pg_outages[-1][0], self.now())
                pg_up_at = None
            while events and events[0][0] <= now:
                _, action, arg = events.pop(0)
                if action == "publish":
                    for _, data in arg:
                        good.append(publisher.publish(data).local_uid)
                elif action == "kill":
                    self._kill(pipeline, arg, now=now, events=events, restarts=restarts)
                elif action == "pg_down":
                    self._pg_down(pg)
                    self.pg_outages.append((now, now))
                    pg_up_at = now + plan.pg_outage_seconds
                elif action == "bad_inputs":  # one case per turn: the schedule keeps its moments
                    for i, (case, inject) in enumerate(bad_inputs.corpus()):
                        events.append((now + 0.5 * i, "bad_input", (case, inject)))
                    events.sort(key=lambda e: e[0])
                elif action == "bad_input":
                    case, inject = arg
                    cases.append((case, inject(ctx)))
            if now - last_say >= 10:
                last_say = now
                self.say(
                    f"[{now:6.0f}s] published {len(good)}/{len(good_docs)}, kills {len(self.kills)}, "
                    f"down: {', '.join(pipeline.supervisor.dead()) or '-'}"
                )
            time.sleep(0.1)
        return good, cases

    def _kill(
        self,
        pipeline: LocalPipeline,
        name: str,
        *,
        now: float,
        events: list[tuple[float, str, Any]],
        restarts: list[tuple[float, str]],
    ) -> None:
        """kill -9 of one component, its restart scheduled; one already down is killed a little later."""
        if not pipeline.supervisor.children[name].alive:
            events.append((now + 2.0, "kill", name))
            events.sort(key=lambda e: e[0])
            return
        pipeline.kill(name)
        self.kills.append((now, name))
        restarts.append((now + self.rng.uniform(0.5, 3.0), name))

    def _schedule(self, start: float, good_docs) -> list[tuple[float, str, Any]]:
        """The chaos window's events in time order, (time, action, argument): the kills at random moments, the
        PostgreSQL outage, the bad inputs, and the good documents published in batches over the window."""
        plan, rng, window = self.plan, self.rng, self.plan.window
        order = [KILLABLE[i % len(KILLABLE)] for i in range(plan.kills)]
        rng.shuffle(order)
        events: list[tuple[float, str, Any]] = [
            (start + rng.uniform(0.05, 0.95) * window, "kill", c) for c in order
        ]
        if plan.pg_outage_seconds > 0:
            events.append((start + rng.uniform(0.3, 0.5) * window, "pg_down", None))
        events.append((start + 0.1 * window, "bad_inputs", None))
        batches = max(1, int(window))
        per = -(-len(good_docs) // batches)
        for i in range(batches):
            events.append((start + i * window * 0.9 / batches, "publish", good_docs[i * per : (i + 1) * per]))
        events.sort(key=lambda e: e[0])
        return events

    def _revive(self, pipeline: LocalPipeline, *, pending: set[str] = frozenset()) -> None:
        """A component that exited although nobody killed it is a defect: noted (the report counts it), restarted."""
        for name in pipeline.supervisor.dead():
            if name not in pending:
                tail = " | ".join(pipeline.supervisor.tail(name, 3).splitlines())
                self.notes.append(f"{name} exited on its own at {self.now():.0f} s: {tail[-400:]}")
                self._restart(pipeline, name)

    def _restart(self, pipeline: LocalPipeline, name: str) -> None:
        pipeline.restart(name)
        if name == "emulator":
            self._wait_healthy(pipeline, only="emulator")
            pipeline.add_rules(FAULT_RULES)  # the rules lived in the killed process's memory

    def _wait_healthy(
        self, pipeline: LocalPipeline, *, only: str | None = None, timeout: float = 120
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pipeline.emulator("health")
                return
            except (httpx.HTTPError, ValueError):
                if "emulator" in pipeline.supervisor.dead():
                    raise SystemExit(
                        f"the emulator exited:\n{pipeline.supervisor.tail('emulator')}"
                    ) from None
                time.sleep(0.2)
        raise SystemExit("the emulator did not answer its health check")

    def _pg_down(self, pg: PostgresServer) -> None:
        self.say(f"[{self.now():6.0f}s] PostgreSQL down for {self.plan.pg_outage_seconds:.0f} s")
        pg.pause()

    def _pg_up(self, pg: PostgresServer) -> None:
        pg.resume()
        self.say(f"[{self.now():6.0f}s] PostgreSQL back")

    def _settle(self, pipeline: LocalPipeline, watcher: PipelineWatcher, expected: set[str]) -> bool:
        """Wait until every document is final; anything that died on its own is noted and restarted."""
        deadline = time.monotonic() + self.plan.timeout
        last_say = 0.0
        while time.monotonic() < deadline:
            self._revive(pipeline)
            snap = watcher.snapshot(expected)
            if snap.final >= len(expected):
                time.sleep(5)  # late and duplicate callbacks still in flight
                return True
            if time.monotonic() - last_say >= 10:
                last_say = time.monotonic()
                self.say(f"[{self.now():6.0f}s] final {snap.final}/{len(expected)}")
            time.sleep(0.5)
        return False


def left_behind(data_dir: Path, *, grace: float = 10.0) -> list[str]:
    """Processes still running with this run's EMD_DATA_DIR once it has stopped (``kill -9`` of a parent must take
    its children along: a signer's signing processes…): described, then killed so nothing outlives the run."""
    marker = f"EMD_DATA_DIR={data_dir}\0".encode()
    deadline = time.monotonic() + grace
    while True:
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes():
                    found[int(proc.name)] = (
                        (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
                    )
            except OSError:
                continue
        if not found or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return [f"pid {pid}: {cmd}" for pid, cmd in sorted(found.items())]


_FILE_FIELDS = ("key", "certificate", "password_file", "xml", "signature")


def _absolute(value: Any, base: Path) -> Any:
    """A copy of an organisations-file entry whose file names point into ``base``."""
    if isinstance(value, dict):
        return {
            k: (str(base / v) if k in _FILE_FIELDS and isinstance(v, str) and v else _absolute(v, base))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    return value
