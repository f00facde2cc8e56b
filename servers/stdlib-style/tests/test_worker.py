"""RequestThreads, the worker's pool, against a stand-in worker (the servers' black-box tests in
servers/tests run it under gunicorn)."""

from __future__ import annotations

import queue
import threading

from stdlib_style.worker import RequestThreads


class StandInWorker:
    """Records what the pool does: `handle` on a pool thread, then `rearm` there for a kept
    connection or `finish_request` through `defer` (on the event loop) for one that ends."""

    def __init__(self, outcome) -> None:
        self.outcome = outcome
        self.handled: list[tuple[str, str]] = []
        self.deferred: queue.SimpleQueue = queue.SimpleQueue()
        self.method_queue = self
        self.log = self
        self.logged: list[str] = []

    def handle(self, conn):
        self.handled.append((conn, threading.current_thread().name))
        return self.outcome(conn)

    def defer(self, callback, *args):
        self.deferred.put((callback, args))

    def finish_request(self, conn, keepalive):
        pass

    def rearm(self, conn):
        self.deferred.put((self.rearm, (conn, threading.current_thread().name)))

    def exception(self, message):
        self.logged.append(message)


def test_a_kept_connection_is_rearmed_on_its_pool_thread_and_an_ended_one_goes_to_the_loop():
    worker = StandInWorker(lambda conn: conn != "close-me")
    pool = RequestThreads(worker, 3)
    for conn in ("a", "close-me", "b"):
        pool.submit(conn)
    outcomes = {}
    for _ in range(3):
        callback, (conn, detail) = worker.deferred.get(timeout=10)
        outcomes[conn] = (callback, detail)
    pool.shutdown(wait=True)
    assert outcomes["close-me"] == (worker.finish_request, False)
    handled_on = dict(worker.handled)
    for conn in ("a", "b"):
        assert outcomes[conn] == (worker.rearm, handled_on[conn]), "re-armed by the thread that answered"
    assert set(handled_on.values()) <= {"request-0", "request-1", "request-2"}
    assert not any(thread.is_alive() for thread in pool.threads)


def test_an_escaping_exception_closes_that_connection_and_the_thread_serves_on():
    def outcome(conn):
        if conn == "boom":
            raise SystemExit("raised by an app")
        return True

    worker = StandInWorker(outcome)
    pool = RequestThreads(worker, 1)
    pool.submit("boom")
    pool.submit("next")
    results = [worker.deferred.get(timeout=10) for _ in range(2)]
    pool.shutdown(wait=True)
    assert results == [(worker.finish_request, ("boom", False)), (worker.rearm, ("next", "request-0"))]
    assert worker.logged == ["Error handling request"]
