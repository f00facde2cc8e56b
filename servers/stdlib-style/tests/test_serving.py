"""serving.py, the request path both workers share, in process: a real gunicorn Config and
parser, the worker's own methods, and a socketpair standing in for the client's connection."""

from __future__ import annotations

import os
import socket

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.message import Request
from stdlib_style.app import create_app
from stdlib_style.per_connection import ThreadPerConnectionWorker
from stdlib_style.serving import ConnectionParser, SettledConfig

from servers.contract import check_hash
from servers.tests.hostile import parse_responses

CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 8080)
GET = b"GET /hash HTTP/1.1\r\nHost: bench\r\n\r\n"


class Recorder:
    """The server's socket, counting the sends a request costs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.sends = sock, 0

    def sendall(self, data: bytes) -> None:
        self.sends += 1
        self.sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class Connection:
    def __init__(self, app) -> None:
        cfg = Config()
        cfg.set("keepalive", 75)
        self.worker = ThreadPerConnectionWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))
        self.worker.wsgi = app
        self.server_end, self.client = socket.socketpair()
        self.sock = Recorder(self.server_end)
        self.parser = ConnectionParser(self.worker.settled, self.sock, CLIENT)

    def exchange(self, payload: bytes = GET) -> tuple[bool, list]:
        """Send `payload`, let the worker answer one request, return (kept alive, answers)."""
        self.client.sendall(payload)
        self.parser.unreader.unread(self.worker.read_head(self.server_end, b""))
        keep = self.worker.handle(self.parser, self.sock, CLIENT, SERVER)
        if not keep:
            self.server_end.shutdown(socket.SHUT_WR)
        self.client.settimeout(5)
        data = b""
        while not (answers := parse_responses(data)[0]):
            chunk = self.client.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        return keep, answers

    def close(self) -> None:
        self.worker.tmp.close()  # the heartbeat file every gunicorn worker opens
        self.server_end.close()
        self.client.close()


@pytest.fixture
def connection():
    made: list[Connection] = []

    def make(app=None) -> Connection:
        made.append(Connection(app or create_app()))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def test_an_answer_leaves_in_one_send_and_keeps_the_contract(connection):
    conn = connection()
    for _ in range(3):
        keep, answers = conn.exchange()
        assert keep
        (answer,) = answers
        check_hash(answer.status, answer.headers, answer.body, "stdlib-style")
    assert conn.sock.sends == 3, "head and body in one sendall per answer"


def test_a_large_answer_leaves_whole_in_pieces(connection):
    chunk = b"x" * 40_000

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(chunk) * 5))])
        return [chunk] * 5

    conn = connection(app)
    keep, (answer,) = conn.exchange()
    assert keep and answer.body == chunk * 5
    assert conn.sock.sends > 1, "past serving.GATHER_LIMIT the outbox flushes as it goes"


def test_an_app_failing_before_anything_left_answers_500_not_half_an_answer(connection):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        yield b"half"
        raise RuntimeError("the app broke mid-answer")

    conn = connection(app)
    keep, (answer,) = conn.exchange()
    assert not keep
    assert answer.status == 500


def test_the_peer_is_checked_against_forwarded_allow_ips_once_per_connection(connection, monkeypatch):
    calls = []
    original = Request._peer_is_trusted_proxy
    monkeypatch.setattr(Request, "_peer_is_trusted_proxy", lambda self: calls.append(1) or original(self))
    conn = connection()
    for _ in range(3):
        assert conn.exchange()[0]
    assert len(calls) == 1


def test_settled_config_holds_every_setting_as_config_does():
    cfg = Config()
    cfg.set("keepalive", 33)
    cfg.set("forwarded_allow_ips", "10.0.0.1")
    settled = SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(settled, name) == getattr(cfg, name), name
    assert settled.is_ssl == cfg.is_ssl
    assert list(settled.forwarded_allow_networks()) == list(cfg.forwarded_allow_networks())

