"""The signer's CPU work on every core it is given: ``sign_document`` in a pool of processes.

Checking and signing a СЭМД (XSD, Schematron in Saxon, Streebog, GOST arithmetic) holds the GIL, and Saxon calls
take one process-wide lock besides, so threads of one process never use a second core. :class:`SigningPool`
runs :func:`services.pipeline.signing.sign_document` in ``processes`` worker processes instead, each with the
organisations file loaded once. The worker runtime is unchanged around it: records of one key are still handed
out one after another, and a record is done only once its outputs are acknowledged, so ordering per document
and at-least-once hold whichever process signed it.

* Size: ``EMD_SIGNER_PROCESSES``, 0 (the default) meaning one per usable CPU: the CPUs this process may run on,
  capped by the cgroup CPU quota (a pod with ``limits.cpu: 2`` on a 16-core node gets 2). With one CPU there is
  no pool: signing runs in a thread, as a pool of one would only add a copy of Saxon.
* Memory: Saxon's heap grows with the documents it has seen (it is collected late); a worker process is replaced
  after ``recycle_after`` documents (``EMD_SIGNER_RECYCLE_DOCUMENTS``), which bounds it, at the price of
  compiling its Schematron again.
* A worker process that dies (killed, out of memory) fails only the documents it had: they are a
  ``TransientError`` (retried, not dead-lettered) and the pool is made anew. One never outlives the signer
  (``PR_SET_PDEATHSIG``), even a signer killed with -9.
* Metrics: a worker process's counters are its own, so the parent counts what each result says
  (:func:`observe`), and ``/metrics`` shows every signature whichever process made it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from producer.errors import TransientError
from services import telemetry
from services.logs import get_logger
from services.pipeline import signing

__all__ = ["SigningPool", "usable_cpus", "pool_size"]

log = get_logger(__name__)
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def pool_size(processes: int) -> int:
    """``EMD_SIGNER_PROCESSES``: a number, or 0 for one per usable CPU."""
    return processes if processes > 0 else usable_cpus()


# --- in the worker processes -----------------------------------------------------------------------
_config: Any = None


def _start(organizations_file: str, max_document_bytes: int, log_format: str, log_level: str) -> None:
    global _config
    from services.logs import configure
    from services.pipeline.organizations import load_organizations, watch_organizations
    from services.processes import die_with_parent

    die_with_parent()  # a signer killed with -9 must not leave its signing processes behind (and Ctrl-C is its own)
    configure(fmt=log_format, level=log_level)
    _config = load_organizations(
        Path(organizations_file), max_document_bytes=max_document_bytes, role="signer"
    )
    watch_organizations(
        _config
    )  # a rotated key reaches the signing processes too, not only at their recycling


def _warnings(kind: str) -> float:
    """How many of ``kind`` this process signed despite Schematron failures so far.

    Read from the one counter, not ``REGISTRY.get_sample_value``: that collects every metric of the registry,
    the process collector's ``/proc`` reads included, twice per document (12 % of a signing process under py-spy).
    """
    for family in signing.SCHEMATRON_WARNINGS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("kind") == kind:
                return sample.value
    return 0.0


def _sign(data: dict[str, Any], document: bytes, now: dt.datetime) -> tuple[dict[str, Any], float, bool]:
    """(signatures, seconds, whether Schematron warned): what the parent needs for its metrics."""
    started, warned = time.perf_counter(), _warnings(data["kind"])
    signatures = signing.sign_document(data, document, _config, now=now)
    return signatures, time.perf_counter() - started, _warnings(data["kind"]) > warned


# --- in the signer ---------------------------------------------------------------------------------
def observe(signatures: dict[str, Any], seconds: float, warned: bool, kind: str) -> None:
    """Count a document signed in a worker process as ``sign_document`` counts one signed here."""
    for p in signatures["personal"]:
        signing.SIGNATURES.labels("doctor", p["source"]).inc()
    if signatures["organization"] is not None:
        signing.SIGNATURES.labels("organization", "server").inc()
    if warned:
        signing.SCHEMATRON_WARNINGS.labels(kind).inc()
    signing.SIGNING_DURATION.observe(seconds, exemplar=telemetry.exemplar())


class SigningPool:
    """``await pool.sign(data, document, now)`` in one of ``processes`` worker processes.

    :param organizations_file: what each worker process loads (the file the signer itself checked at start).
    :param max_document_bytes: the size limit, as the signer's own configuration has it.
    :param processes: worker processes (at least 1).
    :param recycle_after: documents a worker process signs before it is replaced (bounds Saxon's memory).
    :param log_format / log_level: the worker processes' logging, as the signer's.
    """

    def __init__(
        self,
        *,
        organizations_file: Path,
        max_document_bytes: int,
        processes: int,
        recycle_after: int = 2000,
        log_format: str = "console",
        log_level: str = "info",
    ) -> None:
        self.processes = max(1, processes)
        self.recycle_after = max(1, recycle_after)
        self._init = (str(organizations_file), max_document_bytes, log_format, log_level)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn: a fork of an asyncio process with Kafka clients' threads is not safe
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=self._init,
                max_tasks_per_child=self.recycle_after,
            )
        return self._executor

    async def sign(self, data: dict[str, Any], document: bytes, now: dt.datetime) -> dict[str, Any]:
        executor = self._pool()
        # the bytes travel once: not again as the event's inline base64, which sign_document does not read
        slim = {**data, "document": {k: v for k, v in data["document"].items() if k != "inline"}}
        try:
            signatures, seconds, warned = await asyncio.get_running_loop().run_in_executor(
                executor, _sign, slim, document, now
            )
        except BrokenProcessPool:
            log.warning("a signing process died: making the pool anew", local_uid=data.get("localUid"))
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise TransientError(
                "the signing process stopped before it finished this document", reason="SIGNING_PROCESS_LOST"
            ) from None
        observe(signatures, seconds, warned, data["kind"])
        return signatures

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
