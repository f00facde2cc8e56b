"""The server manifests as kubectl renders them: schema-valid, hardened, and the same for both servers.

Every kustomization is rendered by the installed `kubectl kustomize` and each object is checked
against the Kubernetes JSON schemas that kubernetes-validate ships (strict: unknown fields fail),
for the Kubernetes minor of versions.env K3S_VERSION.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bench.cluster import quantity
from bench.versions import read_versions
from servers import registry

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/kind", "k8s/overlays/hetzner"]
# Tilt's live update copies sources into the container, so its overlay relaxes exactly one field.
TILT = "k8s/overlays/tilt"
SERVERS = registry.names()
COMMON_LABELS = {"app.kubernetes.io/part-of": "py-serving-bench", "app.kubernetes.io/component": "server"}


def versions() -> dict[str, str]:
    return read_versions()


def kubernetes_minor() -> str:
    match = re.fullmatch(r"v(\d+\.\d+)\.\d+\+k3s\d+", versions()["K3S_VERSION"])
    assert match, "versions.env K3S_VERSION must look like v1.35.0+k3s1"
    return match.group(1)


@cache
def render(path: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize <path>` prints (cached: the files do not change during a run)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: install it (Debian package kubectl) to render the kustomizations.")
    result = subprocess.run(["kubectl", "kustomize", path], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def deployments(path: str) -> list[dict]:
    return [doc for doc in render(path) if doc["kind"] == "Deployment"]


def effective_security_context(pod: dict, container: dict) -> dict:
    """The container's securityContext over the pod's (the container's fields win)."""
    pod_level = {
        k: v
        for k, v in pod.get("securityContext", {}).items()
        if k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")
    }
    return {**pod_level, **container.get("securityContext", {})}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels + matchExpressions) matches `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def runner_timeouts() -> dict[str, float]:
    """The seconds each server gives in-flight requests after SIGTERM (server.yaml drain_timeout_s,
    which each server's own tests hold equal to its runner's setting)."""
    return {name: registry.get(name).drain_timeout_s for name in SERVERS}


@pytest.mark.parametrize("path", [*KUSTOMIZATIONS, TILT])
def test_every_rendered_object_matches_the_kubernetes_schema(path):
    objects = render(path)
    assert {doc["kind"] for doc in objects} == {"Namespace", "Deployment", "Service"}
    for doc in objects:
        try:
            kubernetes_validate.validate(doc, kubernetes_minor(), strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{path}: {doc['kind']}/{doc['metadata']['name']} does not match the Kubernetes {kubernetes_minor()} schema: {error.message}"
            )


def test_tilt_overlay_is_the_kind_overlay_with_a_writable_root_only():
    tilt = copy.deepcopy(list(render(TILT)))
    for doc in tilt:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is False
                container["securityContext"]["readOnlyRootFilesystem"] = True
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    assert sorted(tilt, key=key) == sorted(render("k8s/overlays/kind"), key=key)


def test_the_schema_check_rejects_a_misspelt_field():
    deployment = copy.deepcopy(deployments("k8s/base")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_minor(), strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_everything_lives_in_namespace_py_bench(path):
    for doc in render(path):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "py-bench"
        else:
            assert doc["metadata"]["namespace"] == "py-bench", f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_each_server_has_a_deployment_and_a_service_on_named_port_http(path):
    objects = render(path)
    for server in SERVERS:
        [deployment] = [d for d in objects if d["kind"] == "Deployment" and d["metadata"]["name"] == server]
        [service] = [d for d in objects if d["kind"] == "Service" and d["metadata"]["name"] == server]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/name"] == server
        assert COMMON_LABELS.items() <= pod_labels.items()
        assert selects(deployment["spec"]["selector"], pod_labels)
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
        for other in SERVERS:
            if other != server:
                assert not selects(
                    {"matchLabels": service["spec"]["selector"]}, {**pod_labels, "app.kubernetes.io/name": other}
                )
        assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_server_container_is_hardened(path):
    for deployment in deployments(path):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False, f"{name}: GRANIAN_*-style env from Services must stay off"
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["nodeSelector"] == {"pool": "app-pool"}, name
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        volumes = pod.get("volumes", [])
        assert all(set(volume) == {"name", "emptyDir"} for volume in volumes), f"{name}: only emptyDir volumes"
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{path}: {name}/{container['name']}"
            security = effective_security_context(pod, container)
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser") == 10001 and security.get("runAsGroup") == 10001, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities") == {"drop": ["ALL"]}, where
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert "privileged" not in security or security["privileged"] is False, where

            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag and tag, f"{where}: image {image} has no tag"
            assert tag != "latest", f"{where}: image {image} uses :latest"
            assert container.get("imagePullPolicy") != "Always", where

            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, f"{where}: {probe}"
            startup = container["startupProbe"]
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, f"{where}: start-up budget"
            # A saturated server answers /health seconds late; one replica marked unready takes
            # the whole Service away mid-run, so readiness tolerates half a minute of silence.
            ready = container["readinessProbe"]
            assert ready["timeoutSeconds"] >= 10, f"{where}: readiness timeout"
            assert ready["periodSeconds"] * ready["failureThreshold"] >= 30, f"{where}: readiness window"

            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), f"{where}: {kind}"

            workers = [env for env in container["env"] if env["name"] == "WORKERS"]
            assert workers == [
                {"name": "WORKERS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}
            ], where
            assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0, where
            mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounted <= {volume["name"] for volume in volumes}, where


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_the_grace_period_covers_the_pre_stop_pause_and_the_runners_drain(path):
    timeouts = runner_timeouts()
    for deployment in deployments(path):
        pod = deployment["spec"]["template"]["spec"]
        pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = timeouts[deployment["metadata"]["name"]]
        # The grace period starts with preStop; SIGKILL must not cut the runner's own drain short.
        assert pod["terminationGracePeriodSeconds"] >= pause + drain + 3, deployment["metadata"]["name"]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_required_anti_affinity_keeps_the_two_servers_apart_but_lets_a_rollout_surge(path):
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in deployments(path)}
    assert set(pods) == set(SERVERS)
    for name, template in pods.items():
        terms = template["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms and all(term["topologyKey"] == "kubernetes.io/hostname" for term in terms)
        for other, other_template in pods.items():
            repelled = any(selects(term["labelSelector"], other_template["metadata"]["labels"]) for term in terms)
            # Repelling its own pods would leave maxSurge's new pod nowhere to go on two app nodes.
            assert repelled == (other != name), f"{name} vs {other}"


def test_the_server_manifests_differ_only_in_names_and_volumes():
    def normalized(server: str) -> dict:
        docs = [doc for doc in yaml.safe_load_all((K8S / "base" / f"{server}.yaml").read_text()) if doc]
        for doc in docs:
            if doc["kind"] == "Deployment":
                pod = doc["spec"]["template"]["spec"]
                pod.pop("volumes", None)
                for container in pod["containers"]:
                    container.pop("volumeMounts", None)
        return json.loads(json.dumps(docs).replace(server, "<server>"))

    shapes = {json.dumps(normalized(server), sort_keys=True) for server in SERVERS}
    assert len(SERVERS) >= 4 and len(shapes) == 1


def test_every_server_has_a_manifest_and_a_line_in_each_kustomization():
    """Adding a server is its folder, its manifests and one line in each kustomization."""
    for server in SERVERS:
        assert (K8S / "base" / f"{server}.yaml").is_file(), server
        assert (ROOT / "k6" / "servers" / server / "kustomization.yaml").is_file(), server
    assert {d["metadata"]["name"] for d in deployments("k8s/base")} == set(SERVERS)


def test_hetzner_overlay_gives_each_server_the_seeds_resources():
    for deployment in deployments("k8s/overlays/hetzner"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"cpu": "14", "memory": "28Gi"},
        }


def test_kind_overlay_fits_a_laptop_and_pulls_from_the_ctlptl_registry():
    total_cpu = total_memory = 0.0
    for deployment in deployments("k8s/overlays/kind"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"localhost:5005/{deployment['metadata']['name']}:dev"
        total_cpu += quantity(container["resources"]["requests"]["cpu"])
        total_memory += quantity(container["resources"]["requests"]["memory"])
        assert quantity(container["resources"]["limits"]["cpu"]) <= 2
        assert quantity(container["resources"]["limits"]["memory"]) <= 2**30
    assert total_cpu <= 0.5 and total_memory <= 2**30


@pytest.mark.parametrize(("overlay", "prefix"), [("hetzner", ""), ("kind", "localhost:5005/")])
def test_an_images_wrapper_pins_every_server_to_a_registry_and_tag(tmp_path, overlay, prefix):
    # What `make deploy` applies: a kustomization around the overlay whose `images:` list renames
    # each server's image as the overlay renders it.
    wrapper = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "images": [
            {"name": f"{prefix}{server}", "newName": f"ghcr.io/someone/{server}", "newTag": "3f2c1ab"}
            for server in SERVERS
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(wrapper))
    rendered = render(str(tmp_path))
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in rendered
        if d["kind"] == "Deployment"
    }
    assert images == {server: f"ghcr.io/someone/{server}:3f2c1ab" for server in SERVERS}
    assert len(rendered) == len(render(f"k8s/overlays/{overlay}"))


def test_the_selector_helper_is_faithful():
    selector = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]}
    assert selects(selector, {"a": "1", "b": "y"})
    assert selects(selector, {"a": "1"})
    assert not selects(selector, {"a": "1", "b": "x"})
    assert not selects(selector, {"a": "2", "b": "y"})
