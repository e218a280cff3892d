"""services.pipeline.lease: the status worker's scanners on one replica at a time, and liveness through an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from lab.broker import free_port
from lab.dev.config import write_dev_config
from producer import topology
from producer.errors import TransientError
from services import lifecycle as lc
from services.messaging.records import Output
from services.pipeline.lease import LEASE_HELD, Lease, while_held
from services.pipeline.polling import DEADLINE, KIND_HEADER, LOCAL_UID_HEADER
from tests.kafka_helpers import read_all, wait_until

ORG = "1.2.643.5.1.13.13.12.2.77.1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DownStore:
    """A lifecycle store whose database is unreachable."""

    def acquire_lease(self, *a, **k):
        raise TransientError("database unavailable (OperationalError)", reason="LIFECYCLE_STORE_UNAVAILABLE")

    release_lease = acquire_lease


def test_of_two_replicas_one_holds_the_lease_and_the_other_takes_it_when_released(store):
    """Two Leases on one store: the first renewal wins it, the second replica stays out until the holder releases."""
    a, b = Lease(store, "scanners", ttl=30, holder="a"), Lease(store, "scanners", ttl=30, holder="b")
    asyncio.run(a.renew())
    asyncio.run(b.renew())
    assert (True, False) == (a.held(), b.held())
    asyncio.run(a.release())
    asyncio.run(b.renew())
    assert (False, True) == (a.held(), b.held())
    assert 1 == LEASE_HELD.labels("scanners")._value.get()


def test_a_holder_that_cannot_renew_stops_counting_itself_the_holder_before_the_lease_expires(store):
    """Held until ttl − ttl/6 after the last renewal started, by its own clock: before the row expires for others."""
    clock = Clock()
    lease = Lease(store, "scanners", ttl=60, holder="a", clock=clock)
    asyncio.run(lease.renew())
    clock.now += 49
    assert lease.held()
    clock.now += 2
    assert not lease.held()


def test_a_scanner_runs_only_on_the_holder():
    """A tick wrapped by while_held produces nothing on a replica that does not hold the lease."""
    ticks = []

    async def tick():
        ticks.append(1)
        return [Output("t", b"", "k", {})]

    clock = Clock()
    lease = Lease(DownStore(), "scanners", ttl=60, clock=clock)
    assert [] == asyncio.run(while_held(lease, tick, job="deadline-scanner")())
    lease._valid_until = clock.now + 10  # as after a successful renewal
    assert 1 == len(asyncio.run(while_held(lease, tick, job="deadline-scanner")()))
    assert [1] == ticks


def test_a_database_outage_fails_no_tick_so_liveness_stays_fresh():
    """Renewing against an unreachable database, and a scan that raises a TransientError, both end as ticks that
    produced nothing (the runtime counts them fresh): a pod is not restarted for PostgreSQL's outage."""
    lease = Lease(DownStore(), "scanners", ttl=60)
    assert [] == asyncio.run(lease.renew()) and not lease.held()
    lease._valid_until = lease._clock() + 10

    async def scan():
        raise TransientError("database unavailable (OperationalError)", reason="LIFECYCLE_STORE_UNAVAILABLE")

    assert [] == asyncio.run(while_held(lease, scan, job="deadline-scanner")())


# --- two real status processes -----------------------------------------------------------------------------


def _overdue(store: lc.LifecycleStore, uid: str) -> None:
    mid = str(uuid.uuid4())
    store.register(uid, organization=ORG, kind="119", signed_event=b"{}")
    store.record_attempt(uid, mid, organization=ORG, endpoint="http://127.0.0.1:9/ips")
    store.mark_accepted(
        uid, organization=ORG, message_id=mid, accepted_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )


def _deadlines(bootstrap: str, uid: str) -> int:
    records = read_all(bootstrap, topology.CALLBACKS.name, idle=1.0)
    return sum(
        1
        for r in records
        if dict(r.headers or ()).get(KIND_HEADER) == DEADLINE.encode()
        and dict(r.headers or ()).get(LOCAL_UID_HEADER) == uid.encode()
    )


def _held(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    m = re.search(r'^emd_lease_held\{lease="status-scanners"\} ([0-9.]+)$', text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def two_status_processes(broker, tmp_path):
    """Two `emd worker status` processes on one lifecycle store (SQLite, one host), each with its metrics port."""
    topology.ensure_topics(broker.bootstrap_servers)
    organizations = write_dev_config(tmp_path / "config", oids=[ORG])
    data = tmp_path / "data"
    store = lc.open_store(data)
    ports, procs = [free_port(), free_port()], []
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "EMD_DATA_DIR": str(data),
        "EMD_ORGANIZATIONS": str(organizations),
        "EMD_ACK_TIMEOUT_SECONDS": "60",
        "EMD_ACK_SCAN_INTERVAL_SECONDS": "0.5",
        "EMD_SCANNER_LEASE_SECONDS": "10",
        "EMD_LOG_FORMAT": "json",
    }
    try:
        for n, port in enumerate(ports):
            log = open(tmp_path / f"status-{n}.log", "wb")  # noqa: SIM115 - handed to the child
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", "worker", "status"],
                    env={**env, "EMD_METRICS_PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        yield store, ports, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        store.close()


@pytest.mark.integration
def test_two_status_processes_run_one_scanner_between_them(broker, tmp_path, two_status_processes):
    """With two status workers on one store, exactly one holds the scanner lease and an overdue document gets one
    deadline record, not one per process; when the holder stops, the other takes the scanners over."""
    store, ports, procs = two_status_processes
    assert wait_until(lambda: sorted(_held(p) or 0 for p in ports) == [0.0, 1.0], timeout=120), Path(
        tmp_path / "status-0.log"
    ).read_text()[-3000:]
    holder = next(n for n, p in enumerate(ports) if _held(p) == 1.0)

    first = f"lease-{uuid.uuid4().hex[:8]}"
    _overdue(store, first)
    assert wait_until(lambda: _deadlines(broker.bootstrap_servers, first) >= 1, timeout=120)
    # many scan intervals later, still one: the other process never scanned
    assert wait_until(lambda: _held(ports[holder]) == 1.0 and _held(ports[1 - holder]) == 0.0, timeout=60)
    assert 1 == _deadlines(broker.bootstrap_servers, first)

    procs[holder].send_signal(signal.SIGTERM)  # a rolling update: the holder hands the lease over as it stops
    assert 0 == procs[holder].wait(120)
    other = ports[1 - holder]
    assert wait_until(lambda: _held(other) == 1.0, timeout=60)
    second = f"lease-{uuid.uuid4().hex[:8]}"
    _overdue(store, second)
    assert wait_until(lambda: _deadlines(broker.bootstrap_servers, second) >= 1, timeout=120)
    assert 1 == _deadlines(broker.bootstrap_servers, second)
