"""A real Prometheus (Debian's ``prometheus``) on loopback for a test: started, scraping, queried, stopped.

The test gives it targets and rule files; it scrapes every second into a throwaway data directory and
answers the HTTP API (``query``), so dashboards' queries and alert expressions are evaluated by the real
engine. ``screenshot`` photographs its own graph page with ``chromium-headless-shell``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import yaml

from lab.broker import free_port
from services.processes import die_with_parent


class PrometheusUnavailable(RuntimeError):
    """The ``prometheus`` binary is missing (``make test`` installs it) or did not become ready."""


class PrometheusServer:
    """:param targets: ``job -> host:port`` scraped every second. :param rule_files: loaded and evaluated."""

    def __init__(self, workdir: Path, *, targets: dict[str, str], rule_files: tuple[Path, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets, self.rule_files = targets, rule_files
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusUnavailable("no prometheus binary: `make test` installs Debian's prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in self.targets.items()
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusUnavailable(
                    f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusUnavailable(f"prometheus not ready within {timeout:.0f}s")

    def wait_for_targets(self, timeout: float = 60.0) -> None:
        """Until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            if len(active) == len(self.targets) and all(t["health"] == "up" for t in active):
                return
            time.sleep(0.5)
        raise AssertionError(
            f"targets not all up: {[(t['labels']['job'], t['health'], t['lastError']) for t in active]}"
        )

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query now: ``{"status": ..., "data": ...}`` (or ``error``)."""
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30).json()

    def value(self, expr: str) -> float:
        """The single value of an instant query (fails unless there is exactly one series)."""
        (series,) = self.query(expr)["data"]["result"]
        return float(series["value"][1])

    def rules(self) -> list[dict[str, Any]]:
        return [
            r
            for g in httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
            for r in g["rules"]
        ]

    def screenshot(self, expr: str, path: Path, *, range_input: str = "5m") -> Path:
        """A PNG of Prometheus's graph page for ``expr``, taken by ``chromium-headless-shell``."""
        query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_input})
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "chromium-headless-shell",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                f"--screenshot={path}",
                f"{self.url}/classic/graph?{query}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return path

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
