"""The local broker's helpers that the harnesses (emd run, demo, bench, the tests) start processes with."""

from __future__ import annotations

import socket

from lab import broker


def test_a_free_port_lies_below_the_range_outgoing_connections_take():
    """A port handed to a child to listen on is one no outgoing connection of this machine can be given meanwhile."""
    low = broker._ephemeral_low()
    ports = [broker.free_port() for _ in range(50)]
    assert all(1024 < p < low for p in ports)


def test_a_free_port_is_never_handed_out_twice_and_is_bindable():
    """Two children asking one harness for a port never get the same one, and each can bind its own."""
    ports = [broker.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_parallel_test_workers_choose_ports_from_disjoint_slices(monkeypatch):
    """Each pytest-xdist worker (and what it spawns) draws ports from its own slice, so two workers never collide."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    slices = []
    for n in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        slices.append(broker.port_range(low=32768))
    assert slices[0][0] == 32768 - 12000 and slices[-1][1] <= 32768
    assert all(a[1] <= b[0] for a, b in zip(slices, slices[1:], strict=False))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    ports = {broker.free_port() for _ in range(50)}
    start, stop = broker.port_range()
    assert all(start <= p < stop for p in ports)


def test_without_parallel_workers_the_whole_range_is_used(monkeypatch):
    """Outside a pytest-xdist worker ``free_port`` chooses among all 12,000 ports below the ephemeral range."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert broker.port_range(low=32768) == (32768 - 12000, 32768)
