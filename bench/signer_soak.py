"""The signer soaked at its pod limits: N documents through `emd worker signer` inside a cgroup that has the
Deployment's memory limit and CPU quota, its signing processes included (they are its children).

The limits are applied as Kubernetes applies them, with a cgroup made here directly (v2: memory.max and cpu.max;
v1: memory.limit_in_bytes and cpu.cfs_quota_us), because `systemd-run -p MemoryMax= -p CPUQuota=` needs systemd as
PID 1. The signer runs with the manifest's settings (EMD_SIGNER_PROCESSES, EMD_SIGNER_RECYCLE_DOCUMENTS). Every
second the cgroup's memory use and the process tree's total RSS are read; at the end the cgroup's peak, its
OOM kills (a signing process killed is a retried document, not a lost one, but it must not happen at the sizing
we ship) and the documents signed.

    python bench/signer_soak.py [--documents 1000] [--memory-mib 1024] [--cpus 2] [--processes 2]
        [--recycle 2000] [--record docs/benchmarks.md]

Root is needed for the cgroup. Development tooling: not run by `make test`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.broker import LocalBroker, free_port  # noqa: E402
from lab.dev import procstat  # noqa: E402
from lab.dev.bench import _Publisher, commit, machine  # noqa: E402
from lab.dev.local_pipeline import LocalPipeline, sample_documents  # noqa: E402
from lab.dev.samples import default_samples  # noqa: E402
from lab.dev.watch import PipelineWatcher  # noqa: E402
from producer.topology import ensure_topics  # noqa: E402

CGROUP = Path("/sys/fs/cgroup")


class Cgroup:
    """A cgroup of our own with a memory limit and a CPU quota; ``enter_command`` puts a shell into it."""

    def __init__(self, name: str, *, memory_bytes: int, cpus: float) -> None:
        self.v2 = (CGROUP / "cgroup.controllers").exists()
        if self.v2:
            self.dirs = [CGROUP / name]
            self.dirs[0].mkdir()
            (self.dirs[0] / "memory.max").write_text(str(memory_bytes))
            (self.dirs[0] / "memory.swap.max").write_text("0")
            (self.dirs[0] / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
        else:
            memory, cpu = CGROUP / "memory" / name, CGROUP / "cpu" / name
            memory.mkdir()
            cpu.mkdir()
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (cpu / "cpu.cfs_period_us").write_text("100000")
            (cpu / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
            self.dirs = [memory, cpu]

    @property
    def memory_dir(self) -> Path:
        return self.dirs[0]

    def enter_command(self) -> list[str]:
        joins = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ["sh", "-c", f'{joins} && exec "$@"', "sh"]

    def memory_now(self) -> int:
        return int((self.memory_dir / ("memory.current" if self.v2 else "memory.usage_in_bytes")).read_text())

    def memory_peak(self) -> int | None:
        path = self.memory_dir / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(path.read_text()) if path.exists() else None

    def oom_kills(self) -> int:
        if self.v2:
            events = dict(
                line.split() for line in (self.memory_dir / "memory.events").read_text().splitlines()
            )
            return int(events.get("oom_kill", 0))
        control = dict(
            line.split() for line in (self.memory_dir / "memory.oom_control").read_text().splitlines()
        )
        return int(control.get("oom_kill", 0))

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:  # processes still leaving
                    time.sleep(0.1)


def tree_rss_mib(pid: int) -> float:
    """The RSS of ``pid`` and all its descendants, summed (the signer and its signing processes)."""
    total = 0
    for p in [pid, *procstat.descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@dataclass
class Samples:
    cgroup_mib: list[float] = field(default_factory=list)
    tree_mib: list[float] = field(default_factory=list)
    processes: int = 0


def sample(cgroup: Cgroup, pid: int, into: Samples, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        into.cgroup_mib.append(cgroup.memory_now() / 2**20)
        into.tree_mib.append(tree_rss_mib(pid))
        into.processes = max(into.processes, 1 + len(procstat.descendants(pid)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench/signer_soak.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--documents", type=int, default=1000)
    p.add_argument("--memory-mib", type=int, default=1024, help="the pod's limits.memory (default 1024)")
    p.add_argument("--cpus", type=float, default=2.0, help="the pod's limits.cpu (default 2)")
    p.add_argument("--processes", type=int, default=2, help="EMD_SIGNER_PROCESSES (default 2)")
    p.add_argument("--recycle", type=int, default=2000, help="EMD_SIGNER_RECYCLE_DOCUMENTS (default 2000)")
    p.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "signer-soak")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--record", type=Path, help="append the result to this Markdown file")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("signer_soak: the cgroup needs root", file=sys.stderr)
        return 2

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    samples = default_samples()
    templates, _ = sample_documents(samples, None)
    cgroup = Cgroup(f"emd-signer-soak-{os.getpid()}", memory_bytes=args.memory_mib * 2**20, cpus=args.cpus)
    signer = publisher = watcher = None
    stop, seen = threading.Event(), Samples()
    try:
        with LocalBroker(log_path=args.workdir / "broker.log") as broker:
            ensure_topics(broker.bootstrap_servers, partitions=6)
            pipeline = LocalPipeline(
                workdir=args.workdir / "run",
                bootstrap_servers=broker.bootstrap_servers,
                documents=templates,
                kafka_env=broker.client_env(),
                components=(),
            )
            pipeline.write_config()
            env = {
                **os.environ,
                **pipeline.env,
                "EMD_SIGNER_PROCESSES": str(args.processes),
                "EMD_SIGNER_RECYCLE_DOCUMENTS": str(args.recycle),
                "EMD_METRICS_PORT": str(free_port()),
                "EMD_LOG_LEVEL": "warning",
            }
            with open(args.workdir / "signer.log", "wb") as log:
                signer = subprocess.Popen(
                    [*cgroup.enter_command(), sys.executable, "-m", "services.cli", "worker", "signer"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            sampler = threading.Thread(target=sample, args=(cgroup, signer.pid, seen, stop), daemon=True)
            sampler.start()
            watcher = PipelineWatcher(broker.bootstrap_servers, final_stage="signed").start()
            publisher = _Publisher(
                broker.bootstrap_servers,
                pipeline.data_dir,
                samples,
                None,
                args.workdir / "publisher.log",
                broker.client_env(),
            )
            print(
                f"signer in {cgroup.memory_dir} ({args.memory_mib} MiB, {args.cpus:g} CPUs); publishing {args.documents}"
            )
            started = time.monotonic()
            uids = publisher.publish(args.documents)
            snap = watcher.wait_for(set(uids), timeout=args.timeout)
            seconds = time.monotonic() - started
            stop.set()
            sampler.join()
            peak = cgroup.memory_peak()
            result = {
                "documents": args.documents,
                "signed": snap.per_stage.get("signed", 0),
                "dead_lettered": snap.dead_lettered,
                "seconds": seconds,
                "oom_kills": cgroup.oom_kills(),
                "cgroup_peak_mib": (peak / 2**20) if peak else max(seen.cgroup_mib),
                "cgroup_median_mib": statistics.median(seen.cgroup_mib),
                "tree_peak_mib": max(seen.tree_mib),
                "processes": seen.processes,
                "alive": signer.poll() is None,
            }
    finally:
        stop.set()
        if publisher is not None:
            publisher.close()
        if watcher is not None:
            watcher.stop()
        if signer is not None and signer.poll() is None:
            signer.terminate()
            try:
                signer.wait(60)
            except subprocess.TimeoutExpired:
                signer.kill()
                signer.wait()
        cgroup.remove()
    table = (
        f"| documents | signed | dead-lettered | seconds | cgroup memory peak MiB | median MiB | process tree RSS peak MiB "
        f"| processes | OOM kills | limit |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {result['documents']} | {result['signed']} | {result['dead_lettered']} | {result['seconds']:.0f} "
        f"| {result['cgroup_peak_mib']:.0f} | {result['cgroup_median_mib']:.0f} | {result['tree_peak_mib']:.0f} "
        f"| {result['processes']} | {result['oom_kills']} | {args.memory_mib} MiB, {args.cpus:g} CPUs |"
    )
    print(table)
    if args.record:
        command = (
            f"python bench/signer_soak.py --documents {args.documents} --memory-mib {args.memory_mib} "
            f"--cpus {args.cpus:g} --processes {args.processes} --recycle {args.recycle}"
        )
        with open(args.record, "a", encoding="utf-8") as out:
            out.write(
                f"\n### `{command}` — {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC\n\n"
                f"Machine: {machine()}; commit {commit()}; cgroup {'v2' if cgroup.v2 else 'v1'}.\n\n{table}\n"
            )
    ok = (
        result["alive"]
        and result["oom_kills"] == 0
        and result["signed"] + result["dead_lettered"] == args.documents
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
