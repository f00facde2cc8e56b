"""A raw-socket HTTP/1.1 client that misbehaves on purpose, for the reliability tests.

Everything here speaks to 127.0.0.1 only and stops by itself: every read has a deadline.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """What came back on one connection: the answers in order, and how it ended."""

    responses: list[Response]
    closed: bool  # the server closed (FIN or reset)
    timed_out: bool  # the deadline passed with the connection still open
    elapsed: float

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def parse_responses(data: bytes, head_only: int = 0) -> tuple[list[Response], bytes]:
    """Split complete responses off the front of `data`; return them and the rest.

    The first `head_only` responses answer HEAD requests, so they carry no body.
    """
    responses: list[Response] = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return responses, data
        lines = data[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = data[end + 4 :]
        if len(responses) < head_only or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) < length:
                return responses, data
            body, rest = rest[:length], rest[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(rest)
            if parsed is None:
                return responses, data
            body, rest = parsed
        else:
            return responses, data  # body runs to the close; the caller keeps reading
        responses.append(Response(status, headers, body))
        data = rest


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        end = data.find(b"\r\n")
        if end < 0:
            return None
        size = int(data[:end].split(b";")[0], 16)
        chunk_start = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", chunk_start)
            if trailer_end < 0:
                return None
            return body, data[trailer_end + 2 :]
        if len(data) < chunk_start + size + 2:
            return None
        body += data[chunk_start : chunk_start + size]
        data = data[chunk_start + size + 2 :]


def send_raw(port: int, payload: bytes, expect: int = 1, timeout: float = 5.0, head_only: int = 0) -> Exchange:
    """Write `payload` in one write; read until `expect` answers, the close, or `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    data, closed, timed_out = b"", False, False
    with connect(port, timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        while not closed:
            responses, _ = parse_responses(data, head_only)
            if len(responses) >= expect:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                timed_out = True
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
            data += chunk
    responses, _ = parse_responses(data, head_only)
    return Exchange(responses, closed, timed_out, time.monotonic() - started)


def get(port: int, path: str = "/health", timeout: float = 10.0) -> tuple[int | None, float]:
    """One ordinary GET on a fresh connection: (status or None on failure, seconds taken)."""
    started = time.monotonic()
    try:
        exchange = send_raw(port, f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode(), timeout=timeout)
    except OSError:
        return None, time.monotonic() - started
    status = exchange.statuses[0] if exchange.responses else None
    return status, exchange.elapsed


@dataclass
class Attacker:
    sock: socket.socket
    answer: bytes = b""
    closed_after: float | None = None  # seconds from the attack's start until the server hung up


@dataclass
class Attack:
    """`count` connections that each send `first`, then trickle `trickle` one byte per `interval`.

    A background thread does the trickling and watches for the server's answers and hang-ups,
    so the test thread is free to measure ordinary requests meanwhile. `stop()` closes all.
    """

    port: int
    count: int
    first: bytes
    trickle: bytes = b""
    interval: float = 1.0
    attackers: list[Attacker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        for _ in range(self.count):
            sock = connect(self.port)
            if self.first:
                sock.sendall(self.first)
            sock.setblocking(False)
            self.attackers.append(Attacker(sock))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for attacker in self.attackers:
            selector.register(attacker.sock, selectors.EVENT_READ, attacker)
        sent = 0
        next_send = time.monotonic() + self.interval
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=min(0.1, max(0.0, next_send - time.monotonic()))):
                self._receive(selector, key.data)
            if self.trickle and time.monotonic() >= next_send:
                byte = self.trickle[sent % len(self.trickle) : sent % len(self.trickle) + 1]
                sent += 1
                next_send += self.interval
                for attacker in self.attackers:
                    if attacker.closed_after is None:
                        try:
                            attacker.sock.send(byte)
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError:
                            self._hung_up(selector, attacker)
        selector.close()

    def _receive(self, selector: selectors.BaseSelector, attacker: Attacker) -> None:
        try:
            chunk = attacker.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk:
            attacker.answer += chunk
        else:
            self._hung_up(selector, attacker)

    def _hung_up(self, selector: selectors.BaseSelector, attacker: Attacker) -> None:
        with self._lock:
            if attacker.closed_after is None:
                attacker.closed_after = time.monotonic() - self.started
                selector.unregister(attacker.sock)

    def hung_up(self) -> int:
        with self._lock:
            return sum(1 for a in self.attackers if a.closed_after is not None)

    def statuses(self) -> list[int]:
        """The status of every answer the server sent the attackers."""
        return [r.status for a in self.attackers for r in parse_responses(a.answer)[0]]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for attacker in self.attackers:
            attacker.sock.close()

    def __enter__(self) -> Attack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
