"""The `summary.json` schema: every number a benchmark run produced, local or on a cluster.

`results/<run-id>/summary.json` is one `Summary`. `make bench-local` writes it from k6's
handleSummary output and psutil samples; a cluster run writes the same shape from its own
sources (k6 summaries, Prometheus) and then calls `bench.report.write_report(run_dir)`, which
needs nothing but this file. Rules every producer keeps:

- Times are milliseconds (`latency_ms`) or seconds (`*_s`); CPU is in cores (1.0 = one CPU
  fully busy, summed over every process of the server, or of k6); memory is in MB (10**6 bytes).
- Latency is of successful requests only (k6's `http_req_duration{expected_response:true}`).
- A number nobody measured is `null`, never 0: a cluster run without k6 CPU says `null`.
- `aggregate` combines the rounds: request counts are summed (so a failure in any round shows),
  peaks take the maximum, every other number is the median over rounds.
- `error_rate` is failed / (successful + failed), a fraction (0.001 = 0.1 %).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

SCHEMA_VERSION = 1
# k6 at or above this share of its CPUs (mean over a round) may be the bottleneck, not the server:
# k6 docs ("Running large tests") warn that a saturated k6 reports inflated latencies, and here a
# k6 at 89-90 % already capped the req/s (docs/bench-local.md); a round at 80 % is too close.
K6_SATURATED = 0.8


class Latency(TypedDict):
    """Percentiles and mean of successful requests, in ms."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    avg: float | None


class Requests(TypedDict):
    successful: int
    failed: int  # non-2xx answers, timeouts and connection errors alike
    error_rate: float  # failed / (successful + failed)
    checks_failed: int  # k6 checks that failed (wrong status, body or `source`), counted apart
    dropped_iterations: int  # open model: arrivals k6 had no VU for; 0 in a closed model


class Usage(TypedDict):
    mean: float | None
    peak: float | None


class Throttling(TypedDict):
    """The server's CPU quota at work while k6 ran (cgroup cpu.stat): CFS periods, those in which
    the quota ran out, and the time the server's processes waited for the next period."""

    periods: int
    throttled_periods: int
    throttled_s: float


class Metrics(TypedDict):
    duration_s: float
    latency_ms: Latency
    requests: Requests
    rps: float  # successful requests per second over the whole run, ramps included
    rps_steady: float | None  # req/s while k6 ran its most VUs (a ramp's hold phase); null if unknown
    server_cpu_cores: Usage
    server_rss_mb: Usage  # sum of RSS over the server's process tree
    k6_cpu_cores: Usage
    k6_cpu_share: float | None  # k6 mean CPU / CPUs given to k6; >= K6_SATURATED: k6 was the limit
    others_cpu_cores: Usage  # CPU that other processes (or the hypervisor: steal) took from the pinned CPUs
    # Local runs with SERVER_CPU_LIMIT: the limit (cores) and its throttling; null without a limit.
    cpu_limit_cores: NotRequired[float | None]
    throttling: NotRequired[Throttling | None]


class Series(TypedDict):
    """Samples taken during one run, all lists the same length; `t_s` is seconds since k6 started."""

    t_s: list[float]
    rps: list[float | None]  # requests completed per second since the previous sample
    vus: list[int | None]  # k6's active VUs
    server_cpu_cores: list[float | None]
    server_rss_mb: list[float | None]
    k6_cpu_cores: list[float | None]
    others_cpu_cores: list[float | None]


class Round(TypedDict):
    round: int  # 1-based; servers alternate within a round (A B, A B, ...)
    started: str  # ISO 8601 UTC
    target_rate: float | None  # open model: the constant arrival rate (req/s); null otherwise
    metrics: Metrics
    series: Series


class OpenStep(TypedDict):
    """One probe of the search for the highest sustainable arrival rate."""

    rate: float
    dropped_pct: float
    error_rate: float
    k6_cpu_share: float | None
    sustained: bool  # dropped < 1 % and error rate < 0.1 %


class OpenLevel(TypedDict):
    fraction: float  # of max_rate: 0.5 or 0.9
    rate: float
    aggregate: Metrics


class OpenResult(TypedDict):
    max_rate: float | None  # highest sustained rate found; null if even the first step failed
    limited_by: Literal["server", "k6", "search bound"]
    steps: list[OpenStep]
    levels: list[OpenLevel]


class Verification(TypedDict):
    ok: bool
    reason: str  # one line: what was checked, or why the server was refused


class ServerResult(TypedDict):
    verification: Verification
    rounds: list[Round]  # open model: the runs at 90 % of max_rate
    aggregate: Metrics | None  # null when the server was refused or never measured
    open: OpenResult | None


class Settings(TypedDict):
    where: Literal["local", "cluster"]
    profile: str
    rounds: int
    workers: str  # as given to the servers; "" means each server's default (its CPUs)
    server_cpus: list[int] | None  # local: the CPU set the servers were pinned to
    k6_cpus: list[int] | None
    # local: the cores each server could use (SERVER_CPU_LIMIT, a CFS quota), null when unlimited,
    # and how it was set or why there was none
    server_cpu_limit: NotRequired[float | None]
    server_cpu_limit_how: NotRequired[str]
    servers: list[str]
    command: str  # the command that produced the run, to repeat it


class Machine(TypedDict):
    cpu_model: str
    cores: int
    kernel: str
    description: str  # free text: "local", or the cluster's node types


class Summary(TypedDict):
    schema: int
    run_id: str
    created: str  # ISO 8601 UTC
    settings: Settings
    machine: Machine
    versions: dict[str, str]  # python, granian, gunicorn, falcon, starlette, orjson, k6
    servers: dict[str, ServerResult]
    # Present only when the run was stopped before its last round: how and when (one line). The
    # rounds that finished are all there; those that did not are missing, never half-written.
    incomplete: NotRequired[str]


class SummaryError(ValueError):
    """A summary.json that cannot be read as a Summary."""


def save(summary: Summary, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def load(run_dir: Path) -> Summary:
    """Read `run_dir`/summary.json, checking the few keys every reader relies on."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise SummaryError(f"{path} does not exist: run `make bench-local` first, or pass an existing run id.")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SummaryError(f"{path} is not JSON ({error}): re-run the benchmark to rewrite it.") from None
    if summary.get("schema") != SCHEMA_VERSION:
        raise SummaryError(
            f"{path} has schema {summary.get('schema')!r}, this code reads {SCHEMA_VERSION}: re-run the benchmark."
        )
    for key in ("run_id", "settings", "machine", "versions", "servers"):
        if key not in summary:
            raise SummaryError(f"{path} lacks '{key}': re-run the benchmark to rewrite it.")
    return summary


def empty_usage() -> Usage:
    return {"mean": None, "peak": None}
