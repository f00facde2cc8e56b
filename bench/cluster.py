"""Benchmark runs on a cluster (`make bench`, `make results`, `make deploy`) and their results.

    python -m bench.cluster run --run-id ID --servers "stdlib-style async-style" --profile seed \\
        --parallelism 2 --timeout 45m
    python -m bench.cluster collect --run-id ID [--prometheus-url http://127.0.0.1:9090]
    python -m bench.cluster kustomization k8s/overlays/hetzner .build/deploy stdlib-style=REG/stdlib-style:TAG ...

`run` applies the TestRuns (k6/render.py), waits for them, checks the runner pods, keeps their
logs and the run's time window in results/<run-id>/cluster-run.json, then collects. `collect`
asks Prometheus (through `kubectl port-forward` unless given a URL) for whole-run numbers and
writes the same summary.json + report as `make bench-local`.

Whole-run latency percentiles are merged across every k6 runner: each runner pushes a native
histogram of its request durations, Prometheus sums them, and the percentile is taken from the
sum; percentiles of separate runners are never averaged (that would be a different number).
k6's histograms and counters are cumulative from each runner's start, so the last sample of the
run is the whole run; `increase()` would drop everything before the first push (5 s, half of a
smoke run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from bench.metrics import aggregate, steady_rps, usage
from bench.model import SCHEMA_VERSION, Metrics, Series, Summary, save
from bench.report import terminal_text, write_report
from bench.versions import read_versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
NAMESPACE = "py-bench"
RECORD = "cluster-run.json"
# k6's remote-write output pushes every 5 s (K6_PROMETHEUS_RW_PUSH_INTERVAL default).
PUSH_INTERVAL_S = 5
# Native histograms at k6's default resolution have buckets about 9 % wide (schema 3, 2^(1/8));
# an estimate inside a bucket can differ from k6's exact percentile by up to that, plus rounding.
CROSS_CHECK_TOLERANCE = 0.10
# The node pool the k6 runners are placed on (k6/testrun/testrun.yaml nodeSelector).
CLIENT_POOL = "client-pool"
# A kind node shares this machine's few CPUs: the seed's 6-CPU runners would never schedule.
KIND_RUNNER = ("500m", "512Mi")
POLL_S = 5
# CPU rates span four of kube-prometheus-stack's 15 s scrapes (monitoring/kube-prometheus-stack.values.yaml),
# as Grafana's $__rate_interval does: fewer than two scrapes in a window leave no rate at all.
CPU_RATE_WINDOW_S = 60


class ClusterError(RuntimeError):
    """Something the person running the benchmark can fix; the message says how."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ClusterError("kubectl is not installed: install it from https://kubernetes.io/docs/tasks/tools/.") from None
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def parse_duration(text: str) -> float:
    """A Go-style duration (45m, 1h30m, 90s) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or not parts:
        raise ClusterError(f"'{text}' is not a duration: use e.g. BENCH_TIMEOUT=45m or 1h30m.")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


# --- deploy ------------------------------------------------------------------------------------


def kustomization(overlay: Path, out_dir: Path, images: dict[str, str]) -> dict[str, Any]:
    """A kustomization applying `overlay` with each server's image replaced by `images[server]`.

    The names to replace are read from the rendered overlay, so an overlay that already renames
    the images (kind: localhost:5005/<server>) is matched as it renders.
    """
    rendered = kubectl("kustomize", str(overlay)).stdout
    names = {ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
             for ref in re.findall(r"^\s*-?\s*image:\s*['\"]?([^'\"\s]+)", rendered, re.MULTILINE)}
    entries = []
    for server, ref in images.items():
        matches = [name for name in names if name.rsplit("/", 1)[-1] == server]
        if len(matches) != 1:
            raise ClusterError(f"{overlay} deploys no single image named {server}: check its images: list.")
        new_name, _, new_tag = ref.rpartition(":")
        if not new_name or "/" in new_tag:
            raise ClusterError(f"image '{ref}' has no tag: set STDLIB_STYLE_TAG / ASYNC_STYLE_TAG.")
        entries.append({"name": matches[0], "newName": new_name, "newTag": new_tag})
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay.resolve(), out_dir.resolve())],
        "images": entries,
    }


# --- run ---------------------------------------------------------------------------------------


def current_context() -> str:
    return kubectl("config", "current-context", check=False).stdout.strip()


def render_testruns(args: argparse.Namespace, kind: bool) -> str:
    command = [sys.executable, str(ROOT / "k6" / "render.py"), "--run", args.run_id, "--profile", args.profile,
               "--parallelism", str(args.parallelism), "--servers", " ".join(args.servers)]
    if args.rate:
        command += ["--rate", str(args.rate)]
    if args.duration:
        command += ["--duration", args.duration]
    if kind:
        command += ["--runner-cpu", KIND_RUNNER[0], "--runner-memory", KIND_RUNNER[1]]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(result.stderr.strip() or "k6/render.py failed without a message.")
    return result.stdout


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU or memory quantity ("6", "500m", "12Gi", "1.5G") as cores or bytes."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def testruns(manifests: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc and doc.get("kind") == "TestRun"]


def runner_cpus(manifests: str) -> dict[str, float | None]:
    """CPU limit of one runner pod per TestRun name, in cores."""
    limits = {}
    for testrun in testruns(manifests):
        cpu = testrun["spec"]["runner"].get("resources", {}).get("limits", {}).get("cpu")
        limits[testrun["metadata"]["name"]] = quantity(cpu) if cpu is not None else None
    return limits


def pod_requests(spec: dict) -> tuple[float, float]:
    """CPU (cores) and memory (bytes) a pod spec asks the scheduler for, over its containers."""
    cpu = memory = 0.0
    for container in spec.get("containers", []):
        requests = container.get("resources", {}).get("requests", {})
        cpu += quantity(requests.get("cpu", 0))
        memory += quantity(requests.get("memory", 0))
    return cpu, memory


def check_client_pool(manifests: str, context: str) -> None:
    """Refuse a run whose k6 runners the client pool cannot hold all at once.

    The operator starts a TestRun's runners together only when every one of them is up, and
    both servers' TestRuns are applied together: with more runners than fit, some stay Pending
    and the run waits until BENCH_TIMEOUT. Free room is each client node's allocatable CPU and
    memory less what its pods already request (not counting k6's own pods, the previous run's,
    which `run` deletes next).
    """
    runners = [
        (testrun["spec"]["runner"].get("resources", {}).get("requests", {}), testrun["spec"].get("parallelism", 1))
        for testrun in testruns(manifests)
    ]
    count = sum(parallelism for _, parallelism in runners)
    cpu = max(quantity(requests.get("cpu", 0)) for requests, _ in runners)
    memory = max(quantity(requests.get("memory", 0)) for requests, _ in runners)
    nodes = json.loads(kubectl("get", "nodes", "-l", f"pool={CLIENT_POOL}", "-o", "json").stdout).get("items", [])
    if not nodes:
        raise ClusterError(
            f"no node in context {context} is labelled pool={CLIENT_POOL}, where the k6 runners go: check "
            "kubectl get nodes -L pool (kind: make kind-down kind-up; Hetzner: iac/hetzner-k3s-cluster.yaml)."
        )
    used: dict[str, list[float]] = {node["metadata"]["name"]: [0.0, 0.0] for node in nodes}
    pods = json.loads(kubectl("get", "pods", "--all-namespaces", "-o", "json").stdout).get("items", [])
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if node not in used or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if pod["metadata"].get("labels", {}).get("app") == "k6":
            continue
        pod_cpu, pod_memory = pod_requests(pod["spec"])
        used[node][0] += pod_cpu
        used[node][1] += pod_memory
    room = 0
    for node in nodes:
        allocatable = node.get("status", {}).get("allocatable", {})
        free_cpu = quantity(allocatable.get("cpu", 0)) - used[node["metadata"]["name"]][0]
        free_memory = quantity(allocatable.get("memory", 0)) - used[node["metadata"]["name"]][1]
        room += max(0, min(math.floor(free_cpu / cpu) if cpu else count, math.floor(free_memory / memory) if memory else count))
    if room < count:
        raise ClusterError(
            f"the {len(nodes)} {CLIENT_POOL} node(s) have room for {room} of the run's {count} k6 runners "
            f"({cpu:g} CPU, {memory / 2**30:g} GiB each, parallelism × servers): lower PARALLELISM or SERVERS, "
            f"or add {CLIENT_POOL} nodes (iac/hetzner-k3s-cluster.yaml)."
        )


def stages(names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        result = kubectl("-n", NAMESPACE, "get", "testrun", name, "-o", "json", check=False)
        found[name] = json.loads(result.stdout).get("status", {}).get("stage", "") if result.returncode == 0 else "missing"
    return found


def runner_pods(name: str) -> list[dict]:
    result = kubectl("-n", NAMESPACE, "get", "pods", "-l", f"k6_cr={name},runner=true", "-o", "json")
    return json.loads(result.stdout).get("items", [])


def pending_reasons(pods: Sequence[dict]) -> list[str]:
    """One line per pod the scheduler cannot place, with the scheduler's own reason."""
    lines = []
    for pod in pods:
        status = pod.get("status", {})
        if status.get("phase") != "Pending":
            continue
        for condition in status.get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                lines.append(f"{pod['metadata']['name']} cannot be scheduled: {condition.get('message', '').strip()} "
                             "(README, Troubleshooting: pods stay Pending)")
    return lines


