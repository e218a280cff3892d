"""Files at rest are private: 0600 files in 0700 directories.

What the pipeline keeps on a disk holds patient data or keys: documents (the claim-check store, kept SOAP
exchanges), the lifecycle database, health files, a development configuration with private keys. None of it
is for another user of the machine. Two layers make it so:

* ``emd`` sets the process's umask to 077 at start (``services.cli``), so whatever a run writes, through
  this module or not, is created private, and the processes it starts inherit that;
* the modules that create files at rest create them through ``private_dir`` / ``write_private`` /
  ``private_file``, so they are private also when used as a library under another umask (a МИС embedding
  ``producer``, a test).

An existing directory that we did not create is left as it is, except the one the caller names, which is
tightened when this process owns it (a data directory made earlier by hand).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "PRIVATE_UMASK", "private_dir", "private_file", "write_private"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory, with each missing level created 0700 (``mkdir -p`` would use 0755)."""
    path = Path(path)
    missing: list[Path] = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            level.mkdir(mode=PRIVATE_DIR)
        _tighten(level, PRIVATE_DIR)
    if not missing and path.is_dir():
        _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists as a 0600 file (created empty when missing), its directory 0700: for a file
    another library then opens (SQLite gives its -wal and -shm files the database file's mode)."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    os.close(fd)
    _tighten(path, PRIVATE_FILE)
    return path


def write_private(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` as a 0600 file (its directory 0700), replacing what was there."""
    path = Path(path)
    private_dir(path.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT: tighten it
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(raw)
    finally:
        if fd >= 0:
            os.close(fd)
    return path


def _tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` when this process owns it (a mounted volume's root may belong to root)."""
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 != mode:
            path.chmod(mode)
    except OSError:
        pass
