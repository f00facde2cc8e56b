"""The cluster definitions: kind-config.yaml, ctlptl.yaml, iac/hetzner-k3s-cluster.yaml and their renderer."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

import iac.render_cluster as render_cluster

ROOT = Path(__file__).resolve().parents[2]
# The seed's pools (huseyinbabal/benchmarks iac/hetzner-k3s-cluster.yaml): name -> (type, count),
# with an app node for each of the four servers here where the seed had two.
SEED_WORKER_POOLS = {"app-pool": ("cpx42", 4), "monitoring-pool": ("cpx32", 1), "client-pool": ("cpx42", 2)}


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def kind_worker_pools() -> Counter:
    nodes = load("kind-config.yaml")["nodes"]
    return Counter(node["labels"]["pool"] for node in nodes if node["role"] == "worker")


def test_kind_config_has_the_seed_pools_as_labelled_nodes():
    config = load("kind-config.yaml")
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert config["name"] == "py-bench"
    assert set(config) == {"kind", "apiVersion", "name", "nodes", "containerdConfigPatches"}
    roles = Counter(node["role"] for node in config["nodes"])
    assert roles == {"control-plane": 1, "worker": sum(count for _, count in SEED_WORKER_POOLS.values())}
    for node in config["nodes"]:
        assert set(node) <= {"role", "labels"}, "no ports, mounts or images the project does not use"
        if node["role"] == "control-plane":
            assert "labels" not in node
        else:
            assert list(node["labels"]) == ["pool"]
    assert kind_worker_pools() == {name: count for name, (_, count) in SEED_WORKER_POOLS.items()}


def test_kind_nodes_read_registry_hosts_from_certs_d():
    [patch] = load("kind-config.yaml")["containerdConfigPatches"]
    assert '[plugins."io.containerd.grpc.v1.cri".registry]' in patch
    assert re.search(r'config_path\s*=\s*"/etc/containerd/certs\.d"', patch)


def test_ctlptl_declares_the_registry_and_the_cluster_without_repeating_the_nodes():
    documents = [doc for doc in yaml.safe_load_all((ROOT / "ctlptl.yaml").read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(documents) == 2 and set(by_kind) == {"Registry", "Cluster"}
    assert all(doc["apiVersion"] == "ctlptl.dev/v1alpha1" for doc in documents)
    assert by_kind["Registry"] == {
        "apiVersion": "ctlptl.dev/v1alpha1",
        "kind": "Registry",
        "name": "ctlptl-registry",
        "port": 5005,
    }
    cluster = by_kind["Cluster"]
    assert (cluster["name"], cluster["product"], cluster["registry"]) == ("kind-py-bench", "kind", "ctlptl-registry")
    assert "kindV1Alpha4Cluster" not in cluster, "the nodes live in kind-config.yaml only"
    assert cluster["name"] == f"kind-{load('kind-config.yaml')['name']}"


def render_cli(*args: str) -> subprocess.CompletedProcess:
    """iac/render_cluster.py run as the Makefile runs it, from the repo root."""
    return subprocess.run(
        [sys.executable, "iac/render_cluster.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_render_kind_embeds_kind_config_in_the_ctlptl_cluster():
    result = render_cli("kind")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    [cluster] = [doc for doc in documents if doc["kind"] == "Cluster"]
    [registry] = [doc for doc in documents if doc["kind"] == "Registry"]
    assert cluster["kindV1Alpha4Cluster"] == load("kind-config.yaml")
    assert registry["port"] == 5005


def test_hetzner_config_has_the_seed_pools_labelled_pool_equals_name():
    config = load("iac/hetzner-k3s-cluster.yaml")
    assert config["config_format_version"] == 1
    assert config["cluster_name"] == "py-bench"
    assert config["masters_pool"] == {"instance_type": "cpx22", "instance_count": 1, "locations": ["nbg1"]}
    pools = {pool["name"]: pool for pool in config["worker_node_pools"]}
    assert list(pools) == list(SEED_WORKER_POOLS)
    for name, (instance_type, count) in SEED_WORKER_POOLS.items():
        pool = pools[name]
        assert (pool["instance_type"], pool["instance_count"], pool["location"]) == (instance_type, count, "nbg1")
        assert pool["labels"] == [{"key": "pool", "value": name}]
        assert "autoscaling" not in pool and "taints" not in pool


def test_kind_mirrors_the_hetzner_pools():
    hetzner = {
        pool["name"]: pool["instance_count"] for pool in load("iac/hetzner-k3s-cluster.yaml")["worker_node_pools"]
    }
    assert kind_worker_pools() == hetzner


def test_hetzner_config_turns_encryption_off_and_allows_teardown():
    config = load("iac/hetzner-k3s-cluster.yaml")
    assert config["networking"]["cni"] == {"enabled": True, "mode": "flannel", "encryption": False}
    # hetzner-k3s allows encryption off only over the private network.
    assert config["networking"]["private_network"]["enabled"] is True
    assert config["protect_against_deletion"] is False
    assert config["schedule_workloads_on_masters"] is False


def test_committed_hetzner_config_opens_nothing_and_pins_nothing():
    config = load("iac/hetzner-k3s-cluster.yaml")
    # Empty lists make hetzner-k3s refuse the raw file; its default for a missing key is 0.0.0.0/0.
    assert config["networking"]["allowed_networks"] == {"ssh": [], "api": []}
    assert config["k3s_version"] == "", "the k3s version lives in versions.env only"


def test_no_token_or_secret_in_the_cluster_files():
    for path in ("kind-config.yaml", "ctlptl.yaml", "iac/hetzner-k3s-cluster.yaml"):
        text = (ROOT / path).read_text()
        # Hetzner Cloud API tokens are 64 letters and digits; nothing of that shape belongs in git.
        assert not re.search(r"\b[A-Za-z0-9]{40,}\b", text), f"{path} holds a token-like value"
    assert "hetzner_token" not in load("iac/hetzner-k3s-cluster.yaml")


def test_render_hetzner_fills_version_and_networks():
    config = render_cluster.hetzner_config(
        ["203.0.113.4/32", "2001:db8::/48"], ssh_key="~/.ssh/bench", kubeconfig="/k/config"
    )
    assert config["k3s_version"] == render_cluster.read_versions()["K3S_VERSION"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+\+k3s\d+", config["k3s_version"])
    assert config["networking"]["allowed_networks"] == {
        "ssh": ["203.0.113.4/32", "2001:db8::/48"],
        "api": ["203.0.113.4/32", "2001:db8::/48"],
    }
    assert config["networking"]["ssh"]["private_key_path"] == "~/.ssh/bench"
    assert config["networking"]["ssh"]["public_key_path"] == "~/.ssh/bench.pub"
    assert config["kubeconfig_path"] == "/k/config"
    # Everything else as committed.
    committed = load("iac/hetzner-k3s-cluster.yaml")
    assert config["worker_node_pools"] == committed["worker_node_pools"]
    assert config["networking"]["cni"] == committed["networking"]["cni"]


def test_render_hetzner_cli_writes_yaml_hetzner_k3s_can_read():
    result = render_cli("hetzner", "--allowed-networks", "203.0.113.4, 198.51.100.0/24")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["networking"]["allowed_networks"]["ssh"] == ["203.0.113.4/32", "198.51.100.0/24"]
    for network in config["networking"]["allowed_networks"]["ssh"] + config["networking"]["allowed_networks"]["api"]:
        assert ipaddress.ip_network(network).prefixlen > 0
    assert "hetzner_token" not in config


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ("0.0.0.0/0", "whole internet"),
        ("203.0.113.4/32,::/0", "whole internet"),
        ("", "No allowed networks"),
        ("  , ", "No allowed networks"),
        ("my-laptop", "not an IP address or CIDR"),
        ("203.0.113.4/33", "not an IP address or CIDR"),
    ],
)
def test_render_hetzner_refuses_networks_that_are_open_or_wrong(networks, message):
    with pytest.raises(render_cluster.RenderError, match=message):
        render_cluster.parse_networks(networks)


def test_render_hetzner_cli_says_what_to_pass_and_exits_2():
    result = render_cli("hetzner", "--allowed-networks", "0.0.0.0/0")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--allowed-networks" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_read_versions_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "versions.env"
    path.write_text("# a comment\n\nA=1\n  B = two  \n")
    assert render_cluster.read_versions(path) == {"A": "1", "B": "two"}


def node_selector_pools(tree) -> set[str]:
    """Every `pool` a nodeSelector anywhere in `tree` asks for."""
    pools = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "nodeSelector" and isinstance(value, dict) and "pool" in value:
                pools.add(value["pool"])
            else:
                pools |= node_selector_pools(value)
    elif isinstance(tree, list):
        for item in tree:
            pools |= node_selector_pools(item)
    return pools


def test_every_pool_a_workload_asks_for_exists_in_both_clusters():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: install it (Debian package kubectl) to render the kustomizations.")
    wanted = {}
    for path in ("k8s/overlays/kind", "k8s/overlays/hetzner", "k6"):
        result = subprocess.run(["kubectl", "kustomize", path], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        wanted[path] = node_selector_pools(list(yaml.safe_load_all(result.stdout)))
    for values in sorted((ROOT / "monitoring").glob("*.values.yaml")):
        wanted[values.name] = node_selector_pools(yaml.safe_load(values.read_text()))
    assert wanted["k8s/overlays/kind"] == wanted["k8s/overlays/hetzner"] == {"app-pool"}
    assert wanted["k6"] == {"client-pool"}
    hetzner = {pool["name"] for pool in load("iac/hetzner-k3s-cluster.yaml")["worker_node_pools"]}
    for source, pools in wanted.items():
        assert pools <= set(kind_worker_pools()), f"{source} asks for a pool kind-config.yaml lacks"
        assert pools <= hetzner, f"{source} asks for a pool iac/hetzner-k3s-cluster.yaml lacks"
