"""The sampler sums CPU and memory over a server's whole process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.k6run import Sampler

# A parent that starts a child, both spinning for a few seconds: a runner and its worker.
TREE = """
import subprocess, sys, time
spin = "import time\\nend = time.monotonic() + 4\\nwhile time.monotonic() < end: pass"
child = subprocess.Popen([sys.executable, "-c", spin])
exec(spin)
child.wait()
"""


def test_cpu_and_rss_are_summed_over_the_tree_and_series_stay_aligned(free_port):
    parent = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = psutil.Process(parent.pid).children()[0]
        sampler = Sampler(parent.pid, psutil.Process(parent.pid), f"http://127.0.0.1:{free_port}", [0])
        start = time.monotonic()
        for _ in range(4):
            time.sleep(0.5)
            sampler.sample(time.monotonic() - start)
        rss_of_child = child.memory_info().rss / 1e6
    finally:
        parent.kill()
        parent.wait()
    series = sampler.series
    assert len({len(values) for values in series.values()}) == 1
    assert series["server_cpu_cores"][0] is None and all(v > 0 for v in series["server_cpu_cores"][1:])
    assert all(rss > rss_of_child for rss in series["server_rss_mb"])
    assert all(v is None or v >= 0 for v in series["others_cpu_cores"])
    # No k6 answers on that port: request rates are unknown, not zero.
    assert series["rps"] == [None] * 4
