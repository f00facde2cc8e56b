"""bench/openloop.py against a small threaded HTTP/1.1 server in the test process."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import pytest

from bench import openloop
from bench.openloop import OpenLoopError, percentile
from servers.process import stand_in


@contextmanager
def server(status: int = 200, stall_at: int = -1, stall_s: float = 0.0):
    """Answers every GET with `status`; request number `stall_at` (0-based) waits `stall_s` first."""
    seen = {"n": 0}
    lock = threading.Lock()

    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        with lock:
            n = seen["n"]
            seen["n"] += 1
        if n == stall_at:
            time.sleep(stall_s)
        return status, {}, b'{"ok":true}'

    with stand_in(answer) as address:
        yield f"http://{address}/hash"


def test_the_schedule_spreads_the_rate_over_the_connections_evenly():
    plan = openloop.schedule(rate=200, seconds=1.5, connections=5)
    assert [len(times) for times in plan] == [60] * 5  # 200/s for 1.5 s, 40/s on each connection
    merged = sorted(t for times in plan for t in times)
    gaps = {round(b - a, 9) for a, b in zip(merged, merged[1:])}
    assert gaps == {0.005} and merged[0] == 0 and merged[-1] < 1.5  # one arrival every 1/200 s
    assert sum(map(len, openloop.schedule(rate=7, seconds=1, connections=3))) == 7


def test_it_sends_every_scheduled_request_once_and_times_it_from_the_schedule():
    """Bounds that hold however busy the machine is: what the schedule holds is sent once and
    answered (a delayed send is late, never skipped or doubled), no faster than the schedule, and
    each latency runs from its intended time, so a late send shows in the latencies too."""
    with server() as url:
        result = openloop.run(url, rate=200, seconds=1.5, connections=5)
    assert result.scheduled == 300 and result.requests == 300 and result.errors == 0, result
    # The run lasts at least the schedule's 1.5 s, so it cannot answer faster than the rate.
    assert 0 < result.achieved_rps <= 200, result
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.late == 0 or result.max_ms >= 10, result
    # The generator and this test's server share the process: at most every CPU busy.
    assert 0 < result.cpu_share <= os.cpu_count(), result


def test_a_stall_counts_against_every_request_queued_behind_it():
    # One connection at 100/s; the 20th answer takes 0.5 s. A closed-loop client would record one
    # slow request; here the ~50 requests intended during the stall wait for it and say so. A busy
    # machine only adds lateness and latency, so these lower bounds hold under any load.
    with server(stall_at=20, stall_s=0.5) as url:
        result = openloop.run(url, rate=100, seconds=1.5, connections=1)
    assert result.errors == 0
    assert result.late >= 40, result  # sent more than 10 ms after their intended time
    assert result.p90_ms > 100, result  # a third of the run's requests waited behind the stall
    assert result.max_ms >= 500, result


def test_answers_other_than_2xx_are_errors():
    with server(status=503) as url:
        result = openloop.run(url, rate=100, seconds=0.5, connections=2)
    assert result.requests > 0 and result.errors == result.requests


def test_an_unreachable_server_is_one_line_naming_the_check(free_port, capsys):
    with pytest.raises(OpenLoopError, match=r"cannot connect to 127\.0\.0\.1:\d+ .*is the server up\?$"):
        openloop.run(f"http://127.0.0.1:{free_port}/hash", rate=10, seconds=0.2)
    assert openloop.main(["--url", f"http://127.0.0.1:{free_port}/", "--rate", "10", "--seconds", "0.2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openloop: cannot connect") and err.count("\n") == 1


@pytest.mark.parametrize("url, rate", [("https://example.test/", 10), ("http://127.0.0.1:1/", 0)])
def test_bad_arguments_are_refused(url, rate):
    with pytest.raises(OpenLoopError):
        openloop.run(url, rate=rate, seconds=1)


def test_percentile_is_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) is None
