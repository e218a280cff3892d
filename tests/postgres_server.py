"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temp dir, ``postgres`` on a free loopback port.

* Binaries: ``initdb`` on PATH (its real directory must hold ``postgres``), else the newest
  ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package; ``make test`` installs it). Missing
  binaries raise ``PostgresUnavailable`` with what to install: the fixture fails, it never skips.
* ``postgres`` refuses to run as root, and CI runs as root: then every server command runs as the
  ``postgres`` system user (``setpriv``), with the temp dir owned by it.
* Trust authentication, listening on 127.0.0.1 only (and a Unix socket inside the temp dir).
  ``fsync=off``: a test server's durability is not under test, and the machine is shared.
* No process left behind: the postmaster is our child with a parent-death signal (``setpriv
  --pdeathsig``), so it stops even if pytest is killed; ``stop()`` shuts it down fast and removes the dir.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from lab.broker import free_port


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server would not start."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    candidates: list[Path] = []
    if env := os.environ.get("EMD_TEST_PG_BIN"):
        candidates.append(Path(env))
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)

    def version(p: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin$", p)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH nor in /usr/lib/postgresql/*/bin: "
        "run `make install` (it installs Debian's `postgresql` as root) or `apt-get install postgresql`, "
        "or set EMD_TEST_PG_BIN to the directory holding initdb and postgres"
    )


class PostgresServer:
    """One server for a test session. ``start()``, ``database()`` for a fresh empty database, ``stop()``."""

    def __init__(self, *, startup_timeout: float = 90.0) -> None:
        self.bin = find_bin_dir()
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # postgres will not run as root: drop to the postgres system user then
        self._as: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no `postgres` system user to run the "
                    "server as (Debian's postgresql package creates it)"
                ) from None
            self._as = [
                "setpriv",
                f"--reuid={self._owner.pw_uid}",
                f"--regid={self._owner.pw_gid}",
                "--init-groups",
            ]

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        res = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed ({res.returncode}): {(res.stderr or res.stdout)[-2000:]}"
            )

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="emd-pg-"))
        try:
            if self._owner is not None:
                os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
            data = self.root / "data"
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            for _ in range(5):  # a port taken between probe and bind: try another
                if self._spawn(data):
                    return self
            raise PostgresUnavailable(f"postgres would not start: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def pause(self) -> None:
        """Shut the server down (fast: clients are disconnected), keeping its data: an outage until ``resume``."""
        self._terminate()

    def resume(self) -> None:
        """Start it again on the same port and data (the lifecycle store's clients reconnect)."""
        assert self.root is not None, "resume() of a server that was never started"
        if not self._spawn(self.root / "data", port=self.port):
            raise PostgresUnavailable(
                f"postgres would not start again on port {self.port}: {self._log_tail()}"
            )

    def _spawn(self, data: Path, *, port: int | None = None) -> bool:
        self.port = port or free_port()
        log = open(self.root / "server.log", "ab")  # type: ignore[operator]
        try:
            # the parent-death signal stops the server even if pytest dies without a teardown
            prefix = [*(self._as or ["setpriv"]), "--pdeathsig=INT"] if shutil.which("setpriv") else self._as
            self.proc = subprocess.Popen(
                [
                    *prefix,
                    str(self.bin / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=60",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.2)
        self._terminate()
        raise PostgresUnavailable(
            f"postgres did not accept connections in {self.startup_timeout:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]  # type: ignore[operator]
        except OSError:
            return "(no server log)"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database (its URL), dropped afterwards even if connections are left open."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url_for(name)
        finally:
            with psycopg.connect(self.url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_connections(self, dbname: str) -> int:
        """Kill every backend connected to ``dbname`` (what a server restart does to clients); how many."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return len(rows)

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGINT = fast shutdown: disconnects clients, stops cleanly; its backends exit with it
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        self._terminate()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@contextlib.contextmanager
def dml_only_role(url: str, *tables: str) -> Iterator[str]:
    """A login role granted only SELECT, INSERT and UPDATE on ``tables`` of ``url``'s database, with no CREATE on
    its public schema (what a production application role gets): the URL to connect as it. Dropped afterwards."""
    import psycopg

    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(tables)} TO {role}")
    try:
        yield url.replace("://postgres@", f"://{role}@")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
