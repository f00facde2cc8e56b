"""A gunicorn worker that serves each connection start to end on a thread of its own.

This is the model of Go's net/http, which stdlib-style stands in for: one goroutine per
connection blocks in `read`, parses the request, runs the handler, writes the answer and reads
again. `worker.HeadFirstWorker` (gunicorn's gthread underneath) instead has an event-loop thread
read each request head and queue the connection for a pool thread, which answers it and hands
the socket back to the loop's epoll.

Here the worker's main thread only accepts; every connection gets a thread of its own that does
everything else with blocking calls, so no selector and no hand-off sits on a request's path.
Deadlines are the kernel's (`SO_RCVTIMEO`, `SO_SNDTIMEO`, set per connection), so a blocking
read costs one `recv` and no `poll`. A client gets what it gets from `HeadFirstWorker`
(`limits.py`): an idle kept-alive connection closes after `keepalive`; a head must be complete
`HEAD_TIMEOUT` after its first byte (else 408) and within `HEAD_LIMIT` bytes (else 431);
pipelined requests are answered in order; an unread body that is not already here closes the
connection instead of being waited for. A slow client holds only its own thread. Past
`worker_connections` live connections, a new one is answered 503 and closed. At SIGTERM the
main thread takes what the kernel already queued and closes the listening sockets, and only then
do the connection threads answer with `Connection: close`; the worker exits when the last
connection is gone or after `graceful_timeout`.

It is not stdlib-style's default: measured beside `HeadFirstWorker` and the Go peer, it is no
faster under 50 connections and fails the seed's 15,000, because CPython hands the GIL to
whichever ready thread wakes first (docs/performance.md, "A thread per connection"). Run it with
`GUNICORN_CMD_ARGS="--worker-class stdlib_style.per_connection.ThreadPerConnectionWorker"`.
"""

from __future__ import annotations

import _thread
import errno
import os
import selectors
import socket
import struct
import sys
import threading
import time

from gunicorn import http, util
from gunicorn.workers import base

from .limits import HEAD_LIMIT, HEAD_TIMEOUT, HEAD_TOO_LARGE, LINGER, REQUEST_TIMEOUT, SERVICE_UNAVAILABLE, complete
from .serving import ConnectionParser, SettledConfig, serve_request, unread_body_is_here

# Each connection thread's stack. The kernel backs only the pages a thread touches, so this
# bounds address space (15,000 threads: 3.7 GiB of it), not memory; a request's deepest C stack
# (gunicorn -> Falcon -> the app, or logging a traceback) stays far below it.
STACK_SIZE = 256 * 1024
# An answer that cannot be written for this long (the client stopped reading) ends the connection.
SEND_TIMEOUT = 30.0
RECV_SIZE = 8192


def _timeval(seconds: float) -> bytes:
    # struct timeval; all zero would mean "never time out", so the shortest is a microsecond.
    return struct.pack("ll", *divmod(max(1, round(seconds * 1_000_000)), 1_000_000))


