"""servers/process.py's free_port: a port a server can still bind when it starts a moment later."""

from __future__ import annotations

import socket

from servers import process


def test_a_free_port_is_below_the_ephemeral_range_bindable_and_not_handed_twice():
    low, _ = process.ephemeral_range()
    ports = [process.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports), (low, min(ports), max(ports))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_that_is_taken_or_already_handed_is_passed_over(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        handed = process.free_port()
        fresh = process.free_port()
        picks = iter([taken, handed, fresh])
        monkeypatch.setattr(process, "_HANDED", {handed: process._HANDED[handed]})
        monkeypatch.setattr("random.randrange", lambda a, b: next(picks))
        assert process.free_port() == fresh
