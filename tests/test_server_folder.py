"""A server is a folder: a new one, added to a copy of the repository as its folder, its two
manifests and one line in each kustomization, shows up everywhere with no other edit: make help,
make serve, the bench-local plan, the TestRuns, the kustomize output and Tilt."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers.contract import check_contract
from servers.process import free_port, running
from tests.test_tiltfile import run_tiltfile

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
NEW = "scratch-style"
MODEL = "async-style"  # the folder the new server is copied from, renamed


def copy_repo(to: Path) -> Path:
    repo = to / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "results", ".build", "__pycache__",
                                                               ".pytest_cache", ".ruff_cache", "target", "bin"))
    return repo


def add_server(repo: Path) -> list[str]:
    """What a person adds for a new server; returns the files touched outside its folder."""
    folder = repo / "servers" / NEW
    shutil.copytree(repo / "servers" / MODEL, folder, ignore=shutil.ignore_patterns("tests"))
    settings = next(folder.glob("src/*/settings.py"))
    settings.write_text(settings.read_text().replace(f'SERVER_NAME = "{MODEL}"', f'SERVER_NAME = "{NEW}"'))
    declaration = folder / "server.yaml"
    declaration.write_text(declaration.read_text().replace(f"about {MODEL}", f"about {NEW}"))
    (repo / "k8s" / "base" / f"{NEW}.yaml").write_text((repo / "k8s" / "base" / f"{MODEL}.yaml").read_text().replace(MODEL, NEW))
    (repo / "k6" / "servers" / NEW).mkdir()
    (repo / "k6" / "servers" / NEW / "kustomization.yaml").write_text(
        (repo / "k6" / "servers" / MODEL / "kustomization.yaml").read_text().replace(MODEL, NEW))
    touched = []
    for path, line in ((repo / "k8s/base/kustomization.yaml", f"  - {MODEL}.yaml"),
                       (repo / "k8s/overlays/kind/kustomization.yaml", f"  - {{name: {MODEL}, "),
                       (repo / "k6/kustomization.yaml", f"  - servers/{MODEL}")):
        text = path.read_text()
        (model_line,) = [row for row in text.splitlines() if row.startswith(line)]
        path.write_text(text.replace(model_line, model_line + "\n" + model_line.replace(MODEL, NEW)))
        touched.append(str(path.relative_to(repo)))
    return touched


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    if not (VENV / "bin" / "python").exists():
        pytest.skip("the virtual environment is missing: run make test, which creates it")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    repo = copy_repo(tmp_path_factory.mktemp("folder"))
    touched = add_server(repo)
    changed = subprocess.run(["git", "diff", "--no-index", "--stat", str(ROOT / "k8s"), str(repo / "k8s")],
                             capture_output=True, text=True).stdout
    assert f"{NEW}.yaml" in changed and len(touched) == 3
    return repo


def run(repo: Path, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=repo, capture_output=True, text=True, timeout=timeout)


def test_make_help_lists_it(repo):
    shown = run(repo, "make", "-s", f"VENV={VENV}").stdout
    assert NEW in shown.rstrip().splitlines()[-1].split()


def test_make_serve_runs_it_and_it_keeps_the_contract(repo, tmp_path):
    port = free_port()
    command = ["make", "-s", "-C", str(repo), f"VENV={VENV}", "serve", f"SERVER={NEW}", f"PORT={port}", "WORKERS=1"]
    with running(command, port, tmp_path / "log"):
        check_contract(port, source=NEW)


def test_the_bench_local_plan_has_it(repo):
    result = run(repo, sys.executable, "-m", "bench.local", "--plan", "--servers", "all", "--results", str(repo / "results"))
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^  {NEW}: .* \(stands in for rust-hyper\), under `make serve` in servers/{NEW}/$", result.stderr, re.M)
    stand_ins = run(repo, sys.executable, "-m", "bench.local", "--plan", "--results", str(repo / "results")).stderr
    assert f"  {NEW}: " in stand_ins, "a stand-in is in the default run"


def test_the_testruns_have_one_for_it(repo):
    result = run(repo, sys.executable, "k6/render.py", "--run", "r1")
    assert result.returncode == 0, result.stderr
    testruns = {doc["metadata"]["name"] for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "TestRun"}
    assert f"k6-{NEW}" in testruns


@pytest.mark.parametrize("overlay", ["k8s/overlays/kind", "k8s/overlays/hetzner", "k8s/overlays/tilt"])
def test_the_kustomize_output_deploys_it(repo, overlay):
    result = run(repo, "kubectl", "kustomize", overlay)
    assert result.returncode == 0, result.stderr
    deployments = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "Deployment"}
    assert NEW in deployments
    if overlay != "k8s/overlays/hetzner":
        assert deployments[NEW]["spec"]["template"]["spec"]["containers"][0]["image"] == f"localhost:5005/{NEW}:dev"


def test_tilt_builds_and_forwards_it(repo):
    tilt = run_tiltfile("kind-py-bench", root=repo)
    built = {args[0].rsplit("/", 1)[-1]: kwargs for args, kwargs in tilt.named("docker_build")}
    assert built[NEW]["container_args"] == ["--reload"]
    forwarded = {args[0] for args, _ in tilt.named("k8s_resource") if args}
    assert NEW in forwarded