def set_read_deadline(sock: socket.socket, seconds: float) -> None:
    """A blocking `recv` on `sock` fails with EAGAIN after `seconds` without data."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


class ThreadPerConnectionWorker(base.Worker):
    """gunicorn worker: the main thread accepts, each connection has its own thread."""

    @classmethod
    def check_config(cls, cfg, log) -> None:
        name = f"{cls.__module__}.{cls.__name__}"
        if sys.platform != "linux":
            raise RuntimeError(f"{name} needs Linux (its deadlines are SO_RCVTIMEO's): use HeadFirstWorker elsewhere.")
        if cfg.is_ssl:
            raise RuntimeError(f"{name} serves plain HTTP only: remove certfile/keyfile.")
        if cfg.http2_cleartext != "off":
            raise RuntimeError(f"{name} serves HTTP/1.x only: remove http2_cleartext.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settled = SettledConfig(self.cfg)
        self.access_logged = bool(getattr(self.log, "access_log_enabled", True))
        self.connections: set[socket.socket] = set()
        self.listeners_closed = False
        # Sockets refused past worker_connections, lingering for the client's FIN: socket -> deadline.
        self.refused: dict[socket.socket, float] = {}

    def init_process(self) -> None:
        threading.stack_size(STACK_SIZE)
        self.poller = selectors.DefaultSelector()
        super().init_process()

    # -- the main thread: accept, heartbeat, shut down ---------------------------------------

    def run(self) -> None:
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, self.on_wakeup)
        for listener in self.sockets:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, (self.accept, listener.getsockname()))
        while self.alive:
            self.notify()
            self.wait(1.0)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
        self.close_listeners()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while (self.connections or self.refused) and (remaining := deadline - time.monotonic()) > 0:
            self.notify()
            self.wait(min(remaining, 1.0))
        for sock in list(self.connections):
            try:  # wakes a thread blocked in recv, which then closes its connection
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            events = []
        for key, _ in events:
            if isinstance(key.data, tuple):
                accept, address = key.data
                accept(key.fileobj, address)
            else:
                key.data(key.fileobj)
        self.expire_refused()

    def on_wakeup(self, fd: int) -> None:
        """Signal handlers, the reloader and `end_after_this_request` write to the worker's pipe."""
        try:
            os.read(fd, 4096)
        except OSError:
            pass

    def handle_exit(self, sig, frame) -> None:
        # The main loop closes the listening sockets; connection threads answer with
        # `Connection: close` only after that (`listeners_closed`), so a client told to
        # reconnect is refused at once instead of landing in a queue nobody reads.
        self.alive = False

    def end_after_this_request(self) -> None:
        """max_requests reached, on a connection's thread: wake the main loop to shut down."""
        self.alive = False
        try:
            os.write(self.PIPE[1], b".")
        except OSError:
            pass

    def accept(self, listener: socket.socket, address) -> None:
        """Take every connection the kernel has queued on `listener`."""
        while True:
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self.log.error("Out of file descriptors accepting a connection: raise the open-file limit.")
                    return
                if error.errno in (errno.EBADF, errno.EINVAL):  # closed by close_listeners
                    return
                raise
            if len(self.connections) >= self.cfg.worker_connections:
                self.refuse(sock)
                continue
            sock.setblocking(True)
            self.connections.add(sock)
            try:
                # _thread, not threading.Thread: Thread.start() waits until the new thread runs,
                # and with thousands of threads wanting the GIL that stalls every accept.
                _thread.start_new_thread(self.serve, (sock, client, address))
            except RuntimeError:  # "can't start new thread": the OS's thread or memory limit
                self.connections.discard(sock)
                self.log.error("Cannot start a thread for a new connection (the OS refused one): answered 503.")
                self.refuse(sock)

    def refuse(self, sock: socket.socket) -> None:
        """Answer 503 at once and close, lingering on the selector for the client's FIN (closing
        on unread bytes would reset the connection and could destroy the answer)."""
        try:
            sock.setblocking(False)
            sock.send(SERVICE_UNAVAILABLE)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self.on_refused_readable)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.refused[sock] = time.monotonic() + LINGER

    def on_refused_readable(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.drop_refused(sock)

    def expire_refused(self) -> None:
        if self.refused:
            now = time.monotonic()
            for sock in [s for s, deadline in self.refused.items() if deadline <= now]:
                self.drop_refused(sock)

    def drop_refused(self, sock: socket.socket) -> None:
        self.poller.unregister(sock)
        del self.refused[sock]
        util.close(sock)

    def close_listeners(self) -> None:
        """Take every connection the kernel already queued, then close the listening sockets.

        Left open, the kernel would go on completing handshakes nobody reads, and those clients
        would get a reset when the worker exits; once closed, new clients are refused before
        they send anything.
        """
        if self.listeners_closed:
            return
        for listener in self.sockets:
            try:
                self.accept(listener, listener.getsockname())
                self.poller.unregister(listener)
            except (OSError, KeyError, ValueError):
                pass
            util.close(listener)
        self.listeners_closed = True

    # -- a connection's thread ---------------------------------------------------------------

    def serve(self, sock: socket.socket, client, server) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(SEND_TIMEOUT))
            set_read_deadline(sock, self.idle_timeout())
            parser = ConnectionParser(self.settled, sock, client)
            read_ahead = b""
            while True:
                head = self.read_head(sock, read_ahead)
                if head is None:
                    break
                parser.unreader.unread(head)
                if not self.handle(parser, sock, client, server):
                    util.close_graceful(sock, timeout=LINGER)
                    break
                # Requests the client pipelined behind this one, already read off the socket.
                read_ahead = parser.unreader.take_buffered()
        except BaseException:  # nothing may leave a connection's thread unlogged
            self.log.exception("Error serving a connection")
        finally:
            self.connections.discard(sock)
            util.close(sock)

    def idle_timeout(self) -> float:
        return self.cfg.keepalive or HEAD_TIMEOUT

    def read_head(self, sock: socket.socket, data: bytes) -> bytes | None:
        """Bytes holding one complete request head (and whatever followed it), or None when the
        connection is over: closed by the client, idle past `keepalive`, or answered 408/431."""
        if complete(data):
            return data
        deadline = None
        if data:  # part of a pipelined head: its deadline runs from now
            deadline = time.monotonic() + HEAD_TIMEOUT
            set_read_deadline(sock, HEAD_TIMEOUT)
        while True:
            try:
                chunk = sock.recv(RECV_SIZE)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                if data:
                    self.answer_and_close(sock, REQUEST_TIMEOUT)
                return None
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            if complete(data):
                if deadline is not None:
                    set_read_deadline(sock, self.idle_timeout())
                return data
            if len(data) > HEAD_LIMIT:
                self.answer_and_close(sock, HEAD_TOO_LARGE)
                return None
            now = time.monotonic()
            if deadline is None:  # the head's deadline runs from its first byte
                deadline = now + HEAD_TIMEOUT
            elif deadline <= now:
                self.answer_and_close(sock, REQUEST_TIMEOUT)
                return None
            set_read_deadline(sock, deadline - now)

    def answer_and_close(self, sock: socket.socket, answer: bytes) -> None:
        try:
            sock.sendall(answer)
        except OSError:
            return
        util.close_graceful(sock, timeout=LINGER)

    def handle(self, parser, sock: socket.socket, client, server) -> bool:
        """Parse and answer one request whose head is buffered; True to keep the connection.

        The exceptions and what each does are gthread's (`ThreadWorker.handle`).
        """
        req = None
        try:
            req = next(parser)
            if not req:
                return False
            return serve_request(self, req, sock, client, server) and unread_body_is_here(parser)
        except http.errors.NoMoreData as error:
            self.log.debug("Ignored premature client disconnection. %s", error)
        except StopIteration as error:
            self.log.debug("Closing connection. %s", error)
        except OSError as error:
            if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EAGAIN):
                self.log.debug("Ignoring a connection that ended: %s", error)
            else:
                self.log.exception("Socket error processing request.")
        except Exception as error:
            self.handle_error(req, sock, client, error)
        return False