def wait(names: Sequence[str], timeout_s: float) -> None:
    """Poll the TestRuns' stage until every one is finished or one fails; say how it goes."""
    started, last, last_said = time.monotonic(), None, 0.0
    while True:
        now = stages(names)
        elapsed = time.monotonic() - started
        clock = f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d}"
        if now != last or elapsed - last_said >= 60:
            say(f"[{clock}] " + ", ".join(f"{n}: {s or 'pending'}" for n, s in now.items()))
            if now == last:  # a minute without progress: say what holds the runners back, if anything
                for name in names:
                    for line in pending_reasons(runner_pods(name)):
                        say(f"[{clock}] {line}")
            last, last_said = now, elapsed
        failed = [n for n, s in now.items() if s in ("error", "missing")]
        if failed:
            raise ClusterError(
                f"TestRun {', '.join(failed)} ended in stage {now[failed[0]]}: see "
                f"kubectl -n {NAMESPACE} describe testrun {failed[0]} and the k6-operator's logs."
            )
        if all(s == "finished" for s in now.values()):
            return
        if elapsed > timeout_s:
            raise ClusterError(
                f"the TestRuns did not finish within {clock}: see kubectl -n {NAMESPACE} get testruns,pods; "
                "make bench-clean deletes them (raise BENCH_TIMEOUT for long profiles)."
            )
        time.sleep(POLL_S)


