"""The real Makefile, run with recording stand-ins for the cluster tools.

Each test copies the repository (without .git and .venv) to a temporary folder and runs make
there with the repo's virtual environment, so nothing it writes (.build/, results/) lands in the
checkout. PATH holds only the stand-ins and a few system tools: every stand-in (kubectl, helm,
ctlptl, kind, hetzner-k3s, tilt, docker) appends its argv as one JSON line to a log and answers
from a table of canned replies; `kubectl kustomize` runs the real kubectl.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from bench.versions import read_versions
from servers import registry
from servers.process import stand_in

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STANDINS = ("kubectl", "helm", "ctlptl", "kind", "hetzner-k3s", "tilt", "docker")
# What recipes and the scripts they call need besides the stand-ins.
SYSTEM_TOOLS = ("bash", "sh", "env", "make", "python3", "git", "awk", "sed", "cat", "mkdir", "rm", "date",
                "dirname", "basename", "tr", "head", "tail", "grep", "sort", "uname", "ls", "touch", "base64", "wc")
PUBLIC_TARGETS = ("kind-up", "kind-down", "images-push", "hetzner-up", "deploy", "bench", "results", "grafana",
                  "teardown", "lint", "serve", "test", "images", "bench-local", "compare")

STANDIN = """#!{python}
import json, os, sys
TOOL = {tool!r}
config = json.load(open(os.environ["STANDIN_CONFIG"]))
argv = sys.argv[1:]
with open(config["log"], "a") as log:
    log.write(json.dumps([TOOL, *argv]) + "\\n")
real = config["passthrough"].get(TOOL)
if real and argv[:1] == [real["subcommand"]]:
    os.execv(real["path"], [real["path"], *argv])
if not sys.stdin.isatty():
    sys.stdin.read()  # a pipe into us must not break; what came through is not kept (it may be a secret)
for index, reply in enumerate(config["replies"]):
    if reply["tool"] == TOOL and all(token in argv for token in reply["match"]):
        stdout = reply.get("stdout", "")
        if isinstance(stdout, list):  # successive calls get successive answers, the last one repeats
            counter = os.path.join(config["dir"], f"calls-{{index}}")
            calls = int(open(counter).read()) if os.path.exists(counter) else 0
            open(counter, "w").write(str(calls + 1))
            stdout = stdout[min(calls, len(stdout) - 1)]
        sys.stdout.write(stdout if isinstance(stdout, str) else json.dumps(stdout))
        sys.exit(reply.get("exit", 0))
