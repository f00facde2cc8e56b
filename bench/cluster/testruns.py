"""`make bench`: the TestRuns rendered, checked against the client pool, applied and waited for.

`run` keeps each runner pod's log, exit code and window and the run's record in
results/<run-id>/cluster-run.json, then collects the results from Prometheus.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.cluster.kube import NAMESPACE, ClusterError, iso, kubectl, quantity, say, utc
from bench.cluster.results import RECORD, collect

ROOT = Path(__file__).resolve().parents[2]
# The node pool the k6 runners are placed on (k6/testrun/testrun.yaml nodeSelector).
CLIENT_POOL = "client-pool"
# A kind node shares this machine's few CPUs: the seed's 6-CPU runners would never schedule.
KIND_RUNNER = ("500m", "512Mi")
POLL_S = 5


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


def parse_duration(text: str) -> float:
    """A Go-style duration (45m, 1h30m, 90s) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or not parts:
        raise ClusterError(f"'{text}' is not a duration: use e.g. BENCH_TIMEOUT=45m or 1h30m.")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


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


def rendered_testruns(manifests: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc and doc.get("kind") == "TestRun"]


def runner_cpus(manifests: str) -> dict[str, float | None]:
    """CPU limit of one runner pod per TestRun name, in cores."""
    limits = {}
    for testrun in rendered_testruns(manifests):
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
        for testrun in rendered_testruns(manifests)
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
                             "(docs/cluster.md, Troubleshooting: pods stay Pending)")
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

