"""``emd bench``: the whole pipeline on this machine, measured: throughput, latency, CPU and memory per process.

A run (:func:`run`) starts a broker of its own, the emulator, the callback service and every worker as child
processes (``lab.dev.local_pipeline``, real signatures both ways), and a МИС child that publishes through
the producer library (``lab.dev.publisher``). Every document is followed on the topics
(``lab.dev.watch``). In order:

1. warm-up: one document of each sample (consumer groups joined, every kind's Schematron compiled);
2. latency: ``latency_documents`` at an offered ``rate`` per second; created → acknowledged from the records'
   own timestamps, p50/p95/p99;
3. throughput: the rest of the documents published as fast as the МИС child goes; documents per second over
   the steady state (from the 10th to the 90th percentile of acknowledgements);
4. CPU milliseconds per document of every process tree, from ``/proc`` (``lab.dev.procstat``) over 2–3,
   and each process's peak resident set.

With ``backlog`` the documents are all published before the workers start, and the drain is reported
instead: seconds and worker memory at 1k, 10k, 100k acknowledged (:func:`run_backlog`).

CPU per document does not depend on what else the machine runs; throughput and latency do, so the report says
the load average before and after.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.broker import LocalBroker
from lab.dev import procstat
from lab.dev.config import DEV_MIS_ID
from lab.dev.local_pipeline import LocalPipeline, sample_documents
from lab.dev.samples import REPO
from lab.dev.watch import PipelineWatcher
from producer.topology import ensure_topics
from services.config import Settings

__all__ = ["BenchOptions", "E2EResult", "run", "run_backlog", "summary_line", "machine", "PIPELINE"]

#: the pipeline's own processes: "pipeline CPU per document" is their sum
PIPELINE = ("signer", "sender", "status", "callbacks")
#: backlog checkpoints: acknowledged documents
CHECKPOINTS = (1_000, 10_000, 100_000)

Say = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What a run does. ``documents``: in all, warm-up excluded; ``latency_documents`` of them at ``rate``
    per second, the rest as fast as the МИС goes. ``env``: extra environment for every pipeline child."""

    documents: int = 3000
    latency_documents: int | None = None
    rate: float = 20.0
    scenario: str = "ok"
    samples: Path
    workdir: Path
    timeout: float = 1800.0
    partitions: int = 6
    inline_limit: int | None = None
    #: warm-up documents; None: one of each sample (every kind's Schematron compiled before measuring)
    warm_up: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def latency_count(self) -> int:
        if self.latency_documents is not None:
            return min(self.latency_documents, self.documents)
        return min(600, self.documents // 5)


@dataclass
class ProcessFigures:
    name: str
    cpu_ms_per_doc: float
    peak_rss_mb: float
    processes: int


@dataclass
class E2EResult:
    documents: int
    acknowledged: int
    dead_lettered: int
    lost: int
    docs_per_s: float
    #: how fast the МИС child published the throughput phase: when e2e is close to it, the МИС was the limit
    publish_per_s: float
    latency_s: dict[str, float]  #: p50, p95, p99 (created → acknowledged, at the offered rate)
    offered_rate: float
    processes: list[ProcessFigures]
    producer_cpu_ms_per_doc: float
    seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def cpu(self, *names: str) -> float:
        return sum(p.cpu_ms_per_doc for p in self.processes if p.name in names)

    @property
    def max_worker_rss_mb(self) -> float:
        return max((p.peak_rss_mb for p in self.processes if p.name in PIPELINE), default=0.0)


# ------------------------------------------------------------------------------------------- plumbing
class _Publisher:
    """The МИС child (``lab.dev.publisher``): one command in, one answer out."""

    def __init__(
        self,
        bootstrap: str,
        data_dir: Path,
        samples: Path,
        inline_limit: int | None,
        log: Path,
        env: dict[str, str],
    ) -> None:
        from lab.dev.supervisor import child_environment
        from services.processes import die_with_parent

        argv = [sys.executable, "-m", "lab.dev.publisher", bootstrap, str(data_dir), str(samples)]
        if inline_limit is not None:
            argv += ["--inline-limit", str(inline_limit)]
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_environment(env),
                preexec_fn=die_with_parent,
                text=True,
            )
        self.cpu_seconds = 0.0
        self.last_seconds = 0.0

    def publish(self, count: int, rate: float = 0.0) -> list[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"count": count, "rate": rate}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"emd bench: the publisher stopped (exit {self.process.wait()}); see its log")
        answer = json.loads(line)
        self.cpu_seconds += answer["cpu_seconds"]
        self.last_seconds = answer["seconds"]
        return answer["uids"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.communicate("\n", timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _pids(pipeline: LocalPipeline, broker: LocalBroker) -> dict[str, int]:
    pids = {name: c.process.pid for name, c in pipeline.supervisor.children.items() if c.process is not None}
    if broker.process is not None:
        pids["broker"] = broker.process.pid
    return pids


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        u = procstat.usage(pid)
        out[name] = u.cpu_seconds if u is not None else 0.0
    return out


def _wait(
    watcher: PipelineWatcher, uids: list[str], timeout: float, say: Say, what: str, pipeline: LocalPipeline
) -> None:
    last = time.monotonic()

    def tick(snap: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 10:
            last = now
            say(f"  {what}: {snap.final}/{snap.total} final, {snap.rate:.1f} documents/s")
            dead = pipeline.supervisor.dead()
            if dead:
                raise SystemExit(
                    f"emd bench: {', '.join(dead)} stopped:\n{pipeline.supervisor.tail(dead[0])}"
                )

    snap = watcher.wait_for(set(uids), timeout=timeout, on_tick=tick, tick=0.5)
    if snap.final < len(uids):
        raise SystemExit(
            f"emd bench: {len(uids) - snap.final} of {len(uids)} documents not final after "
            f"{timeout:.0f} s ({what})"
        )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def steady_rate(times_ms: list[int]) -> float:
    """Documents per second between the 10th and the 90th percentile of completion times (ramp-up and tail cut)."""
    if len(times_ms) < 2:
        return 0.0
    ordered = sorted(times_ms)
    lo, hi = int(len(ordered) * 0.1), max(int(len(ordered) * 0.9) - 1, 1)
    if ordered[hi] <= ordered[lo]:
        lo, hi = 0, len(ordered) - 1
    span = (ordered[hi] - ordered[lo]) / 1000
    return (hi - lo) / span if span > 0 else 0.0


def _pipeline(
    options: BenchOptions, broker: LocalBroker, templates: list[tuple[str, bytes]]
) -> LocalPipeline:
    return LocalPipeline(
        workdir=options.workdir / "run",
        bootstrap_servers=broker.bootstrap_servers,
        documents=templates,
        kafka_env=broker.client_env(),
        scenario=options.scenario,
        env={"EMD_LOG_LEVEL": "warning", **options.env},
    )


# ------------------------------------------------------------------------------------------- the runs
def run(options: BenchOptions, *, say: Say = print) -> E2EResult:
    """Warm-up, the latency phase, the throughput phase; figures per process (module docstring)."""
    templates, _ = sample_documents(options.samples, None)
    latency_n = options.latency_count
    burst_n = options.documents - latency_n
    with LocalBroker(log_path=_fresh(options.workdir) / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=options.partitions, mis_ids=(DEV_MIS_ID,))
        pipeline = _pipeline(options, broker, templates)
        watcher = None
        publisher = None
        try:
            pipeline.start()
            watcher = PipelineWatcher(broker.bootstrap_servers).start()
            publisher = _Publisher(
                broker.bootstrap_servers,
                pipeline.data_dir,
                options.samples,
                options.inline_limit,
                options.workdir / "publisher.log",
                broker.client_env(),
            )
            warm = len(templates) if options.warm_up is None else options.warm_up
            say(
                f"warm-up: {warm} documents"
                + (", one of each sample kind" if options.warm_up is None else "")
            )
            _wait(watcher, publisher.publish(warm), options.timeout, say, "warm-up", pipeline)
            pids = _pids(pipeline, broker)
            load_before = os.getloadavg()
            cpu_before, publisher.cpu_seconds, started = _cpu(pids), 0.0, time.monotonic()
            latency_uids: list[str] = []
            if latency_n:
                say(f"latency: {latency_n} documents offered at {options.rate:g}/s")
                latency_uids = publisher.publish(latency_n, options.rate)
                _wait(watcher, latency_uids, options.timeout, say, "latency", pipeline)
            burst_uids: list[str] = []
            publish_per_s = 0.0
            if burst_n:
                say(f"throughput: {burst_n} documents published as fast as the МИС goes")
                burst_uids = publisher.publish(burst_n)
                publish_per_s = burst_n / publisher.last_seconds if publisher.last_seconds else 0.0
                _wait(watcher, burst_uids, options.timeout, say, "throughput", pipeline)
            time.sleep(1.0)  # the status messages after the last acknowledgement
            seconds = time.monotonic() - started
            cpu_after = _cpu(pids)
            load_after = os.getloadavg()
            peaks = {name: procstat.usage(pid) for name, pid in pids.items()}
            snap = watcher.snapshot(set(latency_uids) | set(burst_uids))
            latencies = [
                (watcher.final_ms[u] - watcher.created_ms[u]) / 1000
                for u in latency_uids
                if u in watcher.final_ms and u in watcher.created_ms
            ]
            done = [watcher.final_ms[u] for u in (burst_uids or latency_uids) if u in watcher.final_ms]
        finally:
            if publisher is not None:
                publisher.close()
            if watcher is not None:
                watcher.stop()
            pipeline.stop()
    n = max(options.documents, 1)
    processes = [
        ProcessFigures(
            name=name,
            cpu_ms_per_doc=(cpu_after[name] - cpu_before[name]) * 1000 / n,
            peak_rss_mb=peak.peak_rss_mb if peak else 0.0,
            processes=peak.processes if peak else 0,
        )
        for name, peak in ((name, peaks[name]) for name in pids)
    ]
    return E2EResult(
        documents=options.documents,
        acknowledged=snap.final - snap.dead_lettered,
        dead_lettered=snap.dead_lettered,
        lost=snap.total - snap.final,
        docs_per_s=steady_rate(done),
        publish_per_s=publish_per_s,
        latency_s={f"p{q}": percentile(latencies, q / 100) for q in (50, 95, 99)},
        offered_rate=options.rate,
        processes=processes,
        producer_cpu_ms_per_doc=publisher.cpu_seconds * 1000 / n if publisher else 0.0,
        seconds=seconds,
        load_before=load_before,
        load_after=load_after,
    )


@dataclass
class BacklogResult:
    documents: int
    publish_seconds: float
    producer_cpu_ms_per_doc: float
    checkpoints: list[
        tuple[int, float, dict[str, float]]
    ]  #: (acknowledged, seconds since the workers started, RSS MB)
    peak_rss_mb: dict[str, float]
    docs_per_s: float


def run_backlog(options: BenchOptions, backlog: int, *, say: Say = print) -> BacklogResult:
    """Publish ``backlog`` documents with no worker running, then start them and follow the drain."""
    templates, _ = sample_documents(options.samples, None)
    marks = sorted({c for c in CHECKPOINTS if c < backlog} | {backlog})
    with LocalBroker(log_path=_fresh(options.workdir) / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=options.partitions, mis_ids=(DEV_MIS_ID,))
        pipeline = _pipeline(options, broker, templates)
        publisher = _Publisher(
            broker.bootstrap_servers,
            pipeline.data_dir,
            options.samples,
            options.inline_limit,
            options.workdir / "publisher.log",
            broker.client_env(),
        )
        watcher = PipelineWatcher(broker.bootstrap_servers).start()
        try:
            say(f"backlog: publishing {backlog} documents with no worker running")
            started = time.monotonic()
            uids = []
            for start in range(0, backlog, 1000):
                uids += publisher.publish(min(1000, backlog - start))
                say(f"  published {len(uids)}/{backlog}")
            publish_seconds = time.monotonic() - started
            pipeline.start()
            started = time.monotonic()
            pids = {n: p for n, p in _pids(pipeline, broker).items() if n in PIPELINE}
            expected, checkpoints, deadline = set(uids), [], started + options.timeout
            while marks and time.monotonic() < deadline:
                snap = watcher.snapshot(expected)
                rss = {n: (u.rss_mb if (u := procstat.usage(p)) else 0.0) for n, p in pids.items()}
                while marks and snap.final >= marks[0]:
                    checkpoints.append((marks.pop(0), time.monotonic() - started, rss))
                    say(
                        f"  {checkpoints[-1][0]} final after {checkpoints[-1][1]:.0f} s; RSS MB "
                        + ", ".join(f"{n} {v:.0f}" for n, v in rss.items())
                    )
                if pipeline.supervisor.dead():
                    raise SystemExit(f"emd bench: {', '.join(pipeline.supervisor.dead())} stopped")
                time.sleep(0.5)
            peaks = {n: (u.peak_rss_mb if (u := procstat.usage(p)) else 0.0) for n, p in pids.items()}
            drained = time.monotonic() - started
        finally:
            publisher.close()
            watcher.stop()
            pipeline.stop()
    if marks:
        raise SystemExit(f"emd bench: the backlog was not drained within {options.timeout:.0f} s")
    return BacklogResult(
        documents=backlog,
        publish_seconds=publish_seconds,
        producer_cpu_ms_per_doc=publisher.cpu_seconds * 1000 / max(backlog, 1),
        checkpoints=checkpoints,
        peak_rss_mb=peaks,
        docs_per_s=backlog / drained,
    )


def _fresh(workdir: Path) -> Path:
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


# ------------------------------------------------------------------------------------------- reporting
def summary_line(result: E2EResult) -> str:
    """The machine-readable last line."""
    return (
        f"e2e_docs_per_s={result.docs_per_s:.1f} pipeline_cpu_ms_per_doc={result.cpu(*PIPELINE):.1f} "
        f"emulator_cpu_ms_per_doc={result.cpu('emulator'):.1f} "
        f"producer_cpu_ms_per_doc={result.producer_cpu_ms_per_doc:.1f} p99_s={result.latency_s['p99']:.2f} "
        f"max_worker_rss_mb={result.max_worker_rss_mb:.0f} acknowledged={result.acknowledged} "
        f"documents={result.documents}"
    )


def e2e_table(result: E2EResult) -> str:
    rows = ["| process | CPU ms per document | peak RSS MB | processes |", "|---|---|---|---|"]
    order = [*PIPELINE, "emulator", "broker"]
    for p in sorted(result.processes, key=lambda p: order.index(p.name) if p.name in order else 99):
        rows.append(f"| {p.name} | {p.cpu_ms_per_doc:.1f} | {p.peak_rss_mb:.0f} | {p.processes} |")
    rows.append(
        f"| **pipeline** ({' + '.join(PIPELINE)}) | **{result.cpu(*PIPELINE):.1f}** | "
        f"{result.max_worker_rss_mb:.0f} (largest) | |"
    )
    rows.append(
        f"| МИС producer library (publish: checks + produce) | {result.producer_cpu_ms_per_doc:.1f} | | 1 |"
    )
    lat = result.latency_s
    return "\n".join(rows) + (
        f"\n\n{result.acknowledged} of {result.documents} acknowledged, {result.dead_lettered} dead-lettered, "
        f"{result.lost} lost, in {result.seconds:.0f} s. End to end **{result.docs_per_s:.1f} documents/s** over the "
        f"steady state{_publish_note(result)}; created → acknowledged at an offered {result.offered_rate:g}/s: p50 {lat['p50']:.2f} s, "
        f"p95 {lat['p95']:.2f} s, p99 **{lat['p99']:.2f} s**. Load average before {_load(result.load_before)}, "
        f"after {_load(result.load_after)}."
    )


def backlog_table(result: BacklogResult) -> str:
    names = list(result.peak_rss_mb)
    rows = [
        "| acknowledged | seconds since the workers started | "
        + " | ".join(f"{n} RSS MB" for n in names)
        + " |",
        "|---" * (2 + len(names)) + "|",
    ]
    for count, seconds, rss in result.checkpoints:
        rows.append(
            f"| {count} | {seconds:.0f} | " + " | ".join(f"{rss.get(n, 0):.0f}" for n in names) + " |"
        )
    rows.append("| peak (VmHWM) | | " + " | ".join(f"{result.peak_rss_mb[n]:.0f}" for n in names) + " |")
    return "\n".join(rows) + (
        f"\n\nPublished in {result.publish_seconds:.0f} s "
        f"({result.producer_cpu_ms_per_doc:.1f} ms CPU each); drained at "
        f"{result.docs_per_s:.1f} documents/s."
    )


def _publish_note(result: E2EResult) -> str:
    """How fast the МИС published the throughput phase, and whether that was the limit (none without the phase)."""
    if result.publish_per_s <= 0:
        return " (the offered rate: no throughput phase)"
    limit = ": the МИС was the limit" if result.docs_per_s >= 0.9 * result.publish_per_s else ""
    return f" (the МИС published them at {result.publish_per_s:.1f}/s{limit})"


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in load)


def machine() -> str:
    """One line: CPU model, CPUs usable, cgroup quota, memory, Python, OpenSSL, the commit."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    quota = ""
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = (
            f", cgroup quota {int(limit) / int(period):g} CPU" if limit != "max" else ", no cgroup CPU quota"
        )
    except (OSError, ValueError):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {len(os.sched_getaffinity(0))} CPUs{quota}, {mem_gb:.0f} GB; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; {ssl.OPENSSL_VERSION}; commit {commit()}"
    )


def commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" (with uncommitted changes)" if dirty else "")


def record(path: Path, *, command: str, sections: list[tuple[str, str]]) -> None:
    """Append one run to ``path`` (docs/benchmarks.md): when, the machine and commit, the command, the tables."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    client = Settings.from_env().kafka_client  # EMD_KAFKA_CLIENT, which every pipeline child inherits
    text = [f"\n### `{command}` — {when}\n", f"Machine: {machine()}; the workers' Kafka client: {client}.\n"]
    for title, body in sections:
        text.append(f"{title}\n\n{body}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(text))
