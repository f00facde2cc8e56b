"""The raw-socket client the reliability tests judge servers with: it must see every answer a
server can give, whatever its framing (RFC 9112 section 6.3), or a bad answer passes as a close."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from servers.tests import hostile
from servers.tests.hostile import Tally, keep_requesting, parse_responses, send_raw


@pytest.mark.parametrize(
    "wire, closed, expected",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, [(200, b"hello")]),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", False, [(200, b"hello")]),
        (b"HTTP/1.1 200 OK\r\n\r\nhello", True, [(200, b"hello")]),
        (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nbad", True, [(400, b"bad")]),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, [(204, b"")]),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", False, [(304, b"")]),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False, [(100, b""), (200, b"ok")]),
        # Pipelined answers, the last running to the close.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\nrest", True, [(200, b"ok"), (200, b"rest")]),
    ],
    ids=["content-length", "chunked", "to the close", "1.0 error to the close", "204", "304", "100 then 200", "pipelined"],
)
def test_every_framing_is_read(wire, closed, expected):
    responses, rest = parse_responses(wire, closed=closed)
    assert [(r.status, r.body) for r in responses] == expected and rest == b""


def test_a_body_to_the_close_waits_for_the_close():
    responses, rest = parse_responses(b"HTTP/1.1 200 OK\r\n\r\nhel")
    assert responses == [] and rest == b"HTTP/1.1 200 OK\r\n\r\nhel"


def test_an_incomplete_length_waits_and_head_answers_have_no_body():
    assert parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", closed=False)[0] == []
    (head,), rest = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head_only=1)
    assert head.body == b"" and rest == b""


def one_answer_server(answer: bytes) -> tuple[int, threading.Thread]:
    """A socket server that reads one request, writes `answer` and closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_send_raw_sees_an_answer_delimited_by_the_close():
    """A server answering a malformed request with a 200 that runs to the close must not pass as
    merely 'closed': the reliability tests assert every answer is a 4xx."""
    port, thread = one_answer_server(b"HTTP/1.1 200 OK\r\n\r\nhello")
    exchange = send_raw(port, b"GARBAGE\r\n\r\n", expect=2, timeout=5)
    thread.join(5)
    assert exchange.closed and exchange.statuses == [200] and exchange.responses[0].body == b"hello"


@pytest.mark.parametrize("signalled", [True, False], ids=["after the signal", "before any signal"])
def test_a_connect_reset_in_the_handshake_counts_by_when_it_came(monkeypatch, signalled):
    # A closing listener resets the connections still in its queue, some before connect() returns.
    def reset(port, timeout=5.0):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(hostile, "connect", reset)
    tally = Tally(1)
    if signalled:
        tally.signalled_at = time.monotonic() - 1
    keep_requesting(1, threading.Event(), tally)
    assert (tally.reset_during_stop, len(tally.failed)) == ((1, 0) if signalled else (0, 1))
