"""Check a server's answers and its work before measuring it: a fast wrong server must not win a benchmark.

Three checks, each a refusal with one line saying why:

1. its own hash code gives the known answers (servers/vectors.json), run as its server.yaml's
   `known_answers` command (the Python servers import their hashing.py; Go and Rust run their tests);
2. the HTTP contract: /health, the shape of /hash with its own `source` in 200 answers in a row,
   distinct hashes for distinct requests, 405 with Allow;
3. the work: the hash of a request cannot be checked from outside (its input is the time the
   server read), so what the server spends is: started with HASH_ITERATIONS=1 and then with
   WORK_ROUNDS, the server's CPU time per request must grow by at least WORK_FLOOR_NS per round.
   A server that answers hex without hashing spends the same at both. This costs two more starts
   and WORK_REQUESTS requests each, about 5 s per Python server (the hash at 30,000 rounds is
   ~10 ms there) and 2 s per reference server.
"""

from __future__ import annotations

import http.client
import subprocess
import time
import traceback
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import psutil

from bench.model import Verification
from servers import registry
from servers.contract import check_hash, check_health, check_not_allowed, request

# Distinct answers from a few calls show the hash depends on the time, as the contract says.
HASH_CALLS = 3
ANSWERS = 200
# The work check. 30,000 rounds make a request's hashing 1 ms (Go's SHA-NI assembly, ~35 ns a
# round) to 10 ms (CPython's _sha256 and its loop, ~350 ns); the floor, 10 ns a round, is below any
# SHA-256 of a 32-byte message on hardware of this decade, and WORK_REQUESTS x WORK_ROUNDS x floor
# = 60 ms of CPU is six clock ticks, well above the tick rounding of /proc's CPU times.
WORK_ROUNDS = 30_000
WORK_REQUESTS = 200
WORK_FLOOR_NS = 10.0


class Refused(AssertionError):
    """A check failed; the message is the reason, one line."""


@dataclass
class Work:
    """CPU time per request of a server's processes, at 1 hash round and at `rounds`."""

    rounds: int
    requests: int
    one_round_us: float
    many_rounds_us: float

    @property
    def per_round_ns(self) -> float:
        return (self.many_rounds_us - self.one_round_us) * 1000 / (self.rounds - 1)

    @property
    def done(self) -> bool:
        return self.per_round_ns >= WORK_FLOOR_NS

    def describe(self) -> str:
        return (f"{self.one_round_us:,.0f} µs of CPU per request at 1 round, {self.many_rounds_us:,.0f} µs at "
                f"{self.rounds:,} ({self.per_round_ns:,.0f} ns a round; the floor is {WORK_FLOOR_NS:.0f})")


def check_known_answers(server: str) -> None:
    """The server's own known-answer command, run in its folder (with its build first)."""
    spec = registry.get(server)
    result = registry.known_answers(spec)
    if result.returncode != 0:
        last = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
        raise Refused(f"`{' '.join(result.args)}` exited {result.returncode}: {last}")


def check_http(server: str, port: int) -> None:
    check_health(*request(port, "GET", "/health"))
    hashes = {check_hash(*request(port, "GET", "/hash"), source=server)["hash"] for _ in range(HASH_CALLS)}
    # Then ANSWERS answers on one kept-alive connection, each checked in full: a server wrong in 1
    # answer of 100 (of a connection's, or of all) shows here, as k6 only samples bodies.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for number in range(ANSWERS):
            connection.request("GET", "/hash")
            response = connection.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            try:
                hashes.add(check_hash(response.status, headers, response.read(), source=server)["hash"])
            except AssertionError as wrong:
                raise Refused(f"answer {number + 1} of {ANSWERS} on one connection was wrong: {wrong}") from None
    finally:
        connection.close()
    assert len(hashes) == HASH_CALLS + ANSWERS, f"{HASH_CALLS + ANSWERS} calls to /hash gave only {len(hashes)} distinct hashes"
    status, headers, _ = request(port, "POST", "/hash")
    check_not_allowed(status, headers)


def server_cpu_seconds(leader_pid: int) -> float:
    """CPU time so far of the server's own processes: the runner and its workers, not `make`,
    `taskset` or the `servers.serve` launcher above them (they exec into the runner)."""
    total = 0.0
    leader = psutil.Process(leader_pid)
    for process in [leader, *leader.children(recursive=True)]:
        try:
            if process.name() not in ("make", "taskset"):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_per_request(port: int, leader_pid: int, requests: int) -> float:
    """Microseconds of server CPU per GET /hash, over `requests` sent one by one on one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/hash")
        connection.getresponse().read()  # warm: imports, first allocation, the connection itself
        before = server_cpu_seconds(leader_pid)
        for _ in range(requests):
            connection.request("GET", "/hash")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise Refused(f"GET /hash answered {response.status} while its work was measured")
        # The last answer is sent before its request's accounting ends; let the tick land.
        time.sleep(0.05)
        return (server_cpu_seconds(leader_pid) - before) * 1e6 / requests
    finally:
        connection.close()


# start(env) -> a context manager yielding (port, leader pid) of the server running with `env`.
Starter = Callable[[dict[str, str]], AbstractContextManager[tuple[int, int]]]


def measure_work(start: Starter, rounds: int = WORK_ROUNDS, requests: int = WORK_REQUESTS) -> Work:
    """The server's CPU per request at HASH_ITERATIONS=1 and at `rounds`, one start each."""
    spent = []
    for iterations in (1, rounds):
        with start({"HASH_ITERATIONS": str(iterations)}) as (port, pid):
            spent.append(cpu_per_request(port, pid, requests))
    return Work(rounds, requests, *spent)


def check_work(start: Starter) -> Work:
    work = measure_work(start)
    if not work.done:
        raise Refused(f"it does not do the work: {work.describe()}")
    return work


def _why(step: str, error: BaseException) -> str:
    if isinstance(error, AssertionError):
        detail = str(error) or (traceback.extract_tb(error.__traceback__)[-1].line or "an assertion")
        return f"{step} failed the check `{detail}`" if not isinstance(error, Refused) else f"{step} failed: {detail}"
    return f"{step} failed: {type(error).__name__}: {error}"


def verify(server: str, port: int, start: Starter | None = None) -> Verification:
    """Known answers of the server's hash code, its contract over HTTP on `port`, then (given a way
    to `start` it with other settings) whether it does the work."""
    found: dict[str, Work] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("the known-answer vectors (servers/vectors.json)", lambda: check_known_answers(server)),
        (f"the HTTP contract (health, /hash shape, source '{server}', 405)", lambda: check_http(server, port)),
    ]
    if start is not None:
        steps.append((f"the work (CPU per request at 1 and {WORK_ROUNDS:,} hash rounds)",
                      lambda: found.setdefault("work", check_work(start))))
    for step, check in steps:
        try:
            check()
        except (AssertionError, OSError, ValueError, KeyError, http.client.HTTPException, subprocess.SubprocessError,
                registry.RegistryError, RuntimeError, psutil.Error) as error:
            return {"ok": False, "reason": _why(step, error).replace("\n", " ")}
    checked = "known-answer vectors, HTTP contract and source name checked"
    if "work" in found:
        checked += f"; the work: {found['work'].describe()}"
    return {"ok": True, "reason": checked}
