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
