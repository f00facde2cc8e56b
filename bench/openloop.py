"""An open-model HTTP load generator light enough to drive one server core from one client core.

    python -m bench.openloop --url http://127.0.0.1:8080/hash --rate 5000 --seconds 15

Why not k6 here: `make perf` gives the server CPU 0 and the load CPU 1, and k6 alone on one CPU
could not keep an arrival rate that half a core of async-style serves. Measured against the Go
peer (idle otherwise) with a minimal script (`discardResponseBodies`, no checks): at 3,000/s
k6's p95 was 40 ms and it dropped 252 arrivals, at 5,500/s it reached 4,857/s and dropped 6,417;
its latencies were its own queueing, not the server's. This generator costs about a tenth of that
per request (`cpu_share` in its result says how busy it was).

The method is wrk2's: `--connections` keep-alive connections share the rate, each sending its
requests at fixed intended times (one request in flight per connection, no pipelining). A
request's latency runs from its intended send time to the last byte of its answer, so a server
that stalls delays the requests queued behind the stall and they count it (no coordinated
omission). Timers fire with the event loop's millisecond resolution: up to about 1 ms of every
latency can be the generator's, the same for every server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Sequence
from urllib.parse import urlsplit


class OpenLoopError(RuntimeError):
    """The target cannot be reached or answered nonsense; the message says what to check."""


@dataclass
class Result:
    rate: float  # intended arrivals per second
    seconds: float
    requests: int  # answered
    errors: int  # non-2xx answers and broken connections
    achieved_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    cpu_share: float  # the generator's CPU seconds / wall seconds: near 1.0 means it was the bottleneck
    late: int  # requests sent more than 10 ms after their intended time (the backlog a stall leaves)
    scheduled: int = 0  # arrivals the schedule held: every one is sent once, so requests + errors == scheduled


def schedule(rate: float, seconds: float, connections: int) -> list[list[float]]:
    """Each connection's intended send times, in seconds from the start: arrival k of the run is
    due at k / rate and goes to connection k mod `connections`, so the connections share the rate
    evenly, each sending every `connections / rate` seconds."""
    arrivals = math.ceil(rate * seconds - 1e-9)  # those due before `seconds`
    return [[k / rate for k in range(index, arrivals, connections)] for index in range(connections)]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ascending values, None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.need = -1  # bytes of head + body once the head is in; -1 while it is not
        self.status = 0
        self.closed = False
        self.answered_at = 0.0  # perf_counter() at the answer's last byte

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            stop = head.find(b"\r\n", at + 2)
            try:
                self.status = int(head[9:12])
                self.need = end + 4 + (int(head[at + 17 : stop if stop > 0 else None]) if at >= 0 else 0)
            except ValueError:
                self.need = -1
                self.transport.close()
                self._finish(OpenLoopError(f"not an HTTP/1.1 answer with a Content-Length: {head[:80]!r}"))
                return
        if len(self.buffer) >= self.need:
            self.answered_at = time.perf_counter()
            status = self.status
            del self.buffer[: self.need]
            self.need = -1
            self._finish(status)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._finish(ConnectionError("the server closed the connection"))

    def _finish(self, outcome) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)

    def request(self, payload: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        if self.closed:
            self.waiter.set_exception(ConnectionError("the server closed the connection"))
        else:
            self.transport.write(payload)
        return self.waiter


async def _run(url: str, rate: float, seconds: float, connections: int) -> Result:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OpenLoopError(f"--url must be an http:// URL with a host, got {url!r}.")
    host, port = parts.hostname, parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: bench-openloop\r\n\r\n".encode()
    loop = asyncio.get_running_loop()

    async def connect() -> _Connection:
        try:
            _, protocol = await loop.create_connection(_Connection, host, port)
        except OSError as error:
            raise OpenLoopError(f"cannot connect to {host}:{port} ({error.strerror or error}): is the server up?") from None
        return protocol

    pool = [await connect() for _ in range(connections)]
    latencies = array("d")
    counts = {"errors": 0, "late": 0}
    plan = schedule(rate, seconds, connections)
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    clock = time.perf_counter
    start = clock() + 0.05

    async def drive(index: int) -> None:
        conn = pool[index]
        for offset in plan[index]:
            intended = start + offset
            delay = intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.010:
                counts["late"] += 1
            try:
                status = await conn.request(payload)
            except (ConnectionError, OpenLoopError):
                counts["errors"] += 1
                conn.transport.close()
                conn = pool[index] = await connect()
            else:
                if not 200 <= status < 300:
                    counts["errors"] += 1
                latencies.append(conn.answered_at - intended)

    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    drivers = [asyncio.ensure_future(drive(i)) for i in range(connections)]
    # A server that stops answering leaves a request in flight for good: give it 30 s.
    _, stuck = await asyncio.wait(drivers, timeout=seconds + 30)
    for driver in stuck:
        driver.cancel()
        counts["errors"] += 1
    for driver in drivers:
        if not driver.cancelled() and driver.exception() is not None:
            raise driver.exception()
    cpu1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall0
    for conn in pool:
        conn.transport.close()
    ordered = sorted(latencies)
    ms = [None if v is None else round(v * 1000, 3) for v in (percentile(ordered, q) for q in (50, 90, 99, 99.9, 100))]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return Result(rate=rate, seconds=seconds, requests=len(ordered), errors=counts["errors"],
                  achieved_rps=round(len(ordered) / wall, 1), p50_ms=ms[0], p90_ms=ms[1], p99_ms=ms[2], p999_ms=ms[3],
                  max_ms=ms[4], cpu_share=round(cpu / wall, 3), late=counts["late"],
                  scheduled=sum(map(len, plan)))  # fmt: skip


def run(url: str, rate: float, seconds: float, connections: int = 50) -> Result:
    """Send `rate` GET requests per second to `url` for `seconds`; see the module docstring."""
    if rate <= 0 or seconds <= 0 or connections < 1:
        raise OpenLoopError(f"rate, seconds and connections must be positive, got {rate}, {seconds}, {connections}.")
    try:
        import uvloop  # the lighter loop when it is installed (the async-style server's own)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_run(url, rate, seconds, connections))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="intended requests per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        result = run(args.url, args.rate, args.seconds, args.connections)
    except OpenLoopError as error:
        print(f"openloop: {error}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
