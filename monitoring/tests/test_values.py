"""The Helm values for kube-prometheus-stack and the k6-operator, checked without Helm.

Every key must be one the chart reads (the lists below come from the charts' values.yaml at the
versions pinned in versions.env); the placement, remote-write and Grafana-login rules are
asserted on the parsed values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.versions import read_versions

ROOT = Path(__file__).resolve().parents[2]
KPS_VALUES = ROOT / "monitoring" / "kube-prometheus-stack.values.yaml"
K6_OPERATOR_VALUES = ROOT / "monitoring" / "k6-operator.values.yaml"
MONITORING_POOL = {"pool": "monitoring-pool"}

# Keys of kube-prometheus-stack's values.yaml (and its subcharts') that this project may set; a
# path listed here is taken whole, whatever it holds.
KPS_KNOWN = {
    "prometheusOperator.nodeSelector",
    "prometheusOperator.tolerations",
    "prometheusOperator.resources",
    "prometheusOperator.admissionWebhooks.patch.nodeSelector",
    "prometheusOperator.admissionWebhooks.deployment.nodeSelector",
    "prometheus.prometheusSpec.nodeSelector",
    "prometheus.prometheusSpec.tolerations",
    "prometheus.prometheusSpec.resources",
    "prometheus.prometheusSpec.enableRemoteWriteReceiver",
    "prometheus.prometheusSpec.remoteWriteReceiverMessageVersions",
    "prometheus.prometheusSpec.enableFeatures",
    "prometheus.prometheusSpec.scrapeNativeHistograms",
    "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.probeSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.scrapeConfigSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.scrapeInterval",
    "prometheus.prometheusSpec.evaluationInterval",
    "prometheus.prometheusSpec.retention",
    "prometheus.prometheusSpec.retentionSize",
    "prometheus.prometheusSpec.storageSpec",
    "alertmanager.enabled",
    "alertmanager.alertmanagerSpec.nodeSelector",
    "kubeControllerManager.enabled",
    "kubeScheduler.enabled",
    "kubeProxy.enabled",
    "kubeEtcd.enabled",
    "defaultRules.create",
    "kube-state-metrics.nodeSelector",
    "kube-state-metrics.tolerations",
    "prometheus-node-exporter.nodeSelector",
    "prometheus-node-exporter.tolerations",
    "grafana.nodeSelector",
    "grafana.tolerations",
    "grafana.admin.existingSecret",
    "grafana.admin.userKey",
    "grafana.admin.passwordKey",
    "grafana.defaultDashboardsEnabled",
    "grafana.defaultDashboardsTimezone",
    "grafana.sidecar.dashboards.enabled",
    "grafana.sidecar.dashboards.label",
    "grafana.sidecar.dashboards.labelValue",
    "grafana.sidecar.dashboards.searchNamespace",
    "grafana.sidecar.dashboards.folderAnnotation",
    "grafana.sidecar.dashboards.provider.foldersFromFilesStructure",
}
# Keys of the k6-operator chart's values.yaml that this project may set.
K6_OPERATOR_KNOWN = {
    "namespace.create",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podLabels",
    "customLabels",
    "manager.replicas",
    "manager.resources",
    "manager.env",
    "manager.containerSecurityContext",
    "manager.podSecurityContext",
    "metrics.serviceMonitor.enabled",
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def unknown_paths(values: dict, known: set[str], prefix: str = "") -> list[str]:
    """Dotted paths in `values` that are neither a known key nor inside one."""
    unknown = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in known:
            continue
        if isinstance(value, dict) and any(k.startswith(f"{path}.") for k in known):
            unknown += unknown_paths(value, known, f"{path}.")
        else:
            unknown.append(path)
    return unknown


def get(values: dict, path: str):
    for key in path.split("."):
        values = values[key]
    return values


def versions() -> dict[str, str]:
    return read_versions()


@pytest.mark.parametrize(("path", "known"), [(KPS_VALUES, KPS_KNOWN), (K6_OPERATOR_VALUES, K6_OPERATOR_KNOWN)])
def test_values_set_only_keys_the_charts_read(path, known):
    assert unknown_paths(load(path), known) == []


def test_the_key_check_catches_a_misspelt_key():
    values = load(KPS_VALUES)
    values["prometheus"]["prometheusSpec"]["nodeselector"] = MONITORING_POOL
    values["grafana"]["adminPasword"] = "x"
    assert unknown_paths(values, KPS_KNOWN) == ["prometheus.prometheusSpec.nodeselector", "grafana.adminPasword"]


def test_everything_but_node_exporter_runs_on_the_monitoring_pool():
    values = load(KPS_VALUES)
    for path in (
        "prometheusOperator.nodeSelector",
        "prometheusOperator.admissionWebhooks.patch.nodeSelector",
        "prometheus.prometheusSpec.nodeSelector",
        "kube-state-metrics.nodeSelector",
        "grafana.nodeSelector",
    ):
        assert get(values, path) == MONITORING_POOL, path
    alertmanager = values["alertmanager"]
    assert alertmanager.get("enabled") is False or alertmanager["alertmanagerSpec"]["nodeSelector"] == MONITORING_POOL
    assert load(K6_OPERATOR_VALUES)["nodeSelector"] == MONITORING_POOL


def test_node_exporter_tolerates_every_taint():
    values = load(KPS_VALUES)
    assert {"operator": "Exists"} in values["prometheus-node-exporter"]["tolerations"]
    assert "nodeSelector" not in values["prometheus-node-exporter"]


def test_the_monitoring_pool_exists_in_both_clusters():
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    hetzner = yaml.safe_load((ROOT / "iac" / "hetzner-k3s-cluster.yaml").read_text())
    assert MONITORING_POOL in [node.get("labels") for node in kind["nodes"]]
    assert {"key": "pool", "value": "monitoring-pool"} in [
        label for pool in hetzner["worker_node_pools"] for label in pool["labels"]
    ]


def test_prometheus_accepts_k6_remote_write_and_every_monitor():
    spec = load(KPS_VALUES)["prometheus"]["prometheusSpec"]
    assert spec["enableRemoteWriteReceiver"] is True
    # No-op on the chart's Prometheus (>= 3.9), where native histograms are always on.
    assert "native-histograms" not in spec.get("enableFeatures", [])
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False


def test_unscrapeable_control_plane_targets_are_off():
    values = load(KPS_VALUES)
    for component in ("kubeControllerManager", "kubeScheduler", "kubeProxy", "kubeEtcd"):
        assert values[component] == {"enabled": False}


def test_grafana_login_comes_from_the_secret_make_generates():
    admin = load(KPS_VALUES)["grafana"]["admin"]
    assert admin == {"existingSecret": "grafana-admin", "userKey": "admin-user", "passwordKey": "admin-password"}
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"create secret generic grafana-admin .*admin-user=", makefile)
    assert "admin-password=" in makefile


def test_no_grafana_password_is_committed():
    if shutil.which("git") is None:
        pytest.skip("git is not installed: install it (Debian package git) to list the tracked files.")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    paths = [ROOT / name for name in tracked.stdout.split("\0") if name] + [KPS_VALUES, K6_OPERATOR_VALUES]
    # This file spells the patterns out; nothing else may.
    paths = [path for path in paths if path != Path(__file__).resolve()]
    offenders = []
    for path in paths:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        if re.search(r"adminPassword\s*[:=]|admin-password:\s*\S", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_dashboard_sidecar_finds_the_dashboards_configmaps():
    sidecar = load(KPS_VALUES)["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True and sidecar["searchNamespace"] == "ALL"
    assert (sidecar["label"], sidecar["labelValue"]) == ("grafana_dashboard", "1")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: install it (Debian package kubectl) to render dashboards/.")
    result = subprocess.run(
        ["kubectl", "kustomize", "dashboards"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    configmaps = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "ConfigMap"]
    assert configmaps
    for configmap in configmaps:
        assert configmap["metadata"]["labels"].get(sidecar["label"]) == sidecar["labelValue"], configmap["metadata"][
            "name"
        ]


def test_k6_operator_leaves_its_namespace_to_helm():
    assert load(K6_OPERATOR_VALUES)["namespace"] == {"create": False}


def test_chart_versions_live_in_versions_env_only():
    pinned = versions()
    for chart in ("KUBE_PROMETHEUS_STACK", "K6_OPERATOR"):
        assert re.fullmatch(r"https://\S+", pinned[f"{chart}_CHART_REPO"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned[f"{chart}_CHART_VERSION"])
    for path in (KPS_VALUES, K6_OPERATOR_VALUES):
        text = path.read_text()
        for key in ("KUBE_PROMETHEUS_STACK_CHART_VERSION", "K6_OPERATOR_CHART_VERSION"):
            assert pinned[key] not in re.sub(r"#.*", "", text), f"{path.name} repeats {key}"
        assert not re.search(r"^\s*(tag|version|image):", text, re.M), f"{path.name} pins an image or version"
