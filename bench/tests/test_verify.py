"""A server that answers wrongly is refused with one line saying why."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contextlib import contextmanager
import hashlib
import os

from bench.verify import WORK_FLOOR_NS, check_known_answers, verify
from servers import registry
from servers.process import stand_in


def impostor(source: str, constant_hash: bool = False, wrong_every: int = 0):
    """A loopback HTTP server that imitates the contract, wrong in one chosen way."""
    counter = iter(range(1, 10**9))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            if self.path == "/health":
                body, kind = b"OK", "text/plain"
            else:
                n = 0 if constant_hash else next(counter)
                wrong = wrong_every and n % wrong_every == 0
                payload = {"hash": f"{n:064x}", "timestamp": int(time.time() * 1000), "source": "nobody" if wrong else source}
                body, kind = json.dumps(payload).encode(), "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("cache-control", "no-store")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.send_response(405)
            self.send_header("allow", "GET, HEAD")
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs):
        servers.append(impostor(**kwargs))
        return servers[-1].server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("server", registry.names())
def test_every_servers_hash_code_gives_the_known_answers(server):
    check_known_answers(server)


def test_an_imitation_of_the_contract_passes_the_http_checks_alone(serve):
    # Its hashes are counter values: the work check (below, and in every bench-local run) refuses it.
    assert verify("async-style", serve(source="async-style"))["ok"]


def test_the_wrong_source_is_refused_naming_the_check(serve):
    verdict = verify("async-style", serve(source="stdlib-style"))
    assert not verdict["ok"]
    assert "payload[\"source\"] == source" in verdict["reason"] and "\n" not in verdict["reason"]


def test_a_constant_hash_is_refused(serve):
    verdict = verify("stdlib-style", serve(source="stdlib-style", constant_hash=True))
    assert not verdict["ok"] and "distinct hash" in verdict["reason"]


def test_a_server_wrong_in_one_answer_of_100_is_refused(serve):
    verdict = verify("async-style", serve(source="async-style", wrong_every=100))
    assert not verdict["ok"] and "of 200 on one connection was wrong" in verdict["reason"], verdict


def test_nothing_listening_is_refused(free_port):
    verdict = verify("async-style", free_port)
    assert not verdict["ok"] and "ConnectionRefusedError" in verdict["reason"]


def test_a_server_that_does_not_start_is_refused_before_any_load(tmp_path):
    from bench.local import Plan, verify_all

    # WORKERS=0 makes the server's settings stop it at start with one line.
    plan = Plan(["async-style"], "quick", 1, "0", [0], [0], "k6-unused", tmp_path)
    plan.logs.mkdir()
    summary = {"servers": {}}
    assert verify_all(plan, summary) == []
    reason = summary["servers"]["async-style"]["verification"]["reason"]
    assert reason.startswith("it did not start: async-style: WORKERS") and "\n" not in reason


def in_process(hashes: bool):
    """A starter for the work check: this process answers /hash, hashing HASH_ITERATIONS rounds or
    (an impostor) answering hex without hashing at all; the CPU measured is this process's."""

    @contextmanager
    def start(env):
        rounds = int(env["HASH_ITERATIONS"])

        def answer(path):
            digest = hashlib.sha256(b"input-%d" % time.time_ns()).digest()
            for _ in range(rounds - 1 if hashes else 0):
                digest = hashlib.sha256(digest).digest()
            body = json.dumps({"hash": digest.hex(), "timestamp": int(time.time() * 1000), "source": "x"}).encode()
            return 200, {"Content-Type": "application/json"}, body

        with stand_in(answer) as address:
            yield int(address.rpartition(":")[2]), os.getpid()

    return start


def test_a_server_that_answers_without_hashing_is_refused_for_its_work(serve):
    verdict = verify("async-style", serve(source="async-style"), start=in_process(hashes=False))
    assert not verdict["ok"] and verdict["reason"].startswith("the work (CPU per request at 1 and 30,000 hash rounds) failed: "
                                                              "it does not do the work:"), verdict
    assert f"the floor is {WORK_FLOOR_NS:.0f}" in verdict["reason"] and "\n" not in verdict["reason"]


def test_a_server_that_hashes_passes_the_work_check_and_says_what_it_measured(serve):
    verdict = verify("async-style", serve(source="async-style"), start=in_process(hashes=True))
    assert verdict["ok"], verdict
    assert "µs of CPU per request at 1 round" in verdict["reason"]