def runner_outcomes(names: Sequence[str], run_dir: Path) -> tuple[list[dict], list[str]]:
    """Each runner pod's window, exit code and log (kept in logs/); the problems found, one line each."""
    runners, problems = [], []
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    for name in names:
        pods = runner_pods(name)
        if not pods:
            problems.append(f"{name}: no runner pod left to read; was the TestRun deleted while it ran?")
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            statuses = pod.get("status", {}).get("containerStatuses") or [{}]
            terminated = statuses[0].get("state", {}).get("terminated") or {}
            code = terminated.get("exitCode")
            log = kubectl("-n", NAMESPACE, "logs", pod_name, check=False).stdout
            (run_dir / "logs" / f"{pod_name}.log").write_text(log)
            runners.append({"testrun": name, "pod": pod_name, "exit_code": code,
                            "started": terminated.get("startedAt"), "finished": terminated.get("finishedAt")})
            if code == 99:
                say(f"{pod_name}: k6 thresholds failed (exit 99): errors above 1 % or failed checks; the numbers are kept.")
            elif code != 0:
                reason = terminated.get("reason") or pod.get("status", {}).get("reason") or pod.get("status", {}).get("phase")
                problems.append(f"{pod_name} failed (exit {code}, {reason}): kubectl -n {NAMESPACE} logs {pod_name}")
    return runners, problems


def describe_nodes() -> dict[str, Any]:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout).get("items", [])
    pools: dict[str, list[dict]] = {}
    for node in nodes:
        pools.setdefault(node["metadata"].get("labels", {}).get("pool", "other"), []).append(node)
    app = pools.get("app-pool") or nodes
    labels = app[0]["metadata"].get("labels", {}) if app else {}
    info = app[0].get("status", {}).get("nodeInfo", {}) if app else {}
    pools_text = ", ".join(
        f"{pool} {len(members)}x {members[0]['metadata'].get('labels', {}).get('node.kubernetes.io/instance-type', '?')}"
        for pool, members in sorted(pools.items())
    )
    return {
        "cpu_model": labels.get("node.kubernetes.io/instance-type", "unknown node type"),
        "cores": int(app[0].get("status", {}).get("capacity", {}).get("cpu", 0)) if app else 0,
        "kernel": info.get("kernelVersion", "unknown"),
        "pools": pools_text,
    }


