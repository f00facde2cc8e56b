"""gunicorn's gthread worker, changed so that a thread only ever gets a complete request head.

Stock gthread (gunicorn 26.2, `gunicorn/workers/gthread.py`) hands a connection to a pool
thread as soon as it is readable; the thread then reads the head with a blocking socket and no
deadline. Measured here with `threads = 4` (servers/tests/test_reliability.py):

- a client trickling header bytes holds a thread for as long as it likes, so as many such
  clients as there are threads starve the worker (200 of them stopped it answering anyone);
- a new connection holds a thread for up to 5 s waiting for its first byte, and a request whose
  announced body never comes holds one for 5 s after its answer: 200 silent connections, or 200
  such requests, left ordinary requests unanswered for minutes;
- after a request, a keep-alive connection is parked until its socket is readable again, so
  requests the client pipelined behind the first one, already read into the parser's buffer,
  are never answered (the client waits for the keep-alive timeout);
- a connection that ends with a graceful close (`Connection: close`, an error answer) lingers up
  to 2 s on the main thread, waiting for the client to close its side; a client that never
  does stalls every connection of the worker for those 2 s.

This worker keeps gthread's model (one event-loop thread that accepts and parks connections, a
pool of threads that run the WSGI app) and moves the waiting onto the event loop: it reads the
head without blocking until `\\r\\n\\r\\n` arrives, hands the thread the buffered bytes, serves
pipelined requests in order from the buffer, closes a connection whose unread body is not there
yet instead of waiting for it, and lingers on closing sockets without blocking. At SIGTERM it
takes the connections the kernel already queued before it closes the listening socket.
A head that is not complete `HEAD_TIMEOUT` seconds after its first byte gets a 408, one larger
than `HEAD_LIMIT` a 431; both then close. Past `worker_connections` live connections a new one
is answered 503 and closed, where gthread stops accepting and leaves it waiting unanswered in the
kernel's queue. Its pool threads take connections from a plain queue instead of a
`ThreadPoolExecutor` (`RequestThreads`), run each request through `serving.py`, and give a
kept-alive connection back to the event loop themselves, through a one-shot epoll (`rearm`),
instead of waking the loop to unregister and register its socket: all cheaper per request.

It is stdlib-style's default, measured against a worker in Go's own model, a thread per
connection (`per_connection.py`): as fast under 50 connections, and the only one of the two
that answers the seed's 15,000 within 10 s (docs/performance.md, "A thread per connection").
"""

from __future__ import annotations

import errno
import queue
import select
import selectors
import socket
import sys
import threading
import time
from collections import OrderedDict
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from .limits import HEAD_LIMIT, HEAD_TIMEOUT, HEAD_TOO_LARGE, LINGER, REQUEST_TIMEOUT, SERVICE_UNAVAILABLE, complete
from .serving import ConnectionParser, SettledConfig, serve_request, unread_body_is_here


ONE_READ = select.EPOLLIN | select.EPOLLONESHOT


