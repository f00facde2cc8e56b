"""A finished cluster run as the summary.json + report of `make bench-local` (`make results`).

The run's record (cluster-run.json, written by `testruns.run`) gives the window, the runners and
their logs; Prometheus gives the numbers; each runner's own k6 summary cross-checks them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bench.cluster.kube import ClusterError, say, utc
from bench.cluster.prometheus import prometheus, series, whole_run
from bench.metrics import aggregate, steady_rps, usage
from bench.model import SCHEMA_VERSION, Metrics, Summary, save
from bench.report import terminal_text, write_report
from bench.versions import read_versions

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
RECORD = "cluster-run.json"
# Native histograms at k6's default resolution have buckets about 9 % wide (schema 3, 2^(1/8));
# an estimate inside a bucket can differ from k6's exact percentile by up to that, plus rounding.
CROSS_CHECK_TOLERANCE = 0.10


def collect(run_dir: Path, prometheus_url: str | None = None) -> Summary:
    """summary.json, report.md and plots for a finished cluster run, from Prometheus."""
    record_path = run_dir / RECORD
    if not record_path.is_file():
        raise ClusterError(f"{record_path} does not exist: only runs made by make bench can be collected.")
    record = json.loads(record_path.read_text())
    start, end = utc(record["start"]), utc(record["end"])
    with prometheus(prometheus_url or os.environ.get("PROMETHEUS_URL")) as base:
        numbers = whole_run(base, record["run_id"], start, end)
        summary = new_summary(record)
        for server in record["servers"]:
            summary["servers"][server] = server_result(base, record, run_dir, server, numbers.get(server, {}))
    save(summary, run_dir)
    report = write_report(run_dir)
    print(terminal_text(summary))
    print(f"\nReport: {report}")
    return summary


def new_summary(record: dict) -> Summary:
    nodes = record.get("nodes", {})
    return {
        "schema": SCHEMA_VERSION,
        "run_id": record["run_id"],
        "created": record["end"],
        "settings": {
            "where": "cluster",
            "profile": record["profile"],
            "rounds": 1,
            "workers": "",
            "server_cpus": None,
            "k6_cpus": None,
            "servers": record["servers"],
            "command": record.get("command", ""),
        },
        "machine": {
            "cpu_model": nodes.get("cpu_model", "unknown"),
            "cores": nodes.get("cores", 0),
            "kernel": nodes.get("kernel", "unknown"),
            "description": f"cluster {record.get('context', '?')}: {nodes.get('pools', 'nodes unknown')}; "
                           f"{record['parallelism']} k6 runner(s) per server",
        },
        "versions": server_versions(),
        "servers": {},
    }


def server_result(base: str, record: dict, run_dir: Path, server: str, numbers: dict[str, float]) -> dict:
    start, end = utc(record["start"]), utc(record["end"])
    runners = [r for r in record.get("runners", []) if r["testrun"] == f"k6-{server}"]
    failed_runners = [r["pod"] for r in runners if r.get("exit_code") not in (0, 99)]
    if not numbers.get("successful") and not numbers.get("failed"):
        return {"verification": {"ok": False, "reason": f"Prometheus holds no k6 requests for run {record['run_id']} "
                                 f"and server {server}: check K6_PROMETHEUS_RW_SERVER_URL in the TestRun."},
                "rounds": [], "aggregate": None, "open": None}
    samples = series(base, record["run_id"], server, start, end)
    logs = [k6_log_summary((run_dir / "logs" / f"{r['pod']}.log").read_text())
            for r in runners if (run_dir / "logs" / f"{r['pod']}.log").is_file()]
    durations = [log["duration_s"] for log in logs if "duration_s" in log]
    duration_s = max(durations) if durations else end - start
    successful, failed = round(numbers.get("successful", 0)), round(numbers.get("failed", 0))
    cpu_limit = (record.get("runner_cpu") or {}).get(f"k6-{server}")
    k6_cpu = usage(samples["k6_cpu_cores"])
    metrics: Metrics = {
        "duration_s": duration_s,
        "latency_ms": {key: numbers.get(key) for key in ("p50", "p90", "p95", "p99", "avg")},  # type: ignore[typeddict-item]
        "requests": {
            "successful": successful,
            "failed": failed,
            "error_rate": failed / (successful + failed) if successful + failed else 0.0,
            "checks_failed": round(numbers.get("checks_failed", 0)),
            "dropped_iterations": round(numbers.get("dropped", 0)),
        },
        "rps": successful / duration_s if duration_s > 0 else 0.0,
        "rps_steady": steady_rps(samples),
        "server_cpu_cores": usage(samples["server_cpu_cores"]),
        "server_rss_mb": usage(samples["server_rss_mb"]),
        "k6_cpu_cores": k6_cpu,
        "k6_cpu_share": k6_cpu["mean"] / (cpu_limit * record["parallelism"]) if k6_cpu["mean"] is not None and cpu_limit else None,
        "others_cpu_cores": usage(samples["others_cpu_cores"]),
    }
    reason = f"{len(runners)} k6 runner(s)" + (f", failed: {', '.join(failed_runners)}" if failed_runners else " ran to the end")
    if record["parallelism"] == 1 and len(logs) == 1:
        differences = cross_check({**numbers, "successful": successful, "failed": failed}, logs[0])
        if differences:
            say(f"{server}: Prometheus and k6's summary disagree: {'; '.join(differences)}.")
            reason += "; Prometheus and k6's summary disagree: " + "; ".join(differences)
        else:
            reason += f"; Prometheus agrees with k6's summary (p50/p95/p99 within {CROSS_CHECK_TOLERANCE:.0%}, request count exact)"
    return {
        "verification": {"ok": not failed_runners, "reason": reason},
        "rounds": [{"round": 1, "started": record["start"], "target_rate": None, "metrics": metrics, "series": samples}],
        "aggregate": aggregate([metrics]),
        "open": None,
    }


def k6_log_summary(log: str) -> dict[str, float]:
    """The numbers of k6/bench.js's text summary in a runner log (ms, counts)."""
    found: dict[str, float] = {}
    latency = re.search(r"latency \(ok only\)\s+(.*)", log)
    if latency:
        for key, value in re.findall(r"(p50|p90|p95|p99|avg) ([\d.]+) ms", latency.group(1)):
            found[key] = float(value)
    for key, pattern in (("requests", r"requests\s+(\d+)"), ("failed", r"failed requests\s+(\d+)"),
                         ("duration_s", r"duration\s+([\d.]+) s")):
        match = re.search(pattern, log)
        if match:
            found[key] = float(match.group(1))
    return found


