"""services.pipeline.signing_pool: sign_document in worker processes, sized from the CPUs, metrics counted here."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest

from producer.errors import PermanentError, TransientError
from services.crypto import cades
from services.metrics import REGISTRY
from services.pipeline import signing_pool
from services.pipeline.signing_pool import SigningPool
from tests import signing_lab as lab


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return lab.build_lab(tmp_path_factory.mktemp("lab"))


def _pool(built, **kw) -> SigningPool:
    return SigningPool(
        organizations_file=built.config_path,
        max_document_bytes=lab.MAX_BYTES,
        log_format="json",
        log_level="warning",
        **kw,
    )


def _signatures() -> float:
    return sum(
        REGISTRY.get_sample_value("emd_signatures_total", {"kind": k, "source": s}) or 0.0
        for k, s in (("doctor", "server"), ("organization", "server"))
    )


def test_usable_cpus_is_capped_by_the_cgroup_quota(tmp_path, monkeypatch):
    """A cgroup quota of 1.5 CPUs allows 2 at most; no quota ("max") leaves the affinity; a pool of 0 means that many."""
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(signing_pool, "_CGROUP_CPU_MAX", cpu_max)
    cpu_max.write_text("150000 100000\n")
    assert signing_pool.usable_cpus() == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert signing_pool.usable_cpus() == len(os.sched_getaffinity(0))
    assert signing_pool.pool_size(0) == signing_pool.usable_cpus() and signing_pool.pool_size(3) == 3


@pytest.mark.integration
def test_documents_are_signed_in_worker_processes_and_counted_here(built):
    """Three documents through a pool whose processes are replaced after each one: every signature verifies over its
    document, and this process's emd_signatures counts them."""
    pool = _pool(built, processes=2, recycle_after=1)
    documents = [lab.variant(uid=f"7000{n}") for n in range(3)]
    before = _signatures()

    async def go():
        return await asyncio.gather(
            *(pool.sign(lab.created_data(d)["data"], d, dt.datetime.now(dt.UTC)) for d in documents)
        )

    try:
        results = asyncio.run(go())
    finally:
        pool.close()
    for document, signatures in zip(documents, results, strict=True):
        for cms in [p["cms"] for p in signatures["personal"]] + [signatures["organization"]["cms"]]:
            assert cades.verify_detached(document, cades.from_wire(cms))
    assert _signatures() - before == 6  # a doctor and the organisation for each


@pytest.mark.integration
def test_a_refusal_in_a_worker_process_keeps_its_reason(built):
    """A document refused in a worker process arrives here as the same PermanentError reason."""
    pool = _pool(built, processes=1)
    document = lab.xsd_invalid(lab.GOOD.read_bytes())
    try:
        with pytest.raises(PermanentError) as err:
            asyncio.run(pool.sign(lab.created_data(document)["data"], document, dt.datetime.now(dt.UTC)))
    finally:
        pool.close()
    assert err.value.reason == "XSD_INVALID"


@pytest.mark.integration
def test_a_worker_process_killed_mid_document_is_a_transient_error_and_the_pool_recovers(built):
    """Killing the worker processes while a document is being signed fails that document as SIGNING_PROCESS_LOST
    (retried, not dead-lettered); the next document is signed by a new pool."""
    pool = _pool(built, processes=1)
    document = lab.GOOD.read_bytes()
    data = lab.created_data(document)["data"]

    async def go():
        task = asyncio.create_task(pool.sign(data, document, dt.datetime.now(dt.UTC)))
        while not pool._executor or not pool._executor._processes:  # the spawned process exists
            await asyncio.sleep(0.01)
        for process in list(pool._executor._processes.values()):
            process.kill()
        with pytest.raises(TransientError) as err:
            await task
        assert err.value.reason == "SIGNING_PROCESS_LOST"
        return await pool.sign(data, document, dt.datetime.now(dt.UTC))

    try:
        assert asyncio.run(go())["organization"] is not None
    finally:
        pool.close()


@pytest.mark.integration
def test_the_signing_processes_die_with_a_signer_killed_hard(built, tmp_path):
    """A signer killed with -9 leaves no signing process behind: each one dies with its parent."""
    import subprocess
    import sys
    import time

    code = (
        "import asyncio, datetime as dt, os, sys\n"
        "from pathlib import Path\n"
        "from services.pipeline.signing_pool import SigningPool\n"
        "from tests import signing_lab as lab\n"
        f"pool = SigningPool(organizations_file=Path({str(built.config_path)!r}), max_document_bytes=lab.MAX_BYTES,"
        " processes=1, log_format='json', log_level='warning')\n"
        "doc = lab.GOOD.read_bytes()\n"
        "asyncio.run(pool.sign(lab.created_data(doc)['data'], doc, dt.datetime.now(dt.UTC)))\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(300)\n"
    )
    signer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert signer.stdout.readline().strip() == "ready"
        children = [
            int(p)
            for p in subprocess.run(
                ["ps", "--ppid", str(signer.pid), "-o", "pid="], capture_output=True, text=True
            ).stdout.split()
        ]
        assert children  # the signing process (and multiprocessing's resource tracker)
        signer.kill()
        signer.wait()
        deadline = time.monotonic() + 30
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [
                p
                for p in children
                if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z"
            ]
        assert alive == []
    finally:
        if signer.poll() is None:
            signer.kill()
            signer.wait()


def test_the_warning_count_is_read_from_its_counter_without_collecting_the_whole_registry(monkeypatch):
    """A signing process reads its Schematron-warning count per kind from that one counter: it follows each
    increment, is 0 for a kind never warned, and never asks the registry to collect every metric."""
    from services.pipeline import signing

    def whole_registry():
        raise AssertionError("the whole registry was collected")

    monkeypatch.setattr(REGISTRY, "collect", whole_registry)
    before = signing_pool._warnings("pool-test-kind")
    signing.SCHEMATRON_WARNINGS.labels("pool-test-kind").inc()
    assert signing_pool._warnings("pool-test-kind") == before + 1
    assert signing_pool._warnings("a-kind-never-warned") == 0.0
