"""Reliability: hostile input, slow clients, pipelining, the seed's 15,000 connections, SIGTERM
under load and memory, against each server under its real runner (one worker, loopback only),
the reference servers included, so each stand-in is held to what it stands for. A server's other
runners (server.yaml `runners:`, e.g. stdlib-style on a thread per connection) are held to the
same answers, except the 15,000 connections, which are each server's own.

docs/reliability.md tabulates what each server does for each attack.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from servers import registry
from servers.contract import SERVERS, check_hash
from servers.memory import measure
from servers.process import RUNNERS, free_port, running, serve_command
from servers.tests.hostile import Attack, get, send_raw, sigterm_under_load
from servers.wrk import parse_wrk, room_for_connections

HOST = b"Host: bench\r\n"
# A malformed request must be answered or hung up on within this; both servers take milliseconds.
PROMPT = 5.0
# How long each server gives a request head before it hangs up (server.yaml head_timeout_s; each
# server's own tests hold it equal to its runner's setting).
HEAD_TIMEOUT = {name: registry.get(name).head_timeout_s for name in SERVERS}


class Served:
    def __init__(self, server: str, port: int, runner, log: Path) -> None:
        self.server, self.port, self.runner, self.log = server, port, runner, log
        self.workers = self.worker_pids()

    def worker_pids(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.runner.process.pid).children(recursive=True)}

    def assert_unharmed(self) -> None:
        """Still answering, with the same processes (a crashed worker would be respawned) and no
        traceback in the log (an unhandled error)."""
        status, _ = get(self.port, timeout=10)
        assert status == 200, f"{self.server} stopped answering /health"
        assert self.runner.process.poll() is None, f"{self.server} exited"
        assert self.worker_pids() == self.workers, f"{self.server} lost a worker; see {self.log}"
        assert "Traceback" not in self.log.read_text(errors="replace"), f"unhandled error in {self.log}"


@pytest.fixture(scope="module", params=RUNNERS)
def served(request, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp(request.param) / "log"
    server = RUNNERS[request.param][0]
    with running(serve_command(server, port, workers=1), port, log, env=RUNNERS[request.param][1]) as runner:
        yield Served(server, port, runner, log)


# -- malformed requests ----------------------------------------------------------------------

# name -> (payload, answers a server may give before it must close: the smuggled /health
# requests hide behind conflicting lengths and must never be answered).
MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "request line without version": b"GET /health\r\n\r\n",
    "unknown HTTP version": b"GET /health HTTP/9.9\r\n" + HOST + b"\r\n",
    "space inside the target": b"GET /hea lth HTTP/1.1\r\n" + HOST + b"\r\n",
    "invalid method token": b"G@T /health HTTP/1.1\r\n" + HOST + b"\r\n",
    "unknown method": b"BREW /hash HTTP/1.1\r\n" + HOST + b"\r\n",
    "100 KB target": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "1 MB header": b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    "2,000 headers": b"GET /health HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(2000)) + b"\r\n",
    "Content-Length and Transfer-Encoding": b"POST /hash HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "two different Content-Lengths": b"POST /hash HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 0\r\nContent-Length: 41\r\n\r\nGET /health HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "negative Content-Length": b"POST /hash HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
    "unknown Transfer-Encoding": b"POST /hash HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: foo\r\n\r\n",
    "NUL in a header value": b"GET /health HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
    "space in a header name": b"GET /health HTTP/1.1\r\n" + HOST + b"X A: b\r\n\r\n",
    "obsolete line folding": b"GET /health HTTP/1.1\r\n" + HOST + b"X-A: a\r\n b\r\n\r\n",
    "non-ASCII bytes": b"\xff\xfe\x80\x81 /\xc3\x28 HTTP/1.1\r\n" + HOST + b"\r\n",
    "a TLS ClientHello": bytes.fromhex("16030100a5010000a10303") + bytes(range(256)) + b"\r\n\r\n",
}


# Conflicting lengths hide a second request (GET /health) in what one reading calls a body.
SMUGGLING = {"Content-Length and Transfer-Encoding", "two different Content-Lengths"}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_request_gets_a_4xx_or_a_close(served, name):
    # For the smuggling cases, wait for a second answer: there must not be one.
    expect = 2 if name in SMUGGLING else 1
    exchange = send_raw(served.port, MALFORMED[name], expect=expect, timeout=PROMPT)
    assert exchange.responses or exchange.closed, f"{name}: no answer and no close within {PROMPT:.0f} s"
    assert all(400 <= status < 500 for status in exchange.statuses), f"{name}: answered {exchange.statuses}"
    if name in SMUGGLING:
        assert len(exchange.responses) == 1, f"{name}: the hidden request was answered: {exchange.statuses}"
    served.assert_unharmed()


def test_pipelined_requests_are_all_answered_in_order(served):
    paths = ["/health", "/hash", "/missing"] * 40
    payload = b"".join(f"GET {p} HTTP/1.1\r\nHost: bench\r\n\r\n".encode() for p in paths)
    exchange = send_raw(served.port, payload, expect=len(paths), timeout=PROMPT)
    assert exchange.statuses == [200, 200, 404] * 40, f"{len(exchange.responses)} of {len(paths)} answered"
    for response in exchange.responses[0::3]:
        assert response.body == b"OK"
    for response in exchange.responses[1::3]:
        check_hash(response.status, response.headers, response.body, served.server)
    served.assert_unharmed()


# -- slow clients ---------------------------------------------------------------------------

SLOW = {
    # Header bytes one at a time, two a second: the head never completes.
    "trickling header bytes": dict(first=b"G", trickle=b"ET /health HTTP/1.1\r\nX-Slow: " + b"a" * 500, interval=0.5),
    # A body announced and never sent (the app does not read bodies; the runner must not wait).
    "withholding an announced body": dict(first=b"POST /hash HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000\r\n\r\n"),
    # `Connection: close`, then never reading or closing: the runner lingers for our FIN.
    "never closing after Connection: close": dict(
        first=b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    ),
    # Connected, silent.
    "connecting and sending nothing": dict(first=b""),
}
ATTACKERS = 200


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.parametrize("name", SLOW)
def test_slow_clients_do_not_starve_ordinary_requests(served, name):
    before = [get(served.port) for _ in range(50)]
    with Attack(served.port, ATTACKERS, **SLOW[name]) as attack:
        during = []
        while len(during) < 50 and (not during or during[-1][0] == 200):
            during.append(get(served.port, timeout=5))
        if name == "trickling header bytes":
            deadline = time.monotonic() + HEAD_TIMEOUT[served.server] + 5
            while attack.hung_up() < ATTACKERS and time.monotonic() < deadline:
                time.sleep(0.1)
            hung_up, statuses = attack.hung_up(), attack.statuses()
    failed = [status for status, _ in during if status != 200]
    summary = (
        f"{name}: ordinary GET p99 {p99([t for _, t in before]) * 1000:.0f} ms before, "
        f"{p99([t for _, t in during]) * 1000:.0f} ms during {ATTACKERS} attackers"
    )
    print(summary)
    # Generous: answered at all, within 5 s each (stock gthread answered none within 10 s).
    assert not failed, f"{summary}; {len(failed)} of {len(during)} failed"
    assert max(t for _, t in during) < 5.0, summary
    if name == "trickling header bytes":
        assert hung_up == ATTACKERS, (
            f"{ATTACKERS - hung_up} trickling connections still open after {HEAD_TIMEOUT[served.server] + 5:.0f} s"
        )
        assert set(statuses) <= {408}, statuses
    served.assert_unharmed()


# -- the seed's load: 15,000 keep-alive connections on one worker ----------------------------

SEED_CONNECTIONS = 15_000
HOLD_SECONDS = 15
# The seed's users run k6 against 15,000 VUs: an answer later than this is a failed request.
ANSWER_WITHIN = 10


def pinned(command: list[str], cpu: int) -> list[str]:
    """Pin to one CPU when there are two to share (server on one, load generator on the other)."""
    cpus = sorted(os.sched_getaffinity(0))
    return ["taskset", "-c", str(cpus[cpu]), *command] if len(cpus) >= 2 else command


@pytest.mark.long
@pytest.mark.parametrize("server", SERVERS)
def test_one_worker_answers_the_seeds_15000_keep_alive_connections_within_10_s(server, tmp_path):
    """wrk -c15000 --timeout 10s for 15 s against one worker: every connection held at once,
    answered, no answer later than 10 s, no error."""
    if problem := room_for_connections(SEED_CONNECTIONS + 2000):
        pytest.fail(problem)
    port = free_port()
    log = tmp_path / "log"
    with running(pinned(serve_command(server, port, workers=1), 0), port, log) as runner:
        tree = [psutil.Process(runner.process.pid), *psutil.Process(runner.process.pid).children(recursive=True)]
        # Open descriptors, not psutil's connection table: parsing 15,000 lines of /proc/net/tcp
        # a second would take a core from the server it measures.
        # The fewest over a second: the readiness check's connection may still be closing.
        samples = []
        for _ in range(10):
            samples.append(sum(p.num_fds() for p in tree))
            time.sleep(0.1)
        idle_fds = min(samples)
        wrk = subprocess.Popen(
            pinned(
                [
                    "wrk",
                    "-t1",
                    f"-c{SEED_CONNECTIONS}",
                    f"-d{HOLD_SECONDS}s",
                    "--timeout",
                    f"{ANSWER_WITHIN}s",
                    "--latency",
                    f"http://127.0.0.1:{port}/hash",
                ],
                1,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = 0
        while wrk.poll() is None:
            peak = max(peak, sum(p.num_fds() for p in tree) - idle_fds)
            time.sleep(0.5)  # a sampling interval: the count is read while wrk holds its connections
        output = wrk.communicate()[0] + "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        assert [p.pid for p in psutil.Process(runner.process.pid).children(recursive=True)] == [p.pid for p in tree[1:]]
    load = parse_wrk(output)
    print(f"{server}: {load} peak established {peak}")
    assert wrk.returncode == 0, output
    assert peak >= SEED_CONNECTIONS, f"the worker held at most {peak} connections at once\n{output}"
    assert load.clean, f"{server} under {SEED_CONNECTIONS} connections: {load.errors}\n{output}"
    # wrk does not count a request still unanswered when the run ends as a timeout: each
    # connection must have been answered, and the slowest answer must be in time.
    assert load.requests >= SEED_CONNECTIONS, f"only {load.requests} answers in {HOLD_SECONDS} s\n{output}"
    assert load.max_ms is not None and load.max_ms < ANSWER_WITHIN * 1000, output


# -- SIGTERM under load ------------------------------------------------------------------------


# granian and hyper close kept-alive connections that are between requests when SIGTERM arrives;
# a request already on its way on one gets a close with no answer, which k6 resends (hostile.py's
# keep_requesting does too, and counts it). stdlib-style promises more (its own tests).


@pytest.mark.parametrize("runner", RUNNERS)
def test_sigterm_under_load_fails_no_request_in_flight(runner, tmp_path):
    server, env = RUNNERS[runner]
    exit_code, tally = sigterm_under_load(server, env, tmp_path / "log")
    print(f"{runner}: {tally}")
    assert exit_code == 0
    assert not tally.failed, f"{len(tally.failed)} requests failed in flight, e.g. {tally.failed[:3]}"
    assert tally.refused == tally.clients, "every client ends refused, after the runner is gone"


# -- memory over many requests ----------------------------------------------------------------

# CI's count; `make memory` runs docs/reliability.md's million. A leak of 100 bytes a request would add
# about 10 MiB over 100,000; measured growth here was under 1 MiB for both servers.
MEMORY_REQUESTS = 100_000
MEMORY_GROWTH_MIB = 10.0


@pytest.mark.long
@pytest.mark.parametrize("server", SERVERS)
def test_memory_stays_flat_over_many_requests(server, tmp_path):
    samples = measure(server, MEMORY_REQUESTS, tmp_path / "log")
    assert len(samples) >= 3 and samples[-1].requests - samples[0].requests >= MEMORY_REQUESTS, samples
    first, last = samples[0], samples[-1]
    growth = last.rss_mib - first.rss_mib
    print(
        f"{server}: {first.rss_mib:.1f} MiB after {first.requests} warm-up requests, "
        f"{last.rss_mib:.1f} MiB after {last.requests} ({growth:+.1f} MiB)"
    )
    assert growth < MEMORY_GROWTH_MIB, [(s.requests, round(s.rss_mib, 1)) for s in samples]
