"""The checks `make bench` makes before and while its TestRuns run (bench/cluster/testruns.py)."""

from __future__ import annotations

import pytest

from bench.cluster import kube, testruns


def test_unschedulable_runners_are_explained_with_the_schedulers_reason():
    pods = [
        {"metadata": {"name": "k6-async-style-1-abcde"}, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False",
             "message": "0/6 nodes are available: 2 Insufficient cpu, 4 node(s) didn't match Pod's node affinity/selector."}]}},
        {"metadata": {"name": "k6-async-style-2-fghij"}, "status": {"phase": "Running", "conditions": []}},
    ]
    (line,) = testruns.pending_reasons(pods)
    assert line.startswith("k6-async-style-1-abcde cannot be scheduled: 0/6 nodes are available: 2 Insufficient cpu")
    assert "Troubleshooting" in line


@pytest.mark.parametrize(("text", "value"), [
    ("6", 6.0), ("500m", 0.5), (2, 2.0), ("12Gi", 12 * 2**30), ("512Mi", 512 * 2**20), ("1.5G", 1.5e9),
    ("16323412Ki", 16323412 * 1024), ("100k", 1e5),
])
def test_quantities_read_as_kubernetes_writes_them(text, value):
    assert kube.quantity(text) == pytest.approx(value)


@pytest.mark.parametrize(("text", "seconds"), [("45m", 2700), ("1h30m", 5400), ("90s", 90), ("2h", 7200)])
def test_bench_timeout_reads_as_a_go_duration(text, seconds):
    assert testruns.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "45", "1.5h", "45 minutes"])
def test_a_bad_bench_timeout_names_the_variable(text):
    with pytest.raises(kube.ClusterError, match="BENCH_TIMEOUT=45m"):
        testruns.parse_duration(text)
