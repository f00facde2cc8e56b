"""Does a server's memory stay flat over many requests? Drive it with wrk, sample its RSS.

    python -m servers.memory --server stdlib-style --requests 1000000

starts the server (one worker, as `make serve` does), sends GET /hash in wrk rounds of a few
seconds (64 connections, opened afresh each round), and after each round prints the requests
sent so far and the resident memory of the runner and its workers. `make memory` runs it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from servers import registry
from servers.process import dies_with_parent, free_port, interruptible, running, serve_command
from servers.wrk import parse_wrk

CONNECTIONS = 64


@dataclass
class Sample:
    requests: int
    rss_mib: float


def server_rss(leader_pid: int) -> float:
    """Resident MiB of the runner and its workers (not `make`, which only waits for them)."""
    leader = psutil.Process(leader_pid)
    processes = [p for p in [leader, *leader.children(recursive=True)] if p.name() not in ("make", "taskset")]
    return sum(p.memory_info().rss for p in processes) / 2**20


def wrk_round(port: int, seconds: int) -> int:
    """One wrk run; the number of 2xx answers it got (it fails on any error or other status)."""
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cpus[-1])] if len(cpus) >= 2 else []
    output = subprocess.run(
        [*pin, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", f"http://127.0.0.1:{port}/hash"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=dies_with_parent(),
    ).stdout
    load = parse_wrk(output)
    if not load.clean:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    return load.requests


MIN_ROUNDS = 2


def measure(server: str, requests: int, log: Path, round_seconds: int = 5, progress=None) -> list[Sample]:
    """Samples after warm-up (the first sample) and after each round, until `requests` more are sent
    and at least MIN_ROUNDS rounds ran after the warm-up: a fast server (Go, Rust) sends 100,000 in
    its warm-up round alone, and one sample cannot show growth."""
    port = free_port()
    command = serve_command(server, port, workers=1)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        command = ["taskset", "-c", str(cpus[0]), *command]
    with running(command, port, log) as runner:
        sent = wrk_round(port, round_seconds)  # warm-up: imports, caches, allocator arenas
        samples = [Sample(sent, server_rss(runner.process.pid))]
        if progress:
            progress(samples[-1])
        warm = sent
        while sent - warm < requests or len(samples) <= MIN_ROUNDS:
            sent += wrk_round(port, round_seconds)
            samples.append(Sample(sent, server_rss(runner.process.pid)))
            if progress:
                progress(samples[-1])
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    try:
        registry.get(args.server)
    except registry.RegistryError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{args.server}: GET /hash until {args.requests:,} requests; RSS of the server's processes after each round")
    print("| requests | RSS MiB |\n|---:|---:|")
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with interruptible():
                measure(args.server, args.requests, Path(tmp) / "log",
                        progress=lambda s: (samples.append(s), print(f"| {s.requests:,} | {s.rss_mib:.1f} |", flush=True)))
        except KeyboardInterrupt as stopped:
            name = getattr(stopped, "signum", None)
            print(f"\nStopped ({'SIGINT' if name is None else stopped}): the server and wrk are stopped; "
                  f"{len(samples)} sample(s) above.", file=sys.stderr)
            return 130 if name is None else 128 + name
    first, last = samples[0], samples[-1]
    print(
        f"\n{args.server}: {first.rss_mib:.1f} MiB after {first.requests:,} warm-up requests, "
        f"{last.rss_mib:.1f} MiB after {last.requests:,} ({last.rss_mib - first.rss_mib:+.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
