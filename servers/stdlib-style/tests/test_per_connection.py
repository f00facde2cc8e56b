"""per_connection.py's deadlines in process (servers/tests/test_reliability.py runs the whole
worker under gunicorn against the same attacks as the default one)."""

from __future__ import annotations

import socket
import struct
import time

from stdlib_style.per_connection import _timeval, set_read_deadline


def test_timeval_never_rounds_to_zero_which_would_mean_no_deadline():
    assert struct.unpack("ll", _timeval(1.5)) == (1, 500_000)
    assert struct.unpack("ll", _timeval(0.0)) == (0, 1)
    assert struct.unpack("ll", _timeval(75)) == (75, 0)


def test_a_read_deadline_ends_a_blocking_recv_with_eagain():
    server, client = socket.socketpair()
    with server, client:
        set_read_deadline(server, 0.2)
        started = time.monotonic()
        try:
            server.recv(10)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("recv returned without data")
        assert 0.15 < time.monotonic() - started < 2
        client.sendall(b"x")
        assert server.recv(10) == b"x", "the socket stays usable after a deadline"