class HeadConn(TConn):
    """A gthread connection that carries the bytes the event loop read ahead of its thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head = b""

    def init(self) -> None:
        if not self.initialized:
            # Set here, gthread's TConn.init skips its TLS and HTTP/2 paths (check_config
            # refuses both).
            self.parser = ConnectionParser(self.cfg, self.sock, self.client)
            super().init()
            self.hand_over()

    def hand_over(self) -> None:
        """Give the read-ahead bytes to the parser, which reads them before the socket."""
        if self.head:
            self.parser.unreader.unread(self.head)
            self.head = b""


class RequestThreads:
    """gthread's pool of request threads, fed through a C `queue.SimpleQueue`.

    gthread's `ThreadPoolExecutor` costs every request a `Future` (with its `Condition`), a
    work item and a done-callback before the event loop hears back; here a thread takes the
    connection off the queue, runs it and queues the outcome for the event loop itself.
    Measured (one worker on CPU 0, `wrk -t1 -c50` on CPU 1, alternating rounds beside the Go
    peer, medians of server CPU per request): stdlib-style 410 -> 333 us over 8 rounds (0.16x ->
    0.20x of the Go peer's req/s); gunicorn serving a raw WSGI callable 284 -> 256 us over 6.
    """

    def __init__(self, worker: HeadFirstWorker, size: int) -> None:
        self.jobs: queue.SimpleQueue[HeadConn | None] = queue.SimpleQueue()
        # Daemons, as the worker must exit when its graceful timeout is over, not when a stuck
        # request ends (the executor's threads were joined at exit).
        self.threads = [
            threading.Thread(target=self.serve, args=(worker,), name=f"request-{n}", daemon=True) for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, conn: HeadConn) -> None:
        self.jobs.put(conn)

    def serve(self, worker: HeadFirstWorker) -> None:
        handle, rearm, defer, finish = worker.handle, worker.rearm, worker.method_queue.defer, worker.finish_request
        while (conn := self.jobs.get()) is not None:
            try:
                keepalive = handle(conn)  # gthread's handle answers and logs the app's errors
            except BaseException:
                worker.log.exception("Error handling request")
                keepalive = False
            if keepalive is True:
                try:
                    rearm(conn)
                    continue
                except (OSError, ValueError):  # the worker's epoll is closed: it is exiting
                    keepalive = False
            defer(finish, conn, keepalive)

    def shutdown(self, wait: bool = True, **_: object) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        if wait:
            for thread in self.threads:
                thread.join()


class HeadFirstWorker(ThreadWorker):
    """gthread with request heads read on the event loop; see the module docstring."""

    @classmethod
    def check_config(cls, cfg, log) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            # The event loop reads heads off the raw socket; TLS ends before the pod.
            raise RuntimeError("stdlib_style.worker.HeadFirstWorker serves plain HTTP only: remove certfile/keyfile.")
        if cfg.http2_cleartext != "off":
            raise RuntimeError("stdlib_style.worker.HeadFirstWorker serves HTTP/1.x only: remove http2_cleartext.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Insertion order is deadline order (each table has one timeout), so expiry looks only
        # at the front; deleting from the middle is O(1), unlike gthread's deque.remove.
        self.idle: OrderedDict[HeadConn, float] = OrderedDict()  # no byte of the next head yet
        self.reading: OrderedDict[HeadConn, float] = OrderedDict()  # part of a head
        self.closing: OrderedDict[HeadConn, float] = OrderedDict()  # our FIN sent, awaiting theirs
        self.listeners_closed = False
        self.settled = SettledConfig(self.cfg)
        self.access_logged = bool(getattr(self.log, "access_log_enabled", True))
        # gthread's loop stops accepting at worker_connections and leaves further clients in the
        # kernel's queue, unanswered; this worker goes on accepting and answers them 503 (accept).
        self.connection_limit, self.worker_connections = self.worker_connections, sys.maxsize

    def run(self) -> None:
        # Connections waiting for a head, one-shot: an event disarms its socket, so nothing is
        # unregistered per request, and a pool thread re-arms it after the answer (rearm)
        # without waking the event loop. gthread's selector watches this epoll's own descriptor.
        self.heads = select.epoll()
        self.by_fd: dict[int, HeadConn] = {}
        self.rearmed: queue.SimpleQueue[HeadConn] = queue.SimpleQueue()
        self.poller.register(self.heads, selectors.EVENT_READ, self.on_heads)
        try:
            super().run()
        finally:
            self.heads.close()

    def get_thread_pool(self) -> RequestThreads:
        return RequestThreads(self, self.cfg.threads)

    def enqueue_req(self, conn: HeadConn) -> None:
        self.tpool.submit(conn)

    # -- accepting -------------------------------------------------------------------------

    def accept(self, listener) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = HeadConn(self.settled, client, address, listener.getsockname())
        if self.nr_conns - len(self.closing) > self.connection_limit:
            self.answer_and_close(conn, SERVICE_UNAVAILABLE)
        else:
            self.await_head(conn)

    def handle_exit(self, sig, frame) -> None:
        """SIGTERM: shut down from the event loop (`shut_down`), not from the signal handler.

        gthread's handler clears `alive` at once, and from then on the pool threads answer with
        `Connection: close` while the listening socket is still open: their clients reconnect
        into the kernel's accept queue, and whoever lands there between the last accept and
        the close gets a reset after sending a request (2 runs in 8 of
        test_sigterm_under_load_fails_no_request_in_flight).
        """
        self.method_queue.defer(self.shut_down)

    def end_after_this_request(self) -> None:
        """max_requests reached, on a pool thread: shut down from the event loop."""
        self.method_queue.defer(self.shut_down)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            self.close_listeners()  # the worker ends for another reason (max_requests, its parent gone)

    def shut_down(self) -> None:
        """Close the listening socket, then let the pool threads close connections after answering."""
        if self.alive:
            self.set_accept_enabled(False)
            self.close_listeners()
            self.alive = False

    def close_listeners(self) -> None:
        """At shutdown, take every connection the kernel already queued, then close the socket.

        gthread stops accepting but keeps the listening socket open until the worker exits, so
        the kernel goes on completing handshakes: those clients send a request that nobody
        reads and get a reset when the worker ends. Accepted here, they are answered (with
        `Connection: close`); after the close, new clients are refused before they send.
        Nothing is told to reconnect before then (`handle_exit`), so none lands in between.
        """
        if self.listeners_closed:
            return
        for listener in self.sockets:
            try:
                listener.setblocking(False)
                while True:
                    before = self.nr_conns
                    self.accept(listener)
                    if self.nr_conns == before:
                        break
            except OSError:
                pass
            listener.close()
        # Only now may answers say `Connection: close` (serving.serve_request).
        self.listeners_closed = True

    # -- reading heads on the event loop ----------------------------------------------------

    def await_head(self, conn: HeadConn) -> None:
        """On the event loop: wait for (the rest of) `conn`'s next head."""
        conn.sock.setblocking(False)
        self.track(conn)
        fd = conn.sock.fileno()
        if fd in self.by_fd:
            self.heads.modify(fd, ONE_READ)
        else:
            self.by_fd[fd] = conn
            self.heads.register(fd, ONE_READ)

    def track(self, conn: HeadConn) -> None:
        """Give `conn` its deadline: a head begun runs from now, an idle connection for `keepalive`."""
        if conn.head:
            self.reading[conn] = time.monotonic() + HEAD_TIMEOUT
        else:
            self.idle[conn] = time.monotonic() + self.cfg.keepalive

    def rearm(self, conn: HeadConn) -> None:
        """On a pool thread, after a kept-alive answer: wait for the next head without waking the
        event loop (gthread defers to it, which unregistered and now registers the socket again).
        Measured beside the Go peer (wrk -c50, 8 alternating rounds, medians): 120 -> 115 us of
        CPU per request, 0.296 -> 0.316 of the Go peer's req/s.

        The loop learns of the connection from `rearmed` before it can see an event for it: it
        drains the queue after each poll (`on_heads`), and this thread queues before it re-arms.
        """
        if complete(conn.head):
            self.dispatch(conn)  # pipelined: the next request is already here
            return
        conn.sock.setblocking(False)
        self.rearmed.put(conn)
        self.heads.modify(conn.sock.fileno(), ONE_READ)

    def take_rearmed(self) -> None:
        while True:
            try:
                self.track(self.rearmed.get_nowait())
            except queue.Empty:
                return

    def on_heads(self, _) -> None:
        events = self.heads.poll(0)
        self.take_rearmed()
        for fd, _ in events:
            if (conn := self.by_fd.get(fd)) is not None:
                self.on_head_readable(conn)

    def on_head_readable(self, conn: HeadConn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            self.heads.modify(conn.sock.fileno(), ONE_READ)
            return
        except OSError:
            data = b""
        if not data:
            self.forget(conn)
            self.drop(conn)
            return
        head = conn.head + data if conn.head else data
        conn.head = head
        if complete(head):
            self.forget(conn)
            self.dispatch(conn)
            return
        if len(head) > HEAD_LIMIT:
            self.forget(conn)
            self.answer_and_close(conn, HEAD_TOO_LARGE)
            return
        if conn in self.idle:
            # The head's deadline runs from its first byte.
            del self.idle[conn]
            self.reading[conn] = time.monotonic() + HEAD_TIMEOUT
        self.heads.modify(conn.sock.fileno(), ONE_READ)

    def dispatch(self, conn: HeadConn) -> None:
        # The thread must not wait for readability again: the head is already here.
        conn.data_ready = True
        if conn.parser is not None:
            conn.hand_over()
        self.enqueue_req(conn)

    def forget(self, conn: HeadConn) -> None:
        """`conn` leaves the deadline tables (its one-shot event has disarmed it already)."""
        self.idle.pop(conn, None)
        self.reading.pop(conn, None)

    # -- after a request ---------------------------------------------------------------------

    def handle_request(self, req, conn: HeadConn) -> bool:
        return serve_request(self, req, conn.sock, conn.client, conn.server)

    def handle(self, conn: HeadConn):
        keepalive = super().handle(conn)
        if keepalive is True and conn.parser is not None and not conn.is_http2:
            # Pipelined requests the parser already read off the socket come back to the
            # event loop as read-ahead, so they are served next, in order, without a read.
            conn.head = conn.parser.unreader.take_buffered()
        return keepalive

    def _keepalive_after(self, conn: HeadConn, keepalive: bool) -> bool:
        """Keep the connection only if the unread body is already here (serving.py says why)."""
        return keepalive and unread_body_is_here(conn.parser)

    def finish_request(self, conn: HeadConn, keepalive: object) -> None:
        """On the event loop, for a connection `handle` did not keep (RequestThreads.serve).

        gthread's other outcomes (TLS, HTTP/2, its deferral when no data came) cannot occur:
        check_config refuses the first two, and heads arrive whole before a thread sees them.
        """
        self.close_gracefully(conn)

    # -- closing -----------------------------------------------------------------------------

    def answer_and_close(self, conn: HeadConn, answer: bytes) -> None:
        try:
            conn.sock.send(answer)
        except OSError:
            pass
        self.close_gracefully(conn)

    def close_gracefully(self, conn: HeadConn) -> None:
        """gunicorn's close_graceful (FIN, then read until the client's FIN), without blocking.

        Closing with unread request bytes in the kernel makes it send a reset, which can destroy
        the answer just written; reading them first lets the answer arrive.
        """
        fd = conn.sock.fileno()
        if self.by_fd.pop(fd, None) is not None:
            self.heads.unregister(fd)  # its reads are the closing table's now
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_closing_readable, conn))
        except (OSError, ValueError, KeyError):
            self.drop(conn)
            return
        self.closing[conn] = time.monotonic() + LINGER

    def on_closing_readable(self, conn: HeadConn, client) -> None:
        try:
            if client.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.poller.unregister(client)
        del self.closing[conn]
        self.drop(conn)

    def drop(self, conn: HeadConn) -> None:
        self.nr_conns -= 1
        self.by_fd.pop(conn.sock.fileno(), None)
        conn.close()  # closing the descriptor takes it out of `heads`

    # -- deadlines: gthread's loop calls these about once a second ----------------------------

    def murder_keepalived(self) -> None:
        self.take_rearmed()
        now = time.monotonic()
        for table, expire in (
            (self.idle, self.drop),
            (self.reading, partial(self.answer_and_close, answer=REQUEST_TIMEOUT)),
            (self.closing, self.drop),
        ):
            while table:
                conn, deadline = next(iter(table.items()))
                if deadline > now:
                    break
                del table[conn]
                try:
                    self.poller.unregister(conn.sock)
                except (OSError, KeyError, ValueError):
                    pass
                expire(conn)

    def murder_pending(self) -> None:
        """Nothing is ever deferred: gthread's pending table stays empty."""

