"""One request through gunicorn's parser, WSGI environ and Response, as both of stdlib-style's
workers serve it (worker.HeadFirstWorker and per_connection.ThreadPerConnectionWorker).

It is gthread's `handle_request` with three costs taken out, each through an extension point
gunicorn has, none changing what a client or the app sees. Measured in process (one thread, a
socketpair, `GET /hash` through the worker's own path, best of 15 alternating batches of 1,000):

- `SettledConfig`: every request read 25 settings through `Config.__getattr__`; read once per
  worker instead: 98 -> 83 us per request;
- `ConnectionParser`: gunicorn parses the peer's address with `ipaddress` on every request to
  check it against `forwarded_allow_ips`; the answer is the same for every request of one
  connection, so it is kept there: 83 -> 77 us;
- `GatheredResponse`: gunicorn sends the head and each body chunk with a `sendall` of its own;
  gathered, the answer leaves in one. Under `wrk -c50` beside the Go peer (5 alternating
  rounds, medians of server CPU per request): HeadFirstWorker 182 -> 167 us.
"""

from __future__ import annotations

from datetime import datetime

from gunicorn.config import Config
from gunicorn.http.body import LengthReader
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import Response, create

# A response larger than this leaves in pieces, as the app produces it.
GATHER_LIMIT = 64 * 1024


class SettledConfig:
    """A worker's gunicorn Config with each setting read once: plain attributes instead of
    `Config.__getattr__` on every access. Config does not change during a worker's life (a
    reload starts new workers); anything else (properties, methods) is looked up once too."""

    def __init__(self, cfg: Config) -> None:
        self.__dict__["_cfg"] = cfg
        for name in cfg.settings:
            # Through Config itself: some names are properties of its own (worker_class, env, ...).
            self.__dict__[name] = getattr(cfg, name)

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)
        self.__dict__[name] = value
        return value


class ConnectionRequest(Request):
    def _peer_is_trusted_proxy(self) -> bool:
        # The peer of a connection does not change between its requests.
        trusted = self.unreader.peer_trusted
        if trusted is None:
            trusted = self.unreader.peer_trusted = super()._peer_is_trusted_proxy()
        return trusted


class ConnectionParser(RequestParser):
    """gunicorn's HTTP/1.x parser for one connection, which decides once whether its peer may
    set forwarding headers (`forwarded_allow_ips`)."""

    mesg_class = ConnectionRequest

    def __init__(self, cfg, sock, client) -> None:
        super().__init__(cfg, sock, client)
        self.unreader.peer_trusted = None


class Outbox:
    """What a GatheredResponse writes to: its bytes gather here and leave in one `sendall`."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.parts: list[bytes] = []
        self.size = 0
        self.sent = False  # whether any byte has left

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size > GATHER_LIMIT:
            self.flush()

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        self.flush()
        self.sent = True
        return self.sock.sendfile(file, offset, count)

    def flush(self) -> None:
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.size = 0
            self.sent = True
            self.sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class GatheredResponse(Response):
    """gunicorn's Response, its head and body gathered and sent together when it closes."""

    def __init__(self, req, sock, cfg) -> None:
        super().__init__(req, Outbox(sock), cfg)

    def close(self) -> None:
        super().close()
        self.sock.flush()


def serve_request(worker, req, sock, client, server) -> bool:
    """Run the WSGI app for `req` and answer it on `sock`; True to keep the connection.

    gthread's handle_request (gunicorn 26.2) but for the levers above, and the connection is
    told to close once the worker's listening sockets are (`worker.listeners_closed`), not
    before: a client told earlier reconnects into a queue nobody will read.
    """
    cfg = worker.settled
    environ: dict = {}
    resp = None
    try:
        cfg.pre_request(worker, req)
        started = datetime.now() if worker.access_logged else None
        resp, environ = create(req, sock, client, server, cfg, GatheredResponse)
        environ["wsgi.multithread"] = True
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.end_after_this_request()
        if worker.listeners_closed or not cfg.keepalive or worker.nr >= worker.max_requests:
            resp.force_close()
        respiter = worker.wsgi(environ, resp.start_response)
        try:
            if isinstance(respiter, environ["wsgi.file_wrapper"]):
                resp.write_file(respiter)
            else:
                for item in respiter:
                    resp.write(item)
            resp.close()
        finally:
            if started is not None:
                worker.log.access(resp, req, environ, datetime.now() - started)
            if hasattr(respiter, "close"):
                respiter.close()
        return not resp.should_close()
    except OSError:
        raise
    except Exception:
        if resp is not None and resp.sock.sent:
            # The answer has begun: closing the connection is the only way left to say so.
            # (Bytes only gathered are dropped, and the worker answers 500 instead.)
            worker.log.exception("Error handling request")
            raise StopIteration() from None
        raise
    finally:
        try:
            cfg.post_request(worker, req, environ, resp)
        except Exception:
            worker.log.exception("Exception in post_request hook")


def unread_body_is_here(parser) -> bool:
    """Whether the body the app left unread is already here (and now drained).

    gthread waits up to 5 s on a thread for a body the app did not read; a client that
    announces a body and never sends it would hold the thread that long. Read without
    blocking, a body that is not there closes the connection instead.
    """
    body = getattr(parser.mesg, "body", None)
    if isinstance(getattr(body, "reader", None), LengthReader) and body.reader.length == 0:
        return True  # nothing left to drain (every GET): skip the syscalls below
    sock = parser.unreader.sock
    sock.setblocking(False)
    try:
        return bool(parser.finish_body(max_bytes=64 * 1024))
    except (BlockingIOError, InterruptedError):
        return False
    finally:
        sock.setblocking(True)
