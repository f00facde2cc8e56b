"""Small hand-made summaries: the report, observation and compare code need no load to test."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.metrics import aggregate
from bench.model import SCHEMA_VERSION, Metrics, Round, Summary

ROOT = Path(__file__).resolve().parents[2]


def metrics(p50: float, p99: float, rps: float, failed: int = 0, k6_share: float = 0.5, cpu: float = 1.0) -> Metrics:
    successful = int(rps * 30)
    return {
        "duration_s": 30.0,
        "latency_ms": {"p50": p50, "p90": p50 * 2, "p95": p50 * 3, "p99": p99, "avg": p50 * 1.2},
        "requests": {
            "successful": successful,
            "failed": failed,
            "error_rate": failed / (successful + failed),
            "checks_failed": failed,
            "dropped_iterations": 0,
        },
        "rps": rps,
        "rps_steady": rps * 1.1,
        "server_cpu_cores": {"mean": cpu, "peak": cpu * 1.2},
        "server_rss_mb": {"mean": 60.0, "peak": 70.0},
        "k6_cpu_cores": {"mean": k6_share, "peak": min(1.0, k6_share * 1.1)},
        "k6_cpu_share": k6_share,
        "others_cpu_cores": {"mean": 0.0, "peak": 0.05},
    }


def round_of(number: int, m: Metrics) -> Round:
    t = [0.5 * i for i in range(1, 7)]
    return {
        "round": number,
        "started": "2026-11-27T12:00:00+00:00",
        "target_rate": None,
        "metrics": m,
        "series": {
            "t_s": t,
            "rps": [None] + [m["rps"]] * 5,
            "vus": [8, 64, 64, 64, 64, 10],
            "server_cpu_cores": [None] + [1.0] * 5,
            "server_rss_mb": [60.0] * 6,
            "k6_cpu_cores": [None] + [0.5] * 5,
            "others_cpu_cores": [None] + [0.0] * 5,
        },
    }


def summary(servers: dict[str, list[Metrics]], run_id: str = "fixture") -> Summary:
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "created": "2026-11-27T12:00:00+00:00",
        "settings": {
            "where": "local",
            "profile": "quick",
            "rounds": max(len(r) for r in servers.values()),
            "workers": "",
            "server_cpus": [0],
            "k6_cpus": [1],
            "servers": list(servers),
            "command": "make bench-local PROFILE=quick",
        },
        "machine": {"cpu_model": "Test CPU", "cores": 2, "kernel": "6.0", "description": "fixture"},
        "versions": {"python": "3.11.7", "k6": "1.1.0"},
        "servers": {
            name: {
                "verification": {"ok": True, "reason": "contract, known answers and source checked"},
                "rounds": [round_of(i + 1, m) for i, m in enumerate(rounds)],
                "aggregate": aggregate(rounds),
                "open": None,
            }
            for name, rounds in servers.items()
        },
    }


@pytest.fixture
def two_servers() -> Summary:
    """async-style faster at every percentile and twice the req/s; no failures."""
    return summary(
        {
            "stdlib-style": [metrics(1.0, 4.0, 3000), metrics(1.2, 5.0, 2800), metrics(1.1, 4.5, 2900)],
            "async-style": [metrics(0.5, 2.0, 6000), metrics(0.6, 2.5, 5800), metrics(0.55, 2.2, 5900)],
        }
    )
