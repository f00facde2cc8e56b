"""k6 summary → Metrics, and rounds → one aggregate."""

from __future__ import annotations

import pytest

from bench.metrics import K6SummaryError, aggregate, metrics_from_run, requests_from_k6, steady_rps
from bench.tests.conftest import metrics, round_of


def k6_summary(count: int = 1000, failed: int = 0, dropped: int = 0, checks_failed: int = 0) -> dict:
    """The shape k6/bench.js's handleSummary writes (its header documents it)."""
    return {
        "version": 1,
        "server": "async-style",
        "test_duration_s": 10.0,
        "http_reqs": {"count": count, "rate": count / 10},
        "http_req_duration": {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "avg": 1.5, "min": 0.1, "max": 9.0},
        "http_req_failed": {"rate": failed / count, "passes": failed, "fails": count - failed},
        "checks": {"rate": 1.0, "passes": 3 * count - checks_failed, "fails": checks_failed},
        "iterations": {"count": count, "rate": count / 10},
        "dropped_iterations": {"count": dropped, "rate": dropped / 10},
    }


def test_failed_requests_are_counted_apart_from_successful_ones():
    requests = requests_from_k6(k6_summary(count=1000, failed=10, dropped=5, checks_failed=12))
    assert requests == {
        "successful": 990,
        "failed": 10,
        "error_rate": 0.01,
        "checks_failed": 12,
        "dropped_iterations": 5,
    }


def test_a_run_combines_k6_numbers_and_samples():
    series = round_of(1, metrics(1, 2, 100))["series"]
    m = metrics_from_run(k6_summary(count=2000, failed=0), series, k6_cpus=1)
    assert m["latency_ms"] == {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "avg": 1.5}
    assert m["rps"] == 200.0
    assert m["k6_cpu_cores"] == {"mean": 0.5, "peak": 0.5}
    assert m["k6_cpu_share"] == 0.5
    assert m["server_rss_mb"]["peak"] == 60.0


def test_a_run_with_no_success_has_no_latency():
    k6 = {**k6_summary(count=10, failed=10), "http_req_duration": None}
    m = metrics_from_run(k6, round_of(1, metrics(1, 2, 100))["series"], k6_cpus=1)
    assert m["latency_ms"]["p50"] is None and m["requests"]["successful"] == 0


def test_an_unknown_k6_summary_version_is_refused():
    with pytest.raises(K6SummaryError, match="version"):
        metrics_from_run({**k6_summary(), "version": 2}, round_of(1, metrics(1, 2, 100))["series"], 1)


def test_steady_rate_uses_only_samples_at_the_most_vus():
    series = {"rps": [None, 10.0, 100.0, 110.0, 5.0], "vus": [1, 5, 64, 64, 3]}
    assert steady_rps(series) == 105.0


def test_aggregate_sums_counts_takes_peak_maximum_and_median_of_the_rest():
    rounds = [metrics(1.0, 4.0, 1000, failed=0), metrics(3.0, 9.0, 3000, failed=7), metrics(2.0, 5.0, 2000)]
    rounds[1]["server_rss_mb"]["peak"] = 99.0
    agg = aggregate(rounds)
    assert agg["latency_ms"]["p50"] == 2.0 and agg["latency_ms"]["p99"] == 5.0
    assert agg["rps"] == 2000
    # A failure in any round shows in the total, never hidden by a median.
    assert agg["requests"]["failed"] == 7
    assert agg["requests"]["successful"] == 30 * (1000 + 3000 + 2000)
    assert agg["requests"]["error_rate"] == pytest.approx(7 / (180_000 + 7))
    assert agg["server_rss_mb"]["peak"] == 99.0


def test_aggregate_of_nothing_is_none():
    assert aggregate([]) is None
