"""Files at rest are private: what the pipeline writes is 0600, in 0700 directories, whatever the umask."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab.dev.config import write_dev_config
from producer.claimcheck import FilesystemStore
from producer.files import private_dir, write_private
from services.console.auth import load_users, verify_password
from services.lifecycle import open_store
from services.lifecycle.support_tables import open_support_tables
from services.messaging.heartbeat import write_heartbeat

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def open_umask():
    """The most permissive umask a user might have: the code, not the umask, must make files private."""
    old = os.umask(0)
    yield
    os.umask(old)


def _modes(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    dirs, files = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            dirs[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
        for name in filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                files[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return dirs, files


def _not_private(root: Path) -> list[str]:
    dirs, files = _modes(root)
    return [f"{d}/ {m:o}" for d, m in dirs.items() if m != 0o700] + [
        f"{f} {m:o}" for f, m in files.items() if m != 0o600
    ]


def test_stores_write_private_files_under_an_open_umask(tmp_path, open_umask):
    """The lifecycle SQLite (with its WAL), the claim-check store, health files and keys are 0600 in 0700 dirs."""
    data = tmp_path / "data"
    store = open_store(data)
    store.close()
    desk = open_support_tables(data)
    desk.audit("test", actor="support")
    desk.close()
    FilesystemStore(data / "documents").put(b"<ClinicalDocument/>")
    write_heartbeat(
        data / "health" / "signer.json", stage="signer", at=0.0, in_flight=0, ok=True, health="ok"
    )
    write_dev_config(tmp_path / "config", organizations=1)
    dirs, files = _modes(tmp_path)
    assert "data/lifecycle.sqlite3" in files and "data/health/signer.json" in files
    assert any(f.startswith("data/documents/") for f in files)
    assert any(f.endswith(".key") for f in files)
    assert [] == _not_private(tmp_path)


def test_an_existing_file_is_tightened_when_rewritten(tmp_path, open_umask):
    """write_private makes a world-readable file 0600, and private_dir tightens a directory this user owns."""
    target = tmp_path / "loose" / "k.pem"
    target.parent.mkdir(mode=0o777)
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    private_dir(target.parent)
    assert (stat.S_IMODE(target.stat().st_mode), stat.S_IMODE(target.parent.stat().st_mode)) == (0o600, 0o700)
    assert target.read_text() == "new"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One `emd demo` of three documents: its work directory and what it printed."""
    workdir = tmp_path_factory.mktemp("demo") / "run"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    run = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--documents", "3", "--timeout", "300"]
        + ["--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "lost=0" in run.stdout
    return workdir, run


def test_every_file_a_demo_run_writes_is_private(demo):
    """`emd demo` leaves only 0600 files in 0700 directories: keys, documents, lifecycle, exchanges, logs."""
    workdir, _ = demo
    dirs, files = _modes(workdir)
    assert "data/lifecycle.sqlite3" in files, sorted(files)
    assert any(f.startswith("data/documents/") for f in files)  # documents and the kept exchanges
    assert any(f.startswith("data/health/") for f in files)
    assert any(f.startswith("config/") and f.endswith(".key") for f in files)
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert [] == _not_private(workdir)


def test_a_demo_run_prints_the_consoles_development_user(demo):
    """`emd demo` says how to open the console and with which user and password, and that password logs in."""
    workdir, run = demo
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("console: "))
    user, password = re.search(r"log in as (\S+), password (\S+)$", line).groups()
    users = load_users(workdir / "config" / "console-users.json")
    assert user == "dev" and verify_password(password, users["dev"])
    assert f"EMD_CONSOLE_USERS={workdir / 'config' / 'console-users.json'}" in line
