"""CPU sets and k6 discovery."""

from __future__ import annotations

import os

import pytest

from bench.machine import SetupError, cpu_sets, k6_binary, parse_cpus
from bench.versions import read_versions


def test_cpu_lists_read_like_taskset():
    assert parse_cpus("0") == [0]
    assert parse_cpus("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(SetupError, match="is not a CPU list"):
        parse_cpus("one")


def test_default_sets_split_the_allowed_cpus():
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        with pytest.raises(SetupError, match="needs two"):
            cpu_sets()
        return
    server, k6 = cpu_sets()
    assert server and k6 and not set(server) & set(k6) and sorted(server + k6) == allowed


def test_cpus_outside_the_affinity_mask_are_refused():
    with pytest.raises(SetupError, match="SERVER_CPUS must be CPUs this process may use"):
        cpu_sets(server="4096")


def test_the_venv_k6_has_the_pinned_major():
    path, version = k6_binary()
    assert os.access(path, os.X_OK)
    assert version.split(".")[0] == read_versions()["K6_VERSION"].split(".")[0]


def test_overlapping_server_and_k6_cpus_are_refused_in_one_line_with_the_fix():
    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(SetupError) as refused:
        cpu_sets(server=str(allowed[0]), k6=",".join(map(str, allowed)))
    message = str(refused.value)
    assert message.startswith(f"SERVER_CPUS and K6_CPUS share CPU {allowed[0]}") and "\n" not in message
    assert f"SERVER_CPUS={allowed[0]} K6_CPUS={allowed[-1]}" in message
