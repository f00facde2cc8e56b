"""Black-box: each server under its real runner, started by `make serve`, spoken to over HTTP."""

from __future__ import annotations

import http.client
import os
import subprocess
import threading
import time

import psutil
import pytest

from servers.contract import SERVERS, check_hash, check_health, check_not_allowed, request
from servers.process import established_connections, running, scheduling_policies, serve_command


@pytest.mark.parametrize("server", SERVERS)
def test_contract_over_http(server, free_port, tmp_path):
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log"):
        check_hash(*request(free_port, "GET", "/hash"), source=server)
        check_health(*request(free_port, "GET", "/health"))
        status, headers, body = request(free_port, "HEAD", "/hash")
        assert status == 200 and body == b""
        assert request(free_port, "GET", "/missing")[0] == 404
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, headers, _ = request(free_port, method, "/hash")
            check_not_allowed(status, headers)


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
@pytest.mark.parametrize("name, value", [("WORKERS", "many"), ("PORT", "99999"), ("HASH_ITERATIONS", "-1")])
def test_a_bad_setting_stops_the_start_with_one_line(server, name, value, free_port):
    command = serve_command(server, free_port, workers=1)
    command = [f"{name}={value}" if arg.startswith(f"{name}=") else arg for arg in command]
    result = subprocess.run(command, env={**os.environ, name: value}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{server}: ")]
    assert lines and lines[0].startswith(f"{server}: {name} must be "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("server", SERVERS)
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
    # About a second of hashing per request, so SIGTERM lands while they are being served.
    slow = {"HASH_ITERATIONS": "3000000"}
    in_flight = 3
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log", env=slow) as served:
        results: list = []
        clients = [
            threading.Thread(target=lambda: results.append(request(free_port, "GET", "/hash", timeout=60)))
            for _ in range(in_flight)
        ]
        for client in clients:
            client.start()
        leader = psutil.Process(served.process.pid)
        deadline = time.monotonic() + 20
        while established_connections(leader, free_port) < in_flight:
            assert time.monotonic() < deadline, "the requests never reached the server"
            time.sleep(0.01)
        exit_code = served.stop()
        for client in clients:
            client.join(60)
    assert exit_code == 0
    assert [status for status, _, _ in results] == [200] * in_flight
    for answer in results:
        check_hash(*answer, source=server)
