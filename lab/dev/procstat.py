"""CPU time and memory of a process and its descendants, read from ``/proc`` (Linux): what ``emd bench`` reports.

CPU seconds are ``utime + stime + cutime + cstime`` of ``/proc/<pid>/stat``: time on a CPU, whatever else
the machine is doing, which is why the bench reports cost per document from it and not from wall time.
A process tree is summed (the signer's pool processes are the signer's cost); the children a process has
already reaped are in its ``cutime``/``cstime``, the live ones are read themselves, so nothing is counted twice.
Memory is ``VmRSS`` (now) and ``VmHWM`` (the peak resident set) of ``/proc/<pid>/status``, per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Usage", "usage", "descendants"]

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Usage:
    """One process tree at one moment."""

    cpu_seconds: float  #: the whole tree, reaped children included
    rss_mb: float  #: the largest current resident set of one process of the tree
    peak_rss_mb: float  #: the largest peak resident set (VmHWM) of one process of the tree
    processes: int


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of one process, or None once it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


def _memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB; zeros for a process that is gone (or a kernel thread)."""
    rss = hwm = 0.0
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, hwm


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children.get(child, ())
    return out


def usage(pid: int) -> Usage | None:
    """The tree rooted at ``pid`` now, or None when ``pid`` itself is gone."""
    own = _stat(pid)
    if own is None:
        return None
    cpu, rss, peak, count = own[1], *_memory(pid), 1
    for child in descendants(pid):
        st = _stat(child)
        if st is None:
            continue
        c_rss, c_peak = _memory(child)
        cpu, rss, peak, count = cpu + st[1], max(rss, c_rss), max(peak, c_peak), count + 1
    return Usage(cpu_seconds=cpu, rss_mb=rss, peak_rss_mb=peak, processes=count)
