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
