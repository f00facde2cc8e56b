"""What `collect` asks the cluster's Prometheus, per server, over one run's time window.

Whole-run latency percentiles are merged across every k6 runner: each runner pushes a native
histogram of its request durations, Prometheus sums them, and the percentile is taken from the
sum; percentiles of separate runners are never averaged (that would be a different number).
k6's histograms and counters are cumulative from each runner's start, so the last sample of the
run is the whole run; `increase()` would drop everything before the first push (5 s, half of a
smoke run).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from bench.cluster.kube import NAMESPACE, ClusterError
from bench.model import Series

# k6's remote-write output pushes every 5 s (K6_PROMETHEUS_RW_PUSH_INTERVAL default).
PUSH_INTERVAL_S = 5
# CPU rates span four of kube-prometheus-stack's 15 s scrapes (monitoring/kube-prometheus-stack.values.yaml),
# as Grafana's $__rate_interval does: fewer than two scrapes in a window leave no rate at all.
CPU_RATE_WINDOW_S = 60


@contextmanager
def prometheus(url: str | None) -> Iterator[str]:
    """The Prometheus base URL: `url` as given, or a port-forward to kube-prometheus-stack's."""
    if url:
        yield url.rstrip("/")
        return
    forward = subprocess.Popen(
        ["kubectl", "-n", "monitoring", "port-forward", "svc/prometheus-operated", ":9090"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = forward.stdout.readline() if forward.stdout else ""
        port = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not port:
            error = forward.stderr.read() if forward.poll() is not None and forward.stderr else ""
            raise ClusterError(f"cannot reach Prometheus in namespace monitoring ({(error or line).strip()}): "
                               "run make monitoring first.")
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        forward.terminate()
        forward.wait()


def query(base: str, promql: str, at: float) -> list[dict]:
    return _api(base, "query", {"query": promql, "time": f"{at:.3f}"})


def query_range(base: str, promql: str, start: float, end: float, step: float) -> list[dict]:
    return _api(base, "query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})


def _api(base: str, endpoint: str, params: dict[str, str]) -> list[dict]:
    url = f"{base}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        raise ClusterError(f"Prometheus refused {params['query']!r}: {error.read().decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ClusterError(f"Prometheus at {base} does not answer ({error}): is the port-forward up?") from None
    return body["data"]["result"]


def by_server(results: list[dict]) -> dict[str, float]:
    values = {}
    for item in results:
        value = float(item["value"][1])
        if not math.isnan(value):
            values[item["metric"].get("server", "")] = value
    return values


def pod_selector(server: str) -> str:
    """cAdvisor labels of the server's Deployment pods (<deployment>-<replicaset hash>-<suffix>)."""
    return f'namespace="{NAMESPACE}", container="server", pod=~"{server}-[a-z0-9]+-[a-z0-9]+"'


def k6_selector(server: str) -> str:
    """cAdvisor labels of the server's k6 runner pods (k6-<server>-<n>-<suffix>)."""
    return f'namespace="{NAMESPACE}", container="k6", pod=~"k6-{server}-[0-9]+-[a-z0-9]+"'


def resource_queries(server: str) -> dict[str, str]:
    return {
        "server_cpu_cores": f"sum(rate(container_cpu_usage_seconds_total{{{pod_selector(server)}}}[{CPU_RATE_WINDOW_S}s]))",
        "server_rss_mb": f"sum(container_memory_rss{{{pod_selector(server)}}}) / 1e6",
        "k6_cpu_cores": f"sum(rate(container_cpu_usage_seconds_total{{{k6_selector(server)}}}[{CPU_RATE_WINDOW_S}s]))",
    }


def runner_ends(base: str, run_id: str, at: float, window: str) -> dict[tuple[str, str, str], float]:
    """When each k6 runner of the run pushed its last samples, keyed by (server, instance_id, testrun_name)."""
    ends: dict[tuple[str, str, str], float] = {}
    for item in query(base, f'k6_http_reqs_total{{run="{run_id}"}}[{window}]', at):
        m = item["metric"]
        key = (m.get("server", ""), m.get("instance_id", ""), m.get("testrun_name", ""))
        ends[key] = max(ends.get(key, 0.0), float(item["values"][-1][0]))
    return ends


def merged_histogram(run_id: str, ends: dict[tuple[str, str, str], float]) -> str:
    """Every runner's final (whole-run) histogram of successful requests, summed per server.

    k6's native histograms are cumulative from each runner's start, so each runner's last sample
    holds its whole run; `@` reads it even after k6's stale markers end the series. Measured on a
    smoke run: p99 from `increase()` over the run was 12 % below k6's own (the first 5 s push is
    its baseline), the last samples agreed with k6 to 0.5 %.
    """
    parts = [
        f'k6_http_req_duration_seconds{{run="{run_id}", expected_response="true", server="{server}", '
        f'instance_id="{instance}", testrun_name="{testrun}"}} @ {t:.3f}'
        for (server, instance, testrun), t in sorted(ends.items())
    ]
    return f"sum by (server) ({' or '.join(parts)})"


def whole_run(base: str, run_id: str, start: float, end: float) -> dict[str, dict[str, float]]:
    """Per server: latency percentiles (ms), request counts and check failures over the whole run."""
    at = end + 2 * PUSH_INTERVAL_S
    window = f"{math.ceil(at - start) + 60}s"  # the run label keeps other runs out; slack costs nothing
    ends = runner_ends(base, run_id, at, window)
    out: dict[str, dict[str, float]] = {}
    if not ends:
        return out
    merged = merged_histogram(run_id, ends)

    def put(key: str, values: dict[str, float], scale: float = 1.0) -> None:
        for server, value in values.items():
            out.setdefault(server, {})[key] = value * scale

    for q in (50, 90, 95, 99):
        put(f"p{q}", by_server(query(base, f"histogram_quantile({q / 100}, {merged})", at)), 1000)
    put("avg", by_server(query(base, f"histogram_sum({merged}) / histogram_count({merged})", at)), 1000)
    for expected, key in (("true", "successful"), ("false", "failed")):
        reqs = f'k6_http_reqs_total{{run="{run_id}", expected_response="{expected}"}}'
        put(key, by_server(query(base, f"sum by (server) (last_over_time({reqs}[{window}]))", at)))
    dropped = f'k6_dropped_iterations_total{{run="{run_id}"}}'
    put("dropped", by_server(query(base, f"sum by (server) (last_over_time({dropped}[{window}]))", at)))
    # k6 writes checks as a pass ratio per check and runner; each check runs once per iteration.
    checks = query(base, f'last_over_time(k6_checks_rate{{run="{run_id}"}}[{window}])', at)
    iterations = query(base, f'last_over_time(k6_iterations_total{{run="{run_id}"}}[{window}])', at)
    runner = lambda m: (m.get("server", ""), m.get("instance_id", ""), m.get("testrun_name", ""))  # noqa: E731
    counts: dict[tuple, float] = {}
    for item in iterations:
        counts[runner(item["metric"])] = counts.get(runner(item["metric"]), 0.0) + float(item["value"][1])
    for item in checks:
        failed = (1 - float(item["value"][1])) * counts.get(runner(item["metric"]), 0.0)
        put("checks_failed", {item["metric"].get("server", ""): out.get(item["metric"].get("server", ""), {}).get("checks_failed", 0.0) + failed})
    return out


def completed_per_step(base: str, run_id: str, server: str, times: list[float], step: float) -> list[float | None]:
    """Requests completed per second in each step ending at `times[i]`, from every push of k6's counters.

    Each runner's counters start at 0 and k6 pushes them every 5 s, so the growth between two
    pushes (or from 0 to the first) is what completed in between, whichever step it falls in.
    """
    at = times[-1] + 2 * PUSH_INTERVAL_S
    window = f"{math.ceil(at - times[0]) + 60}s"
    ok = f'k6_http_reqs_total{{run="{run_id}", server="{server}", expected_response="true"}}'
    completed: list[float | None] = [None] * len(times)
    for item in query(base, f"{ok}[{window}]", at):
        previous = 0.0
        for t, value in item["values"]:
            index = max(0, math.ceil((float(t) - times[0]) / step))
            if index < len(times):
                completed[index] = (completed[index] or 0.0) + float(value) - previous
            previous = float(value)
    return [None if c is None else c / step for c in completed]


def series(base: str, run_id: str, server: str, start: float, end: float) -> Series:
    """Samples over the run at one step, every list the same length; null where nothing was measured."""
    end += PUSH_INTERVAL_S  # k6's last push lands after its pod's finishedAt second
    # A whole number of k6's pushes per step, about 200 steps per run.
    step = PUSH_INTERVAL_S * max(1, math.ceil((end - start) / 200 / PUSH_INTERVAL_S))
    times = [start + i * step for i in range(math.ceil((end - start) / step) + 1)]
    queries = {"vus": f'sum(k6_vus{{run="{run_id}", server="{server}"}})', **resource_queries(server)}
    columns: dict[str, list] = {}
    for key, promql in queries.items():
        found = query_range(base, promql, start, times[-1], step)
        values = {round(float(t), 3): float(v) for t, v in (found[0]["values"] if found else [])}
        columns[key] = [values.get(round(t, 3)) for t in times]
    return {
        "t_s": [round(t - start, 3) for t in times],
        "rps": completed_per_step(base, run_id, server, times, step),
        "vus": [None if v is None else int(v) for v in columns["vus"]],
        "server_cpu_cores": columns["server_cpu_cores"],
        "server_rss_mb": columns["server_rss_mb"],
        "k6_cpu_cores": columns["k6_cpu_cores"],
        # Other pods' CPU on the servers' nodes is not measured on a cluster (model: unmeasured is null).
        "others_cpu_cores": [None] * len(times),
    }

