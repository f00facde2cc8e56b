"""Turn raw measurements (a k6 summary, resource samples) into `Metrics`, and rounds into one."""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping, Sequence

from bench.model import Latency, Metrics, Requests, Series, Usage

# k6/bench.js writes its handleSummary output in this shape (its header documents it).
K6_SUMMARY_VERSION = 1


class K6SummaryError(ValueError):
    """A k6 summary this code cannot read."""


def check_k6_summary(k6: Mapping[str, Any]) -> None:
    if k6.get("version") != K6_SUMMARY_VERSION:
        raise K6SummaryError(
            f"the k6 summary has version {k6.get('version')!r}, this code reads {K6_SUMMARY_VERSION}: "
            "update bench/metrics.py together with k6/bench.js."
        )


def latency_from_k6(k6: Mapping[str, Any]) -> Latency:
    """Latency of successful requests (ms); all null when no request succeeded."""
    values = k6.get("http_req_duration") or {}
    return {key: values.get(key) for key in ("p50", "p90", "p95", "p99", "avg")}  # type: ignore[return-value]


def requests_from_k6(k6: Mapping[str, Any]) -> Requests:
    total = int(k6["http_reqs"]["count"])
    # http_req_failed is a Rate: its "passes" are the requests that failed.
    failed = int(k6["http_req_failed"]["passes"])
    return {
        "successful": total - failed,
        "failed": failed,
        "error_rate": failed / total if total else 0.0,
        "checks_failed": int(k6["checks"]["fails"]),
        "dropped_iterations": int(k6["dropped_iterations"]["count"]),
    }


def usage(values: Iterable[float | None]) -> Usage:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "peak": None}
    return {"mean": statistics.fmean(present), "peak": max(present)}


def steady_rps(series: Series) -> float | None:
    """Mean req/s over the samples taken while k6 ran its most VUs (the hold phase of a ramp)."""
    vus = [v for v in series["vus"] if v is not None]
    if not vus:
        return None
    top = max(vus)
    rates = [r for r, v in zip(series["rps"], series["vus"]) if v == top and r is not None]
    return statistics.fmean(rates) if rates else None


def metrics_from_run(k6: Mapping[str, Any], series: Series, k6_cpus: int | None) -> Metrics:
    """One run's Metrics from its k6 summary and the samples taken while it ran."""
    check_k6_summary(k6)
    requests = requests_from_k6(k6)
    duration_s = float(k6["test_duration_s"])
    k6_cpu = usage(series["k6_cpu_cores"])
    share = k6_cpu["mean"] / k6_cpus if k6_cpu["mean"] is not None and k6_cpus else None
    return {
        "duration_s": duration_s,
        "latency_ms": latency_from_k6(k6),
        "requests": requests,
        "rps": requests["successful"] / duration_s if duration_s > 0 else 0.0,
        "rps_steady": steady_rps(series),
        "server_cpu_cores": usage(series["server_cpu_cores"]),
        "server_rss_mb": usage(series["server_rss_mb"]),
        "k6_cpu_cores": k6_cpu,
        "k6_cpu_share": share,
        "others_cpu_cores": usage(series["others_cpu_cores"]),
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _peak(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def aggregate(rounds: Sequence[Metrics]) -> Metrics | None:
    """Combine rounds: counts summed, peaks the maximum, every other number the median."""
    if not rounds:
        return None
    successful = sum(m["requests"]["successful"] for m in rounds)
    failed = sum(m["requests"]["failed"] for m in rounds)

    def use(key: str) -> Usage:
        return {"mean": _median([m[key]["mean"] for m in rounds]), "peak": _peak([m[key]["peak"] for m in rounds])}

    return {
        "duration_s": _median([m["duration_s"] for m in rounds]),
        "latency_ms": {k: _median([m["latency_ms"][k] for m in rounds]) for k in ("p50", "p90", "p95", "p99", "avg")},
        "requests": {
            "successful": successful,
            "failed": failed,
            "error_rate": failed / (successful + failed) if successful + failed else 0.0,
            "checks_failed": sum(m["requests"]["checks_failed"] for m in rounds),
            "dropped_iterations": sum(m["requests"]["dropped_iterations"] for m in rounds),
        },
        "rps": _median([m["rps"] for m in rounds]),
        "rps_steady": _median([m["rps_steady"] for m in rounds]),
        "server_cpu_cores": use("server_cpu_cores"),
        "server_rss_mb": use("server_rss_mb"),
        "k6_cpu_cores": use("k6_cpu_cores"),
        "k6_cpu_share": _median([m["k6_cpu_share"] for m in rounds]),
        "others_cpu_cores": use("others_cpu_cores"),
        "cpu_limit_cores": rounds[0].get("cpu_limit_cores"),
        "throttling": _throttling([m.get("throttling") for m in rounds]),
    }  # type: ignore[return-value]


def _throttling(rounds: Sequence[dict | None]) -> dict | None:
    """Throttling summed over the rounds that had a limit; null if none had."""
    present = [t for t in rounds if t]
    if not present:
        return None
    return {key: sum(t[key] for t in present) for key in ("periods", "throttled_periods", "throttled_s")}
