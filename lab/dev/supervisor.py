"""Child processes of `emd run` / `emd demo`: started together, stopped together, never left behind.

Each child gets ``PR_SET_PDEATHSIG = SIGKILL`` (it dies if we die, even by ``kill -9``) and its own process
group; ``stop()`` sends SIGTERM to every child (workers drain and commit), waits, then SIGKILLs stragglers.
Each child's output goes to ``<log_dir>/<name>.log`` so the terminal stays readable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from producer.files import private_dir
from services.logs import get_logger
from services.processes import die_with_parent

log = get_logger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment a child process of the dev tooling gets: ours, with ``extra`` on top."""
    return {**os.environ, **extra}


class Supervisor:
    """Start named commands, watch them, stop them all.

    :param log_dir: where each child's stdout/stderr is written.
    :param base_env: environment every child gets (on top of ours).
    """

    def __init__(self, *, log_dir: Path, base_env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        private_dir(self.log_dir)  # logs are masked, still nobody else's business: 0700, files 0600
        self.base_env = child_environment(base_env or {})
        self.children: dict[str, Child] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Run ``emd ARGS`` (this interpreter's ``services.cli``) as child ``name``."""
        argv = [sys.executable, "-m", "services.cli", *args]
        child = Child(
            name=name, argv=argv, env={**self.base_env, **(env or {})}, log_path=self.log_dir / f"{name}.log"
        )
        self._spawn(child)
        self.children[name] = child
        return child

    def _spawn(self, child: Child) -> None:
        out = os.fdopen(os.open(child.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        out.close()
        log.debug("started", child=child.name, pid=child.process.pid)

    def kill(self, name: str) -> None:
        """SIGKILL child ``name`` (no drain, no commit: a crash) and reap it."""
        child = self.children[name]
        if child.alive:
            assert child.process is not None
            child.process.kill()
            child.process.wait()
            log.info("killed", child=name, pid=child.process.pid)

    def restart(self, name: str) -> Child:
        """Start child ``name`` again with the same command and environment (its log is appended to)."""
        child = self.children[name]
        if child.alive:
            raise RuntimeError(f"{name} is still running")
        self._spawn(child)
        return child

    def dead(self) -> list[str]:
        return [c.name for c in self.children.values() if not c.alive]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to all, wait up to ``timeout`` in all, SIGKILL what is left."""
        for child in self.children.values():
            if child.alive:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.children[name].log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