def run(args: argparse.Namespace) -> int:
    args.run_id = args.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.command = shlex.join(["make", "bench", f"RUN_ID={args.run_id}", f"SERVERS={' '.join(args.servers)}",
                               f"PROFILE={args.profile}", f"PARALLELISM={args.parallelism}"])
    run_dir = Path(args.results) / args.run_id
    if (run_dir / "summary.json").exists():
        raise ClusterError(f"{run_dir} already holds a run: pick another RUN_ID, or leave it empty for the time now.")
    context = current_context()
    manifests = render_testruns(args, kind=context.startswith("kind-"))
    names = [f"k6-{server}" for server in args.servers]
    say(f"Run {args.run_id}: profile {args.profile}, {args.parallelism} runner(s) per server, context {context}.")
    if kubectl("get", "crd", "testruns.k6.io", check=False).returncode != 0:
        raise ClusterError(f"the k6-operator is not installed in context {context}: run make monitoring (Tilt installs it on kind).")
    check_client_pool(manifests, context)
    # A finished TestRun is never run again by the operator: the previous run's go first.
    kubectl("-n", NAMESPACE, "delete", "testrun", "-l", "app.kubernetes.io/component=load", "--ignore-not-found")
    kubectl("apply", "-f", "-", input=manifests)
    wait(names, parse_duration(args.timeout))
    runners, problems = runner_outcomes(names, run_dir)
    windows = [(utc(r["started"]), utc(r["finished"])) for r in runners if r["started"] and r["finished"]]
    if not windows:
        raise ClusterError(f"no runner pod of {', '.join(names)} ran to the end: " + "; ".join(problems))
    record = {
        "run_id": args.run_id,
        "context": context,
        "profile": args.profile,
        "parallelism": args.parallelism,
        "servers": list(args.servers),
        "start": iso(min(w[0] for w in windows)),
        "end": iso(max(w[1] for w in windows)),
        "runner_cpu": runner_cpus(manifests),
        "runners": runners,
        "nodes": describe_nodes(),
        "command": args.command,
    }
    (run_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    collect(run_dir, args.prometheus_url)
    for problem in problems:
        say(problem)
    return 1 if problems else 0


# --- collect -----------------------------------------------------------------------------------


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


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command_name", required=True)
    run_parser = commands.add_parser("run", help="apply the TestRuns, wait, collect")
    run_parser.add_argument("--run-id", default="")
    run_parser.add_argument("--servers", default="stdlib-style async-style")
    run_parser.add_argument("--profile", default="seed")
    run_parser.add_argument("--parallelism", type=int, default=1)
    run_parser.add_argument("--timeout", default="45m")
    run_parser.add_argument("--rate", type=int)
    run_parser.add_argument("--duration")
    collect_parser = commands.add_parser("collect", help="(re)collect a finished run from Prometheus")
    collect_parser.add_argument("--run-id", required=True)
    for sub in (run_parser, collect_parser):
        sub.add_argument("--results", default=str(RESULTS))
        sub.add_argument("--prometheus-url", default=None, help="skip the port-forward (default: $PROMETHEUS_URL)")
    deploy_parser = commands.add_parser("kustomization", help="write OUT/kustomization.yaml: OVERLAY with these images")
    deploy_parser.add_argument("overlay", type=Path)
    deploy_parser.add_argument("out_dir", type=Path)
    deploy_parser.add_argument("images", nargs="+", help="server=registry/name:tag")
    args = parser.parse_args(argv)
    try:
        if args.command_name == "run":
            args.servers = args.servers.split()
            return run(args)
        if args.command_name == "collect":
            collect(Path(args.results) / args.run_id, args.prometheus_url)
            return 0
        images = dict(item.split("=", 1) for item in args.images)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        wrapper = kustomization(args.overlay, args.out_dir, images)
        (args.out_dir / "kustomization.yaml").write_text(yaml.safe_dump(wrapper, sort_keys=False))
        return 0
    except ClusterError as error:
        say(f"make: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
