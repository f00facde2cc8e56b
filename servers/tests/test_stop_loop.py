"""The stop loop: start, a short load, SIGTERM, over and over, for every server; each stop must end
the whole process tree within its drain timeout plus a margin, with no request lost in flight.

A stop that hangs is rare (granian's master waited for good in 9 of 151 stops that got a second
signal right after the first: issue 16, docs/reliability.md "Stopping, over and over"), so one
stop proves little: CI runs STOP_CYCLES per server, the servers' loops side by side to keep it
short. The cycles take turns: SIGTERM to the runner alone (as Docker and Kubernetes send it); to
its whole process group (as `kill -- -PGID` or systemd's control-group stop do), where the workers
get it at the same moment as the runner; and to the runner twice, the second within half a
millisecond (a supervisor that resends, a second Ctrl-C, PR_SET_PDEATHSIG after a first signal).

Lost in flight: a request on a connection the server had accepted that got no complete answer
(a request sent on a kept-alive connection the server closes with no byte back is resent, as k6
does, and counted apart). The signal comes once every client has been answered, so each
connection is accepted; a client that reconnects after the signal and is reset by the closing
listener's queue never reached the server, and counts with the refusals.
`STOP_CYCLES=1000 pytest servers/tests/test_stop_loop.py -s` is the longer loop of the docs.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from servers import registry
from servers.contract import SERVERS
from servers.process import free_port, kill_tree, wait_until_healthy
from servers.tests.hostile import Tally, keep_requesting

STOP_CYCLES = int(os.environ.get("STOP_CYCLES", "100"))
WAYS = ("runner", "group", "twice")
MARGIN_S = 5.0  # past the drain timeout: time to close sockets, reap workers and exit
CLIENTS = 8
ANSWERS = 40  # per cycle before the SIGTERM: the load is on, requests in flight


@dataclass
class Loop:
    server: str
    stops: list[float] = field(default_factory=list)  # seconds from SIGTERM to the whole tree gone
    past_bound: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # requests lost in flight
    exits: list[int] = field(default_factory=list)
    arrived_during_stop: int = 0

    def __str__(self) -> str:
        return (f"{self.server}: {len(self.stops)} stops, median {statistics.median(self.stops):.2f} s, slowest "
                f"{max(self.stops):.2f} s, {len(self.past_bound)} past the bound, {len(self.failed)} requests lost, "
                f"{self.arrived_during_stop} connections opened during a stop and reset, exit codes {sorted(set(self.exits))}")


def start(server: registry.Server, port: int, log: Path) -> subprocess.Popen:
    """The runner as the image runs it (server.yaml serve, in its folder), in its own group."""
    env = {**registry.tool_env(), "PORT": str(port), "WORKERS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(list(server.serve), cwd=server.folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def one_stop(loop: Loop, server: registry.Server, cycle: int, log: Path) -> None:
    port = free_port()
    process = start(server, port, log)
    tally, stop = Tally(CLIENTS), threading.Event()
    clients = []
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", process)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        clients = [threading.Thread(target=keep_requesting, args=(port, stop, tally), daemon=True) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while (tally.ok < ANSWERS or tally.answered_clients < CLIENTS) and not tally.failed:
            assert time.monotonic() < deadline, f"cycle {cycle}: the load never got going: {tally}"
            time.sleep(0.005)
        signalled = tally.signalled_at = time.monotonic()
        way = WAYS[cycle % len(WAYS)]
        if way == "group":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        if way == "twice":
            while time.monotonic() < signalled + random.uniform(0, 0.0005):
                pass  # busy: a sleep would be far coarser than half a millisecond
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        bound = server.drain_timeout_s + MARGIN_S
        try:
            loop.exits.append(process.wait(bound))
        except subprocess.TimeoutExpired:
            loop.past_bound.append(f"cycle {cycle}: still running {bound:.0f} s after SIGTERM; log {log}")
            return
        # The whole tree: a worker left behind is a stop that did not end.
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree):
            if time.monotonic() - signalled > bound:
                loop.past_bound.append(f"cycle {cycle}: a worker outlived its runner by {bound:.0f} s")
                return
            time.sleep(0.01)
        loop.stops.append(time.monotonic() - signalled)
    finally:
        kill_tree(process.pid)
        process.wait()
        for client in clients:
            client.join(10)
        stop.set()
        for client in clients:
            client.join(10)
        loop.failed += [f"cycle {cycle} ({WAYS[cycle % len(WAYS)]}): {failure}" for failure in tally.failed]
        loop.arrived_during_stop += tally.reset_during_stop


def run_loop(loop: Loop, server: registry.Server, log: Path) -> None:
    for cycle in range(STOP_CYCLES):
        one_stop(loop, server, cycle, log)


@pytest.mark.long
def test_every_stop_is_bounded_and_loses_no_request_in_flight(tmp_path):
    servers = [registry.get(name) for name in SERVERS]
    for server in servers:
        built = registry.build(server)
        assert built is None or built.returncode == 0, (built.stdout + built.stderr)[-2000:]
    loops = {server.name: Loop(server.name) for server in servers}
    # Threads, one per server: each starts its runners itself, so they stop with it (a runner
    # started from a thread that ends would not be told; these threads end only after it).
    threads = [threading.Thread(target=run_loop, args=(loops[s.name], s, tmp_path / f"{s.name}.log")) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for loop in loops.values():
        print(loop)
    for loop in loops.values():
        assert not loop.past_bound, f"{loop.server}: {loop.past_bound[:3]}"
        assert not loop.failed, f"{loop.server}: {len(loop.failed)} requests lost in flight, e.g. {loop.failed[:3]}"
        assert len(loop.stops) == STOP_CYCLES and set(loop.exits) <= {0}, loop
