"""The real Tiltfile, executed by a Starlark interpreter with recording stand-ins for Tilt's built-ins.

Each stand-in records its call; the tests then check what Tilt would have done against the repo:
the images it builds are the ones the kind overlay deploys, the synced paths exist, chart versions
come from versions.env, and a non-kind context stops it. `kustomize` renders with the real
kubectl, as Tilt does, and `read_yaml`/`decode_yaml_stream` parse as Tilt's do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import starlark
import yaml

from servers import registry

ROOT = Path(__file__).resolve().parents[1]
TILTFILE = ROOT / "Tiltfile"
SERVERS = tuple(registry.names())


@dataclass
class Tilt:
    """What one execution of the Tiltfile asked Tilt to do."""

    calls: list[tuple[str, list, dict]] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)

    def named(self, name: str) -> list[tuple[list, dict]]:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]


def _plain(value):
    return starlark.from_value(value)


def kustomize_blob(path, root: Path = ROOT) -> starlark.Value:
    path = _plain(path)
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is needed to render the kustomizations the Tiltfile applies (kubectl kustomize)")
    result = subprocess.run(["kubectl", "kustomize", str(root / path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    KUSTOMIZED[result.stdout] = path
    return starlark.to_value(result.stdout)


# Rendered YAML -> the folder it came from, so a test can tell which kustomization was applied.
KUSTOMIZED: dict[str, str] = {}


def run_tiltfile(context: str, root: Path = ROOT) -> Tilt:
    tilt = Tilt()

    def recorder(name: str, returns=None):
        def impl(*args, **kwargs):
            tilt.calls.append((name, [_plain(a) for a in args], {k: _plain(v) for k, v in kwargs.items()}))
            return returns(*args, **kwargs) if returns else None

        return starlark.BuiltinFunction(name, impl)

    def step(kind: str):
        return recorder(kind, lambda *args, **kwargs: starlark.to_value(
            {"step": kind, "args": [_plain(a) for a in args], **{k: _plain(v) for k, v in kwargs.items()}}))

    def read_file(path, default=None):
        target = root / _plain(path)
        if not target.exists() and default is not None:
            return default
        return target.read_text()

    def read_yaml(path, default=None):
        target = root / _plain(path)
        if not target.exists() and default is not None:
            return default
        return starlark.to_value(yaml.safe_load(target.read_text()))

    def decode_yaml_stream(text):
        return starlark.to_value([doc for doc in yaml.safe_load_all(str(_plain(text))) if doc])

    def loader(module: str) -> starlark.Module:
        if module != "ext://helm_resource":
            raise ValueError(f"the Tiltfile loads an extension these tests do not stand in for: {module}")
        return starlark.exec_file(
            "helm_resource = record_helm_resource\nhelm_repo = record_helm_repo\n",
            "helm_resource/Tiltfile",
            predeclared={"record_helm_resource": recorder("helm_resource"), "record_helm_repo": recorder("helm_repo")},
        )

    predeclared = {
        "version_settings": recorder("version_settings"),
        "k8s_context": starlark.BuiltinFunction("k8s_context", lambda: context),
        "allow_k8s_contexts": recorder("allow_k8s_contexts"),
        "read_file": starlark.BuiltinFunction("read_file", read_file),
        "read_yaml": starlark.BuiltinFunction("read_yaml", read_yaml),
        "decode_yaml_stream": starlark.BuiltinFunction("decode_yaml_stream", decode_yaml_stream),
        "docker_build": recorder("docker_build"),
        "sync": step("sync"),
        "run": step("run"),
        "fall_back_on": step("fall_back_on"),
        "initial_sync": step("initial_sync"),
        "k8s_yaml": recorder("k8s_yaml"),
        "kustomize": recorder("kustomize", lambda path, **_: kustomize_blob(path, root)),
        "k8s_resource": recorder("k8s_resource"),
        "k8s_kind": recorder("k8s_kind"),
        "local_resource": recorder("local_resource"),
        "link": step("link"),
        "port_forward": step("port_forward"),
        "update_settings": recorder("update_settings"),
        "watch_settings": recorder("watch_settings"),
        "TRIGGER_MODE_AUTO": "TRIGGER_MODE_AUTO",
        "TRIGGER_MODE_MANUAL": "TRIGGER_MODE_MANUAL",
        "config": starlark.namespace("config", {
            "define_string": recorder("config.define_string"),
            "define_bool": recorder("config.define_bool"),
            "define_string_list": recorder("config.define_string_list"),
            "parse": lambda: starlark.to_value({}),
        }),
        "os": starlark.namespace("os", {"getenv": lambda name, default="": default}),
    }
    starlark.exec_file((root / "Tiltfile").read_text(), "Tiltfile", predeclared=predeclared, loader=loader)
    return tilt


def applied(tilt: Tilt) -> list[str]:
    """The kustomize folders whose output the Tiltfile handed to k8s_yaml, in order."""
    return [KUSTOMIZED.get(str(args[0]), "?") for args, _ in tilt.named("k8s_yaml")]


@pytest.fixture(scope="module")
def tilt() -> Tilt:
    return run_tiltfile("kind-py-bench")


@pytest.fixture(scope="module")
def kind_manifests(tilt: Tilt) -> str:
    assert "k8s/overlays/tilt" in applied(tilt)
    return next(str(args[0]) for args, _ in tilt.named("k8s_yaml") if KUSTOMIZED.get(str(args[0])) == "k8s/overlays/tilt")


def _image_names(manifests: str) -> set[str]:
    """Image names in rendered YAML without tag or digest: what Tilt matches a docker_build against."""
    names = set()
    for ref in re.findall(r"^\s*-?\s*image:\s*['\"]?([^'\"\s]+)", manifests, re.MULTILINE):
        ref = ref.split("@")[0]
        names.add(ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref)
    return names


def _versions() -> dict[str, str]:
    versions = {}
    for line in (ROOT / "versions.env").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def test_pins_a_tilt_version(tilt: Tilt) -> None:
    assert tilt.named("version_settings") == [([], {"constraint": ">=0.37.0"})]


@pytest.mark.parametrize("context", ["hetzner-py-bench", "gke_project_zone_bench", "default", "minikube"])
def test_refuses_any_context_but_kind(context: str) -> None:
    with pytest.raises(starlark.EvalError, match=f"only runs against a local kind cluster, but the context is '{context}'"):
        run_tiltfile(context)


def test_never_widens_the_allowed_contexts(tilt: Tilt) -> None:
    assert tilt.named("allow_k8s_contexts") == []


def test_deploys_the_kind_based_tilt_overlay_and_the_dashboards(tilt: Tilt) -> None:
    assert applied(tilt) == ["k8s/overlays/tilt", "dashboards"]
    tilt_overlay = (ROOT / "k8s/overlays/tilt/kustomization.yaml").read_text()
    assert re.search(r"^\s*-\s*\.\./kind\s*$", tilt_overlay, re.MULTILINE), "the Tilt overlay must build on the kind one"


def test_builds_each_server_once_from_its_own_folder(tilt: Tilt) -> None:
    builds = {args[0].rsplit("/", 1)[-1]: args[1] for args, _ in tilt.named("docker_build")}
    assert sorted(builds) == sorted(SERVERS)
    for name, context in builds.items():
        assert context == f"servers/{name}"
        assert (ROOT / context / "Dockerfile").is_file()


def test_images_built_are_the_images_deployed(tilt: Tilt, kind_manifests: str) -> None:
    built = {args[0] for args, _ in tilt.named("docker_build")}
    deployed = _image_names(kind_manifests)
    assert built <= deployed, f"Tilt builds {sorted(built - deployed)}, which the kind overlay never deploys"
    ours = {name for name in deployed if name.rsplit("/", 1)[-1] in SERVERS}
    assert ours == built, f"the kind overlay deploys {sorted(ours - built)}, which Tilt does not build"


def test_live_update_syncs_each_source_tree_to_app_src(tilt: Tilt) -> None:
    live = {name for name in SERVERS if registry.get(name).has("live_reload")}
    assert live, "the Python servers reload live"
    for (name, context), kwargs in ((args[:2], kwargs) for args, kwargs in tilt.named("docker_build")):
        if name.rsplit("/", 1)[-1] not in live:
            assert "live_update" not in kwargs and "container_args" not in kwargs, f"{name} has no --reload"
            continue
        steps = kwargs["live_update"]
        syncs = [s["args"] for s in steps if s["step"] == "sync"]
        assert syncs == [[f"{context}/src", "/app/src"]]
        for local, _ in syncs:
            assert (ROOT / local).is_dir(), f"{name} syncs {local}, which does not exist"
            assert (ROOT / local).resolve().is_relative_to((ROOT / context).resolve())
        fallbacks = [path for s in steps if s["step"] == "fall_back_on" for path in _flat(s["args"])]
        assert fallbacks == [f"{context}/requirements.lock"]
        assert (ROOT / fallbacks[0]).is_file()
        # Tilt enforces this order: fall_back_on before sync before run.
        order = [s["step"] for s in steps]
        assert order == sorted(order, key=["initial_sync", "fall_back_on", "sync", "run"].index)


def _flat(values):
    for value in values:
        yield from (value if isinstance(value, list) else [value])


def test_reload_is_a_dev_only_container_arg(tilt: Tilt, kind_manifests: str) -> None:
    for args, kwargs in tilt.named("docker_build"):
        if registry.get(args[0].rsplit("/", 1)[-1]).has("live_reload"):
            assert kwargs["container_args"] == ["--reload"]
    assert "--reload" not in kind_manifests


def test_servers_are_forwarded_to_distinct_local_ports(tilt: Tilt, kind_manifests: str) -> None:
    resources = {args[0]: kwargs for args, kwargs in tilt.named("k8s_resource") if args}
    ports = []
    for name in SERVERS:
        assert re.search(rf"kind: Deployment\n(?:.*\n)*?  name: {name}\n", kind_manifests), f"no Deployment {name}"
        (forward,) = resources[name]["port_forwards"]
        local, container = forward.split(":")
        assert container == "8080"
        ports.append(local)
    assert len(set(ports)) == len(ports)


def test_every_resource_is_grouped(tilt: Tilt) -> None:
    groups = {"servers", "load", "monitoring"}
    kinds = ("k8s_resource", "local_resource", "helm_resource", "helm_repo")
    labelled = [
        (kind, args[0] if args else kwargs.get("new_name"), kwargs.get("labels"))
        for kind in kinds
        for args, kwargs in tilt.named(kind)
    ]
    assert labelled
    for kind, name, labels in labelled:
        assert labels and set(labels) <= groups, f"{kind} {name} has labels {labels}"
    assert {label for *_, labels in labelled for label in labels} == groups


def test_charts_are_pinned_from_versions_env(tilt: Tilt) -> None:
    versions = _versions()
    charts = {args[1]: kwargs["flags"] for args, kwargs in tilt.named("helm_resource")}
    assert set(charts) == {"prometheus-community/kube-prometheus-stack", "grafana/k6-operator"}
    for flags in charts.values():
        version = flags[flags.index("--version") + 1]
        assert version in versions.values() and version
        for path in (flags[i + 1] for i, flag in enumerate(flags) if flag == "--values"):
            assert (ROOT / path).is_file(), f"a chart reads {path}, which does not exist"


def test_monitoring_waits_for_the_grafana_secret(tilt: Tilt) -> None:
    monitoring = next(kwargs for args, kwargs in tilt.named("helm_resource") if args[0] == "kube-prometheus-stack")
    assert "grafana-admin" in monitoring["resource_deps"]
    secret = next(kwargs for args, kwargs in tilt.named("local_resource") if args[0] == "grafana-admin")
    assert secret["cmd"] == "make grafana-secret"


def test_benchmark_buttons_are_manual_and_call_make(tilt: Tilt) -> None:
    buttons = {args[0]: kwargs for args, kwargs in tilt.named("local_resource") if args[0].startswith("bench-")}
    assert set(buttons) == {"bench-smoke", "bench-seed"}
    for name, kwargs in buttons.items():
        assert kwargs["trigger_mode"] == "TRIGGER_MODE_MANUAL"
        assert kwargs["auto_init"] is False
        assert kwargs["cmd"] == f"make bench PROFILE={name.removeprefix('bench-')}"


def test_make_targets_the_tiltfile_calls_exist(tilt: Tilt) -> None:
    database = subprocess.run(["make", "-C", str(ROOT), "-pRrq", ":"], capture_output=True, text=True, check=False).stdout
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", database, re.MULTILINE))
    for _, kwargs in tilt.named("local_resource"):
        command = kwargs.get("cmd") or ""
        if command.startswith("make "):
            assert command.split()[1] in targets, f"the Tiltfile runs `{command}`, but the Makefile has no such target"
