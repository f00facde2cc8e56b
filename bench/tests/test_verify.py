"""A server that answers wrongly is refused with one line saying why."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.verify import check_vectors, verify


def impostor(source: str, constant_hash: bool = False):
    """A loopback HTTP server that imitates the contract, wrong in one chosen way."""
    counter = iter(range(10**9))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            if self.path == "/health":
                body, kind = b"OK", "text/plain"
            else:
                n = 0 if constant_hash else next(counter)
                payload = {"hash": f"{n:064x}", "timestamp": int(time.time() * 1000), "source": source}
                body, kind = json.dumps(payload).encode(), "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
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


def test_both_hash_cores_give_the_known_answers():
    check_vectors("stdlib-style")
    check_vectors("async-style")


def test_a_correct_imitation_passes(serve):
    assert verify("async-style", serve(source="async-style"))["ok"]


def test_the_wrong_source_is_refused_naming_the_check(serve):
    verdict = verify("async-style", serve(source="stdlib-style"))
    assert not verdict["ok"]
    assert "payload[\"source\"] == source" in verdict["reason"] and "\n" not in verdict["reason"]


def test_a_constant_hash_is_refused(serve):
    verdict = verify("stdlib-style", serve(source="stdlib-style", constant_hash=True))
    assert not verdict["ok"] and "distinct hash" in verdict["reason"]


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
