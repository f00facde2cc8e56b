"""Black-box: each server under its real runner, started by `make serve`, spoken to over HTTP."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from contextlib import contextmanager

import psutil
import pytest

from bench.verify import WORK_FLOOR_NS, measure_work
from servers import registry
from servers.contract import SERVERS, check_contract, check_hash, request
from servers.process import requests_in_flight, running, scheduling_policies, serve_command
from servers.process import free_port as new_port

SCHED_POLICY = [name for name in SERVERS if registry.get(name).has("sched_policy")]


@pytest.mark.parametrize("server", SERVERS)
def test_contract_over_http(server, free_port, tmp_path):
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log"):
        check_contract(free_port, source=server)


@pytest.mark.parametrize("server", SERVERS)
def test_keep_alive_serves_many_requests_on_one_connection(server, free_port, tmp_path):
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log"):
        connection = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
        for _ in range(50):
            connection.request("GET", "/hash")
            response = connection.getresponse()
            check_hash(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), server)
        connection.close()


@pytest.mark.parametrize("server", SERVERS)
def test_the_cpu_a_request_costs_grows_with_the_hash_rounds(server, tmp_path):
    """Black-box proof of the work: a server that answers 64 hex digits without hashing spends the
    same at 1 round as at 30,000 (bench/verify.py refuses it with this measurement)."""
    counter = iter(range(100))

    @contextmanager
    def start(env):
        port = new_port()
        with running(serve_command(server, port, workers=1), port, tmp_path / f"log{next(counter)}", env=env) as live:
            yield port, live.process.pid

    work = measure_work(start)
    print(f"{server}: {work.describe()}")
    assert work.per_round_ns >= WORK_FLOOR_NS, work.describe()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("name, value", [("WORKERS", "many"), ("PORT", "99999"), ("HASH_ITERATIONS", "-1")])
def test_a_bad_setting_stops_the_start_with_one_line(server, name, value, free_port):
    command = serve_command(server, free_port, workers=1)
    command = [f"{name}={value}" if arg.startswith(f"{name}=") else arg for arg in command]
    result = subprocess.run(command, env={**os.environ, name: value}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{server}: ")]
    assert lines and lines[0].startswith(f"{server}: {name} must be "), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_server_is_refused_in_one_line_listing_the_servers(free_port):
    result = subprocess.run(serve_command("no-such-server", free_port), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert line.startswith("SERVER must be one of ") and "got 'no-such-server'" in line, line
    assert all(name in line for name in SERVERS), line


@pytest.mark.parametrize("server", SCHED_POLICY)
@pytest.mark.parametrize("policy, expected", [("", os.SCHED_BATCH), ("other", os.SCHED_OTHER)], ids=["default", "other"])
def test_the_runner_its_workers_and_their_threads_run_under_sched_policy(server, policy, expected, free_port, tmp_path):
    with running(serve_command(server, free_port, workers=2), free_port, tmp_path / "log",
                 env={"SCHED_POLICY": policy}) as served:
        runner, = psutil.Process(served.process.pid).children()  # make's child
        # The arbiter forks its workers a random fraction of a second apart.
        deadline = time.monotonic() + 10
        while len(processes := [runner, *runner.children(recursive=True)]) < 3:
            assert time.monotonic() < deadline, [p.cmdline() for p in processes]
            check_hash(*request(free_port, "GET", "/hash"), source=server)
        threads = sum(p.num_threads() for p in processes)
        assert threads > len(processes), "the workers should have started their threads"
        for process in processes:
            assert scheduling_policies(process) == {expected}, process.cmdline()
    assert "SCHED_POLICY" not in (tmp_path / "log").read_text(), "no refusal was expected here"


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_lets_in_flight_requests_finish(server, free_port, tmp_path):
    """Three requests sent together on connections the server has accepted, then SIGTERM at
    once: each is answered in full before the runner exits 0. Its hashing is long (about a second
    in Python, 3,000,000 rounds), so they are still being served, or waiting to be read behind
    one another, when the signal lands."""
    slow = {"HASH_ITERATIONS": "3000000"}
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log", env=slow) as served:
        results, clients = requests_in_flight(free_port, served.process.pid, 3)
        exit_code = served.stop()
        for client in clients:
            client.join(60)
    assert exit_code == 0
    assert [r[0] if isinstance(r, tuple) else r for r in results] == [200] * 3
    for answer in results:
        check_hash(*answer, source=server)