def cross_check(prom: dict[str, float], k6: dict[str, float]) -> list[str]:
    """Where Prometheus and k6's own summary disagree beyond the histogram's resolution."""
    differences = []
    for key in ("p50", "p95", "p99"):
        if key in k6 and key in prom and k6[key] > 0:
            # Below 1 ms a bucket boundary alone can move the estimate by more than 10 %.
            if abs(prom[key] - k6[key]) > max(CROSS_CHECK_TOLERANCE * k6[key], 0.2):
                differences.append(f"{key} {prom[key]:.2f} ms vs k6 {k6[key]:.2f} ms")
    total = prom.get("successful", 0) + prom.get("failed", 0)
    if "requests" in k6 and round(total) != int(k6["requests"]):
        differences.append(f"{round(total)} requests vs k6 {int(k6['requests'])}")
    return differences


def server_versions() -> dict[str, str]:
    """What the images hold: Python from versions.env's base image, packages from the lock files."""
    env = read_versions()
    python = re.search(r":(\d+\.\d+(?:\.\d+)?)", env.get("PYTHON_BASE", ""))
    found = {"python": python.group(1) if python else "unknown", "k6": env.get("K6_VERSION", "unknown")}
    for lock in sorted((ROOT / "servers").glob("*/requirements.lock")):
        for name, version in re.findall(r"^([a-z0-9_.-]+)==([^\s\\]+)", lock.read_text(), re.MULTILINE):
            if name in ("granian", "gunicorn", "falcon", "starlette", "orjson"):
                found[name] = version
    return found