"""


@dataclass
class Make:
    repo: Path
    tmp: Path
    config: Path
    replies: list

    @property
    def log(self) -> Path:
        return self.tmp / "calls.jsonl"

    def reply(self, tool: str, match: list[str], stdout: object = "", exit: int = 0) -> None:
        self.replies.append({"tool": tool, "match": match, "stdout": stdout, "exit": exit})

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def __call__(self, *args: str, env: dict[str, str] | None = None, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        bin_dir = self.tmp / ("bin-without-" + "-".join(without) if without else "bin")
        if not bin_dir.exists():
            bin_dir.mkdir()
            for tool in STANDINS:
                if tool not in without:
                    (bin_dir / tool).symlink_to(self.tmp / "standins" / tool)
        passthrough = {"kubectl": {"subcommand": "kustomize", "path": shutil.which("kubectl") or "/usr/bin/kubectl"}}
        self.config.write_text(json.dumps({"log": str(self.log), "dir": str(self.tmp), "replies": self.replies,
                                           "passthrough": passthrough}))
        environment = {
            "PATH": f"{bin_dir}:{self.tmp / 'system'}",
            "HOME": str(self.tmp / "home"),
            "STANDIN_CONFIG": str(self.config),
            "LANG": "C.UTF-8",
            **(env or {}),
        }
        return subprocess.run(["make", "--no-print-directory", f"VENV={VENV}", *args], cwd=self.repo, env=environment,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)


@pytest.fixture
def make(tmp_path: Path) -> Make:
    if not (VENV / "bin" / "python").exists():
        pytest.skip("the virtual environment is missing: run make test, which creates it")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "results", ".build", "__pycache__",
                                                               ".pytest_cache", ".ruff_cache", "*kubeconfig*"))
    standins = tmp_path / "standins"
    standins.mkdir()
    for tool in STANDINS:
        script = standins / tool
        script.write_text(STANDIN.format(python=sys.executable, tool=tool))
        script.chmod(0o755)
    system = tmp_path / "system"
    system.mkdir()
    for tool in SYSTEM_TOOLS:
        found = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        if found:
            (system / tool).symlink_to(found)
    (tmp_path / "home").mkdir()
    return Make(repo, tmp_path, tmp_path / "standins.json", [])


def commands(calls: list[list[str]]) -> list[str]:
    return [" ".join(call) for call in calls]


def assert_in_order(calls: list[list[str]], expected: list[str]) -> None:
    """Each expected command line starts one of the calls, in this order."""
    lines, position = commands(calls), 0
    for want in expected:
        while position < len(lines) and not lines[position].startswith(want):
            position += 1
        assert position < len(lines), f"no call starting {want!r} (in order) among:\n" + "\n".join(lines)
        position += 1


# --- help ------------------------------------------------------------------------------------------


def public_targets() -> dict[str, str]:
    """Every target in the Makefile with a `##` description."""
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^([a-zA-Z0-9_-]+):.*?## (.+)$", text, re.MULTILINE))


def test_every_phony_target_is_described_and_in_help() -> None:
    text = (ROOT / "Makefile").read_text()
    phony = {t for line in re.findall(r"^\.PHONY: (.+)$", text, re.MULTILINE) for t in line.split()}
    described = public_targets()
    assert phony <= set(described), f"targets without a ## description: {sorted(phony - set(described))}"
    shown = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True, check=True).stdout
    for target, description in described.items():
        assert re.search(rf"{re.escape(target)}\s.*{re.escape(description)}", re.sub(r"\x1b\[[0-9;]*m", "", shown))


def help_in_a_terminal(env: dict[str, str]) -> str:
    """`make` with its stdout on a pseudo-terminal, as a person at a shell runs it."""
    leader, follower = pty.openpty()
    with subprocess.Popen(["make", "-s", "-C", str(ROOT)], stdout=follower, stderr=subprocess.DEVNULL,
                          stdin=subprocess.DEVNULL, env=env) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every end of the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_help_is_plain_text_in_a_pipe_and_coloured_in_a_terminal_unless_no_color() -> None:
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    piped = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True, env=env, check=True).stdout
    assert "\x1b" not in piped
    assert re.search(r"^  bench +run the k6 TestRuns", piped, re.MULTILINE), piped
    coloured = help_in_a_terminal(env)
    assert "\x1b[36mbench" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).replace("\r\n", "\n") == piped
    assert "\x1b" not in help_in_a_terminal({**env, "NO_COLOR": "1"})


def test_the_targets_a_person_needs_exist() -> None:
    missing = [t for t in PUBLIC_TARGETS if t not in public_targets()]
    assert not missing, f"Makefile lacks {missing}"


def test_help_shows_every_variable_with_its_default() -> None:
    shown = re.sub(r"\x1b\[[0-9;]*m", "", subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True,
                                                         text=True, check=True).stdout)
    for name in ("REGISTRY", "TAG", "OVERLAY", "RUN_ID", "SERVERS", "PROFILE", "PLAN",
                 "PARALLELISM", "BENCH_TIMEOUT", "ALLOWED_NETWORKS", "HETZNER_KUBECONFIG", "YES"):
        assert re.search(rf"^\s+{name}\s.*\(default: .*\)$", shown, re.MULTILINE), name


def test_help_lists_the_servers_found() -> None:
    shown = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True, check=True).stdout
    assert shown.rstrip().splitlines()[-1].split() == sorted(registry.names())


@pytest.mark.parametrize("server", registry.names())
def test_images_run_what_make_serve_runs(server) -> None:
    dockerfile = ROOT / "servers" / server / "Dockerfile"
    if not dockerfile.exists():
        pytest.fail(f"{dockerfile.relative_to(ROOT)} is missing")
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])", dockerfile.read_text(), re.MULTILINE).group(1))
    assert entrypoint == list(registry.get(server).serve), server


# --- kind, images, deploy --------------------------------------------------------------------------


def test_kind_up_creates_the_cluster_from_the_rendered_ctlptl_config(make: Make) -> None:
    result = make("kind-up")
    assert result.returncode == 0, result.stderr
    assert commands(make.calls()) == ["ctlptl apply -f -"]


def test_dev_makes_sure_of_the_cluster_then_starts_tilt(make: Make) -> None:
    result = make("dev")
    assert result.returncode == 0, result.stderr
    assert commands(make.calls()) == ["ctlptl apply -f -", "tilt up"]


def test_kind_down_deletes_the_cluster_and_registry(make: Make) -> None:
    result = make("kind-down")
    assert result.returncode == 0, result.stderr
    assert commands(make.calls()) == ["ctlptl delete -f ctlptl.yaml --ignore-not-found"]


def test_images_push_tags_each_server_with_its_own_tag(make: Make) -> None:
    result = make("images-push", "REGISTRY=ghcr.io/example", "STDLIB_STYLE_TAG=v1.2.0", "ASYNC_STYLE_TAG=my-branch")
    assert result.returncode == 0, result.stderr
    docker = [c for c in commands(make.calls()) if c.startswith("docker tag") or c.startswith("docker push")]
    # SERVERS' default, the stand-ins; every image is built (make images), those are pushed.
    assert docker == [
        "docker tag async-style:dev ghcr.io/example/async-style:my-branch",
        "docker push ghcr.io/example/async-style:my-branch",
        "docker tag stdlib-style:dev ghcr.io/example/stdlib-style:v1.2.0",
        "docker push ghcr.io/example/stdlib-style:v1.2.0",
    ]
    built = [c for c in commands(make.calls()) if c.startswith("docker build")]
    assert [c.split(" -t ")[1].split()[0] for c in built] == [f"{s}:dev" for s in sorted(registry.names())]


def test_images_push_all_pushes_the_references_too_with_the_common_tag(make: Make) -> None:
    result = make("images-push", "REGISTRY=ghcr.io/example", "SERVERS=all", "TAG=v2", "RUST_HYPER_TAG=r1")
    assert result.returncode == 0, result.stderr
    pushed = [c.rsplit(" ", 1)[1] for c in commands(make.calls()) if c.startswith("docker push")]
    assert pushed == [f"ghcr.io/example/{s}:{'r1' if s == 'rust-hyper' else 'v2'}" for s in sorted(registry.names())]


def test_images_push_refuses_an_unknown_server_in_one_line_listing_them(make: Make) -> None:
    result = make("images-push", "SERVERS=async-style nginx")
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert line.startswith("SERVERS may name ") and "got 'nginx'" in line
    assert all(server in line for server in registry.names())
    assert not any(c.startswith("docker push") for c in commands(make.calls()))


def test_images_push_default_tag_is_git_describe(make: Make) -> None:
    result = make("-n", "images-push", "SERVERS=async-style")
    described = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                               text=True, check=True).stdout.strip()
    # The copy has no .git, so it falls back to `dev`; the checkout itself uses git describe.
    assert "localhost:5005/async-style:dev" in result.stdout
    in_checkout = subprocess.run(["make", "-n", "-C", str(ROOT), "images-push", "SERVERS=async-style"],
                                 capture_output=True, text=True, check=False).stdout
    assert f"localhost:5005/async-style:{described}" in in_checkout


def test_deploy_applies_the_overlay_with_per_server_images(make: Make) -> None:
    make.reply("kubectl", ["config", "current-context"], "py-bench\n")
    result = make("deploy", "REGISTRY=ghcr.io/example", "STDLIB_STYLE_TAG=v1.2.0", "ASYNC_STYLE_TAG=my-branch")
    assert result.returncode == 0, result.stderr
    assert_in_order(make.calls(), [
        "kubectl get --raw=/readyz",
        "kubectl kustomize k8s/overlays/hetzner",
        "kubectl apply -k .build/deploy",
        "kubectl -n py-bench rollout status deployment/async-style",
        "kubectl -n py-bench rollout status deployment/stdlib-style",
    ])
    rollouts = [c for c in commands(make.calls()) if "rollout status" in c]
    assert len(rollouts) == 2, "only the stand-ins (SERVERS' default) get a replica to wait for"
    rendered = subprocess.run(["kubectl", "kustomize", str(make.repo / ".build" / "deploy")], capture_output=True,
                              text=True, check=True).stdout
    images = set(re.findall(r"image: (\S+)", rendered))
    assert {"ghcr.io/example/stdlib-style:v1.2.0", "ghcr.io/example/async-style:my-branch"} <= images
    replicas = {doc["metadata"]["name"]: doc["spec"]["replicas"] for doc in yaml.safe_load_all(rendered)
                if doc and doc["kind"] == "Deployment"}
    assert replicas == {name: 0 if registry.get(name).reference else 1 for name in registry.names()}


def test_deploy_picks_the_kind_overlay_on_a_kind_context(make: Make) -> None:
    make.reply("kubectl", ["config", "current-context"], "kind-py-bench\n")
    result = make("deploy", "STDLIB_STYLE_TAG=dev", "ASYNC_STYLE_TAG=dev")
    assert result.returncode == 0, result.stderr
    assert "kubectl kustomize k8s/overlays/kind" in commands(make.calls())
    rendered = subprocess.run(["kubectl", "kustomize", str(make.repo / ".build" / "deploy")], capture_output=True,
                              text=True, check=True).stdout
    assert "image: localhost:5005/async-style:dev" in rendered


# --- hetzner ---------------------------------------------------------------------------------------


def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


def test_hetzner_up_without_a_token_stops_before_any_tool(make: Make) -> None:
    result = make("hetzner-up", "ALLOWED_NETWORKS=203.0.113.4/32", "REGISTRY=ghcr.io/example")
    assert result.returncode != 0
    assert "HCLOUD_TOKEN is not set" in result.stderr
    assert make.calls() == []


def test_hetzner_up_creates_installs_and_deploys_and_never_leaks_the_token(make: Make) -> None:
    token = canary()
    make.reply("kubectl", ["get", "secret", "grafana-admin"], exit=1)  # a new cluster has no Secret yet
    result = make("hetzner-up", "ALLOWED_NETWORKS=203.0.113.4/32", "REGISTRY=ghcr.io/example",
                  "STDLIB_STYLE_TAG=v1", "ASYNC_STYLE_TAG=v2", env={"HCLOUD_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert_in_order(make.calls(), [
        "hetzner-k3s create --config .build/hetzner/cluster.yaml",
        "kubectl get --raw=/readyz",
        "kubectl -n monitoring get secret grafana-admin",
        "helm upgrade --install kube-prometheus-stack kube-prometheus-stack",
        "helm upgrade --install k6-operator k6-operator",
        "kubectl apply -k dashboards",
        "kubectl kustomize k8s/overlays/hetzner",
        "kubectl apply -k .build/deploy",
        "kubectl -n py-bench rollout status deployment/stdlib-style",
    ])
    # The Secret is made in a pipeline (create --dry-run | apply), whose two ends log in either order.
    before_helm = commands(make.calls())[: next(i for i, c in enumerate(make.calls()) if c[0] == "helm")]
    assert any(c.startswith("kubectl -n monitoring create secret generic grafana-admin") for c in before_helm)
    versions = read_versions()
    helm = [c for c in make.calls() if c[0] == "helm"]
    assert versions["KUBE_PROMETHEUS_STACK_CHART_VERSION"] in helm[0] and versions["K6_OPERATOR_CHART_VERSION"] in helm[1]
    config = (make.repo / ".build" / "hetzner" / "cluster.yaml").read_text()
    assert "203.0.113.4/32" in config and str(make.repo / ".build" / "hetzner" / "kubeconfig") in config
    assert app_nodes(make) == 2, "an app node for each of SERVERS' default, the two stand-ins"
    assert "export KUBECONFIG=" in result.stdout
    assert_no_canary(make, token, result)


def app_nodes(make: Make) -> int:
    config = yaml.safe_load((make.repo / ".build" / "hetzner" / "cluster.yaml").read_text())
    return next(pool["instance_count"] for pool in config["worker_node_pools"] if pool["name"] == "app-pool")


def test_hetzner_up_with_all_servers_makes_an_app_node_for_each(make: Make) -> None:
    make.reply("kubectl", ["get", "secret", "grafana-admin"], exit=1)
    result = make("hetzner-up", "ALLOWED_NETWORKS=203.0.113.4/32", "REGISTRY=ghcr.io/example", "SERVERS=all",
                  env={"HCLOUD_TOKEN": canary()})
    assert result.returncode == 0, result.stderr
    assert app_nodes(make) == len(registry.names())
    assert len([c for c in commands(make.calls()) if "rollout status" in c]) == len(registry.names())


def test_hetzner_up_without_allowed_networks_stops_before_any_tool(make: Make) -> None:
    result = make("hetzner-up", "REGISTRY=ghcr.io/example", env={"HCLOUD_TOKEN": canary()})
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert line == "ALLOWED_NETWORKS is not set: pass the address you work from, e.g. make hetzner-up ALLOWED_NETWORKS=203.0.113.4/32."
    assert make.calls() == []


def test_results_without_a_run_id_says_which_to_name(make: Make) -> None:
    result = make("results")
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert line.startswith("RUN_ID is not set: name the run to collect (a folder in results/)")
    assert not any(c[:2] == ["kubectl", "port-forward"] for c in make.calls())


def assert_no_canary(make: Make, token: str, result: subprocess.CompletedProcess) -> None:
    assert token not in result.stdout + result.stderr
    assert not any(token in arg for call in make.calls() for arg in call)
    for path in make.tmp.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), f"the token was written to {path}"


def test_grafana_password_is_generated_in_a_pipe_never_in_argv_or_output(make: Make) -> None:
    make.reply("kubectl", ["get", "secret", "grafana-admin"], exit=1)
    result = make("grafana-secret")
    assert result.returncode == 0, result.stderr
    create = next(c for c in make.calls() if "create" in c and "secret" in c)
    assert "--from-file=admin-password=/dev/stdin" in create
    assert not any(arg.startswith("--from-literal=admin-password") for arg in create)
    assert "password" not in result.stdout.lower().replace("admin secret", "")


def test_grafana_secret_is_kept_when_it_exists(make: Make) -> None:
    result = make("grafana-secret")
    assert result.returncode == 0, result.stderr
    assert not any("create" in c and "secret" in c for c in make.calls())


def test_grafana_prints_the_url_and_how_to_read_the_password(make: Make) -> None:
    result = make("grafana")
    assert result.returncode == 0, result.stderr
    assert "http://localhost:3000" in result.stdout
    assert "kubectl -n monitoring get secret grafana-admin" in result.stdout
    assert commands(make.calls())[-1] == "kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80"


# --- bench -----------------------------------------------------------------------------------------


def prometheus_answer(at: float, path: str, params: dict) -> dict:
    """The collector's queries answered with fixed numbers for both servers (the real queries are
    tested against a real Prometheus in bench/tests/test_cluster.py)."""
    promql = params["query"][0]
    servers = ("stdlib-style", "async-style")
    if path.endswith("query_range"):
        return {"resultType": "matrix", "result": []}
    if promql.startswith("k6_http_reqs_total{"):
        return {"resultType": "matrix", "result": [
            {"metric": {"server": s, "instance_id": "1", "testrun_name": f"k6-{s}"}, "values": [[at, "1000"]]}
            for s in servers]}
    value = ("0.002" if "histogram_quantile" in promql else "0.0025" if "histogram_sum" in promql
             else "1000" if 'expected_response="true"' in promql else None)
    result = [] if value is None else [{"metric": {"server": s}, "value": [at, value]} for s in servers]
    return {"resultType": "vector", "result": result}


def pod(name: str, started: str, finished: str, code: int = 0) -> dict:
    return {"metadata": {"name": name}, "status": {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
        {"state": {"terminated": {"exitCode": code, "startedAt": started, "finishedAt": finished}}}]}}


def node(name: str, cpu: str, memory: str) -> dict:
    return {"metadata": {"name": name, "labels": {"pool": "client-pool"}}, "status": {"allocatable": {"cpu": cpu, "memory": memory}}}


def scheduled(node_name: str, cpu: str, memory: str, labels: dict | None = None, phase: str = "Running") -> dict:
    container = {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    return {"metadata": {"name": f"pod-on-{node_name}", "labels": labels or {}}, "spec": {"nodeName": node_name,
            "containers": [container]}, "status": {"phase": phase}}


def client_pool(make: Make, nodes: list[dict], pods: list[dict]) -> None:
    make.reply("kubectl", ["get", "nodes", "pool=client-pool"], {"items": nodes})
    make.reply("kubectl", ["get", "pods", "--all-namespaces"], {"items": pods})


def cluster_replies(make: Make, prometheus_port: int, runner_exit: int = 0) -> None:
    make.reply("kubectl", ["config", "current-context"], "kind-py-bench\n")
    # kind's runners ask for 500m / 512Mi (bench/cluster/testruns.py KIND_RUNNER): two client nodes hold them.
    client_pool(make, [node("client-1", "2", "8Gi"), node("client-2", "2", "8Gi")],
                [scheduled("client-1", "100m", "64Mi"), scheduled("client-2", "100m", "64Mi")])
    for server in ("stdlib-style", "async-style"):
        make.reply("kubectl", ["get", "testrun", f"k6-{server}"],
                   [{"status": {"stage": "started"}}, {"status": {"stage": "finished"}}])
        make.reply("kubectl", ["get", "pods", f"k6_cr=k6-{server},runner=true"], {"items": [
            pod(f"k6-{server}-1-abcde", "2026-11-27T10:00:00Z", "2026-11-27T10:00:12Z",
                runner_exit if server == "async-style" else 0)]})
        make.reply("kubectl", ["logs", f"k6-{server}-1-abcde"],
                   "  requests            1000 (83.3/s)\n  latency (ok only)   p50 2.00 ms  p95 2.00 ms  p99 2.00 ms\n")
    make.reply("kubectl", ["get", "nodes"], {"items": []})
    make.reply("kubectl", ["port-forward", "svc/prometheus-operated"],
               f"Forwarding from 127.0.0.1:{prometheus_port} -> 9090\n")


@pytest.fixture
def prometheus():
    """A stand-in Prometheus API; yields its port, which the kubectl port-forward stand-in names."""

    def answer(target: str) -> tuple[int, dict[str, str], bytes]:
        url = urlparse(target)
        data = prometheus_answer(1795780812.0, url.path, parse_qs(url.query))
        return 200, {"Content-Type": "application/json"}, json.dumps({"status": "success", "data": data}).encode()

    with stand_in(answer) as address:
        yield int(address.rpartition(":")[2])


def test_bench_applies_the_testruns_waits_and_collects(make: Make, prometheus: int) -> None:
    cluster_replies(make, prometheus)
    result = make("bench", "RUN_ID=ci-run", "PROFILE=smoke")
    assert result.returncode == 0, result.stderr
    assert_in_order(make.calls(), [
        "kubectl get --raw=/readyz",
        "kubectl config current-context",
        "kubectl kustomize",
        "kubectl -n py-bench delete testrun -l app.kubernetes.io/component=load --ignore-not-found",
        "kubectl apply -f -",
        "kubectl -n py-bench get testrun k6-stdlib-style -o json",
        "kubectl -n py-bench get testrun k6-stdlib-style -o json",  # polled until finished
        "kubectl -n py-bench get pods -l k6_cr=k6-stdlib-style,runner=true -o json",
        "kubectl -n py-bench logs k6-stdlib-style-1-abcde",
        "kubectl -n monitoring port-forward svc/prometheus-operated :9090",
    ])
    assert "k6-stdlib-style: started" in result.stderr and "k6-stdlib-style: finished" in result.stderr
    run_dir = make.repo / "results" / "ci-run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["settings"]["where"] == "cluster" and summary["settings"]["profile"] == "smoke"
    assert summary["servers"]["async-style"]["aggregate"]["latency_ms"]["p50"] == pytest.approx(2.0)
    assert (run_dir / "report.md").is_file() and (run_dir / "logs" / "k6-async-style-1-abcde.log").is_file()
    assert "| Server" in result.stdout  # the tables


def test_bench_reports_a_failed_runner_and_fails(make: Make, prometheus: int) -> None:
    cluster_replies(make, prometheus, runner_exit=107)
    result = make("bench", "RUN_ID=ci-run", "PROFILE=smoke")
    assert result.returncode != 0
    assert "k6-async-style-1-abcde failed (exit 107" in result.stderr
    assert "kubectl -n py-bench logs k6-async-style-1-abcde" in result.stderr


def test_bench_refuses_more_runners_than_the_client_pool_holds_before_applying(make: Make) -> None:
    make.reply("kubectl", ["config", "current-context"], "hetzner-py-bench\n")
    # The seed's runners ask for 6 CPU / 12Gi: a cpx42 (8 vCPU, 16 GB) holds one, and only if
    # its daemon pods leave the room; k6's own leftovers and finished pods do not count.
    client_pool(make, [node("client-1", "8", "15Gi"), node("client-2", "8", "15Gi"), node("client-3", "8", "15Gi")], [
        scheduled("client-1", "100m", "128Mi"),
        scheduled("client-2", "6", "12Gi", labels={"app": "k6"}),
        scheduled("client-2", "6", "12Gi", phase="Succeeded"),
        scheduled("client-3", "2500m", "1Gi"),  # leaves 5.5 CPU: no runner fits there
    ])
    result = make("bench", "RUN_ID=ci-run", "PROFILE=smoke", "PARALLELISM=2")
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("make: ") and "***" not in line]
    assert "the 3 client-pool node(s) have room for 2 of the run's 4 k6 runners (6 CPU, 12 GiB each" in line
    assert line.endswith("lower PARALLELISM or SERVERS, or add client-pool nodes (iac/hetzner-k3s-cluster.yaml).")
    assert not any(c[:2] == ["kubectl", "apply"] for c in make.calls())
    assert not any("delete" in c for c in make.calls())


def test_bench_refuses_a_cluster_without_a_client_pool(make: Make) -> None:
    make.reply("kubectl", ["config", "current-context"], "kind-py-bench\n")
    client_pool(make, [], [])
    result = make("bench", "RUN_ID=ci-run", "PROFILE=smoke")
    assert result.returncode != 0
    assert "no node in context kind-py-bench is labelled pool=client-pool" in result.stderr
    assert not any(c[:2] == ["kubectl", "apply"] for c in make.calls())


def test_bench_without_a_cluster_says_so_in_a_few_lines(make: Make) -> None:
    make.reply("kubectl", ["get", "--raw=/readyz"], exit=1)
    make.reply("kubectl", ["config", "current-context"], "kind-py-bench\n")
    result = make("bench")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert 1 <= len(lines) <= 3
    assert "No Kubernetes cluster answers at context 'kind-py-bench'" in lines[0]
    assert "make kind-up" in result.stderr
    assert not any(c[:2] == ["kubectl", "apply"] for c in make.calls())


@pytest.mark.parametrize(("target", "tool", "args"), [
    ("kind-down", "ctlptl", ()),
    ("kind-up", "kind", ()),
    ("dev", "tilt", ()),
    ("monitoring", "helm", ()),
    ("hetzner-up", "hetzner-k3s", ("ALLOWED_NETWORKS=203.0.113.4/32", "REGISTRY=ghcr.io/example")),
])
def test_a_missing_tool_names_itself_and_how_to_install_it(make: Make, target: str, tool: str, args: tuple) -> None:
    result = make(target, *args, env={"HCLOUD_TOKEN": canary()}, without=(tool,))
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert re.fullmatch(rf"{re.escape(tool)} is not installed: install .*https://\S+\.", first), first
    assert not any(c[0] == tool for c in make.calls())


# --- teardown --------------------------------------------------------------------------------------


def test_teardown_removes_everything_and_is_safe_to_repeat(make: Make) -> None:
    token = canary()
    kubeconfig = make.repo / ".build" / "hetzner" / "kubeconfig"
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("apiVersion: v1\n")
    (make.repo / ".build" / "hetzner" / "cluster.yaml").write_text("cluster_name: py-bench\nprotect_against_deletion: false\n")
    first = make("teardown", "YES=1", env={"HCLOUD_TOKEN": token})
    assert first.returncode == 0, first.stderr
    assert_in_order(make.calls(), [
        "kubectl -n py-bench delete testruns.k6.io -l app.kubernetes.io/part-of=py-serving-bench --ignore-not-found",
        "ctlptl delete -f ctlptl.yaml --ignore-not-found",
        "hetzner-k3s delete --config .build/hetzner/cluster.yaml --force",
    ])
    assert not kubeconfig.exists()
    make.log.unlink()
    make.reply("kubectl", ["get", "--raw=/readyz"], exit=1)  # the kind cluster is gone now
    second = make("teardown", "YES=1", env={"HCLOUD_TOKEN": token})
    assert second.returncode == 0, second.stderr
    assert "No Hetzner cluster to delete" in second.stdout
    assert not any(c[0] == "hetzner-k3s" for c in make.calls())
    assert_no_canary(make, token, second)


@pytest.mark.parametrize("setting", ["protect_against_deletion: true\n", "protect_against_deletion: yes\n", ""],
                         ids=["true", "yes", "unset (hetzner-k3s defaults to true)"])
def test_teardown_keeps_a_cluster_protected_against_deletion_and_says_so(make: Make, setting: str) -> None:
    kubeconfig = make.repo / ".build" / "hetzner" / "kubeconfig"
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("apiVersion: v1\n")
    (make.repo / ".build" / "hetzner" / "cluster.yaml").write_text("cluster_name: py-bench\n" + setting)
    result = make("teardown", "YES=1", env={"HCLOUD_TOKEN": canary()})
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if "protect_against_deletion" in line]
    assert line.startswith("Kept the Hetzner cluster: protect_against_deletion is not false in .build/hetzner/cluster.yaml")
    assert "set it to false there" in line
    assert not any(c[0] == "hetzner-k3s" for c in make.calls()), "hetzner-k3s delete --force would have deleted it"
    assert kubeconfig.exists()


def test_teardown_asks_before_deleting_the_hetzner_cluster(make: Make) -> None:
    kubeconfig = make.repo / ".build" / "hetzner" / "kubeconfig"
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("apiVersion: v1\n")
    (make.repo / ".build" / "hetzner" / "cluster.yaml").write_text("cluster_name: py-bench\nprotect_against_deletion: false\n")
    result = make("teardown", env={"HCLOUD_TOKEN": canary()})  # no YES, and no answer on stdin
    assert result.returncode == 0, result.stderr
    assert "Kept the Hetzner cluster" in result.stdout
    assert kubeconfig.exists()
    assert not any(c[0] == "hetzner-k3s" for c in make.calls())


def test_teardown_skips_testruns_where_no_k6_operator_runs(make: Make) -> None:
    make.reply("kubectl", ["get", "crd", "testruns.k6.io"], exit=1)
    result = make("teardown")
    assert result.returncode == 0, result.stderr
    assert "No k6-operator" in result.stdout
    assert not any("delete" in c and c[0] == "kubectl" for c in make.calls())


def test_bench_without_the_k6_operator_names_make_monitoring(make: Make) -> None:
    make.reply("kubectl", ["config", "current-context"], "kind-py-bench\n")
    make.reply("kubectl", ["get", "crd", "testruns.k6.io"], exit=1)
    result = make("bench", "PROFILE=smoke")
    assert result.returncode != 0
    assert "the k6-operator is not installed in context kind-py-bench: run make monitoring" in result.stderr
    assert not any(c[:2] == ["kubectl", "apply"] for c in make.calls())
