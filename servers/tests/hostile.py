"""A raw-socket HTTP/1.1 client that misbehaves on purpose, for the reliability tests.

Everything here speaks to 127.0.0.1 only and stops by itself: every read has a deadline.
"""

from __future__ import annotations

import select
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


def parse_responses(data: bytes, head_only: int = 0, closed: bool = False) -> tuple[list[Response], bytes]:
    """Split complete responses off the front of `data`; return them and the rest.

    Every framing of RFC 9112 section 6.3 counts: no body (HEAD, 1xx, 204, 304), Content-Length,
    chunked, and a body that runs to the close, which is complete only once the server has
    `closed` the connection (until then it waits in the rest). The first `head_only` responses
    answer HEAD requests, so they carry no body.
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
        elif closed:
            body, rest = rest, b""  # the body ran to the close
        else:
            return responses, data  # the body runs to the close: the caller keeps reading
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
    responses, _ = parse_responses(data, head_only, closed=closed)
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
        return [r.status for a in self.attackers
                for r in parse_responses(a.answer, closed=a.closed_after is not None)[0]]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for attacker in self.attackers:
            attacker.sock.close()

    def __enter__(self) -> Attack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- load, then SIGTERM ------------------------------------------------------------------------


class Tally:
    """How each request of keep_requesting's clients ended."""

    def __init__(self, clients: int = 0) -> None:
        self.clients = clients
        self.lock = threading.Lock()
        self.ok = 0
        self.refused = 0  # connection refused: nothing was sent, the client may go elsewhere
        self.closed_idle = 0  # the server closed a kept-alive connection before we reused it
        self.unanswered_on_reuse = 0  # sent on a kept-alive connection that closed with no byte back
        self.reconnected = 0  # a new connection was accepted after the server answered `Connection: close`
        self.answered_clients = 0  # clients with at least one answer: their connection was accepted
        # When the stop was signalled (set by the test): a connection opened after it and reset
        # with no byte back never reached the server (a closing listener's queue), so it counts
        # here, as a refusal does, and not as a request lost in flight.
        self.signalled_at: float | None = None
        self.reset_during_stop = 0
        self.failed: list[str] = []  # a request was sent and got no complete answer

    def __str__(self) -> str:
        return (f"{self.ok} answered, {self.refused} refused, {self.closed_idle} closed while idle, "
                f"{self.unanswered_on_reuse} unanswered on reuse and resent, "
                f"{self.reconnected} reconnected after `Connection: close`, "
                f"{self.reset_during_stop} connections opened during the stop and reset, {len(self.failed)} failed")

    def add(self, field: str, detail: str = "") -> None:
        with self.lock:
            if field == "failed":
                self.failed.append(detail)
            else:
                setattr(self, field, getattr(self, field) + 1)


def keep_requesting(port: int, stop: threading.Event, tally: Tally) -> None:
    """GET /hash over one keep-alive connection, reconnecting when told to, until refused.

    Before reusing a connection it checks that the server has not closed it meanwhile, as HTTP
    clients do. A request written on a reused connection that the server closes without sending
    a byte back was never read by it: Go's net/http (so k6) and browsers resend such idempotent
    requests on a new connection, and so does this client, counting them. Any other request that
    was written and not answered in full is a failure.
    """
    sock, reused, told_to_close, answered = None, False, False, False
    request = b"GET /hash HTTP/1.1\r\nHost: bench\r\n\r\n"
    while not stop.is_set():
        if sock is None:
            opened = time.monotonic()
            try:
                sock, reused = connect(port, timeout=30), False
            except ConnectionRefusedError:
                tally.add("refused")
                return
            except ConnectionResetError as raised:
                # Reset within the handshake: the listener closed with this connection in its queue.
                if tally.signalled_at is not None and opened >= tally.signalled_at:
                    tally.add("reset_during_stop")
                else:
                    tally.add("failed", f"connect reset before any signal: {raised!r}")
                return
            if told_to_close:
                tally.add("reconnected")
        elif select.select([sock], [], [], 0)[0]:
            sock.close()
            sock = None
            tally.add("closed_idle")
            continue
        data, answer, error = b"", None, None
        try:
            sock.sendall(request)
            while answer is None:
                chunk = sock.recv(65536)
                data += chunk
                responses, _ = parse_responses(data, closed=not chunk)
                answer = responses[0] if responses else None
                if not chunk:
                    break
        except OSError as raised:
            error = raised
        if answer is None and not data and reused and (error is None or isinstance(error, ConnectionResetError)):
            tally.add("unanswered_on_reuse")
            sock.close()
            sock = None
            continue
        if answer is None and not data and not reused and tally.signalled_at is not None and opened >= tally.signalled_at:
            tally.add("reset_during_stop")
            sock.close()
            return
        if answer is None or answer.status != 200:
            tally.add("failed", f"{data[:200]!r} {error!r} on a {'reused' if reused else 'new'} connection")
            sock.close()
            return
        tally.add("ok")
        if not answered:
            answered = True
            tally.add("answered_clients")
        reused = True
        if answer.headers.get("connection", "").lower() == "close":
            sock.close()
            sock, told_to_close = None, True


def sigterm_under_load(server: str, env: dict[str, str], log, clients: int = 16, answers: int = 500,
                       stop_timeout: float = 30.0) -> tuple[int, Tally]:
    """`clients` keep-alive clients GET /hash from `server` (under `make serve`, one worker, `env`);
    after `answers` answers the runner gets SIGTERM. Returns its exit code and how requests ended."""
    from servers.process import free_port, running, serve_command

    port = free_port()
    tally, stop = Tally(clients), threading.Event()
    with running(serve_command(server, port, workers=1), port, log, env=env, stop_timeout=stop_timeout) as served:
        threads = [threading.Thread(target=keep_requesting, args=(port, stop, tally), daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while tally.ok < answers and not tally.failed:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.05)
        exit_code = served.stop(stop_timeout)
    # Each client ends by itself once it is refused; a runner that exits within milliseconds of
    # closing its connections (Go) is gone before they all got there, so wait for them first.
    for thread in threads:
        thread.join(10)
    stop.set()
    for thread in threads:
        thread.join(30)
    return exit_code, tally
