"""Render the cluster definitions for the tools that create clusters, to standard output.

    python iac/render_cluster.py kind | ctlptl apply -f -
    python iac/render_cluster.py hetzner --allowed-networks 203.0.113.4/32 [--app-nodes 2] > .build/cluster.yaml

`kind`: ctlptl.yaml with kind-config.yaml embedded as the Cluster's kindV1Alpha4Cluster (ctlptl
cannot point at a kind config file, and the node list lives in one file only).
`hetzner`: iac/hetzner-k3s-cluster.yaml with k3s_version from versions.env and the networks
allowed to reach SSH and the Kubernetes API, which the committed file leaves empty.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from iac/; the versions.env reader lives in bench/

from bench.versions import read_versions  # noqa: E402

KIND_CONFIG = ROOT / "kind-config.yaml"
CTLPTL_CONFIG = ROOT / "ctlptl.yaml"
HETZNER_CONFIG = ROOT / "iac" / "hetzner-k3s-cluster.yaml"


class RenderError(Exception):
    """A problem the person running the command can fix; the message says how."""


def ctlptl_documents() -> list[dict[str, Any]]:
    """ctlptl.yaml's Registry and Cluster, the Cluster carrying kind-config.yaml."""
    documents = [doc for doc in yaml.safe_load_all(CTLPTL_CONFIG.read_text()) if doc]
    kind_config = yaml.safe_load(KIND_CONFIG.read_text())
    clusters = [doc for doc in documents if doc.get("kind") == "Cluster"]
    if len(clusters) != 1:
        raise RenderError(f"{CTLPTL_CONFIG.name} must hold exactly one Cluster; found {len(clusters)}.")
    clusters[0]["kindV1Alpha4Cluster"] = kind_config
    return documents


def parse_networks(text: str) -> list[str]:
    """CIDRs from a comma- or space-separated list; a bare address becomes a /32 (or /128)."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise RenderError(
                f"'{item}' is not an IP address or CIDR: pass e.g. --allowed-networks 203.0.113.4/32."
            ) from None
        if network.prefixlen == 0:
            raise RenderError(
                f"'{item}' would open SSH and the Kubernetes API to the whole internet: "
                'pass your own address instead, e.g. --allowed-networks "$(curl -s https://ipinfo.io/ip)/32".'
            )
        networks.append(str(network))
    if not networks:
        raise RenderError(
            "No allowed networks given: pass the addresses that may reach SSH and the Kubernetes API, "
            'e.g. --allowed-networks "$(curl -s https://ipinfo.io/ip)/32".'
        )
    return networks


def hetzner_config(
    allowed_networks: list[str], ssh_key: str | None = None, kubeconfig: str | None = None, app_nodes: int | None = None
) -> dict[str, Any]:
    """The hetzner-k3s config with the k3s version and allowed networks filled in, and the app pool
    sized to `app_nodes` (each server's pod needs an app node of its own: the manifests' anti-affinity)."""
    config = yaml.safe_load(HETZNER_CONFIG.read_text())
    k3s_version = read_versions().get("K3S_VERSION", "")
    if not k3s_version:
        raise RenderError("versions.env has no K3S_VERSION: add a line such as K3S_VERSION=v1.35.0+k3s1.")
    config["k3s_version"] = k3s_version
    config["networking"]["allowed_networks"]["ssh"] = list(allowed_networks)
    config["networking"]["allowed_networks"]["api"] = list(allowed_networks)
    if ssh_key:
        config["networking"]["ssh"]["private_key_path"] = ssh_key
        config["networking"]["ssh"]["public_key_path"] = f"{ssh_key}.pub"
    if kubeconfig:
        config["kubeconfig_path"] = kubeconfig
    if app_nodes is not None:
        if app_nodes < 1:
            raise RenderError(f"--app-nodes must be 1 or more, got {app_nodes}: pass the number of servers to run.")
        [app_pool] = [pool for pool in config["worker_node_pools"] if pool["name"] == "app-pool"]
        app_pool["instance_count"] = app_nodes
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="target", required=True)
    sub.add_parser("kind", help="ctlptl registry + kind cluster, for `ctlptl apply -f -`")
    hetzner = sub.add_parser("hetzner", help="hetzner-k3s config, for `hetzner-k3s create --config <file>`")
    hetzner.add_argument(
        "--allowed-networks",
        required=True,
        help="addresses or CIDRs (comma- or space-separated) that may reach SSH and the Kubernetes API",
    )
    hetzner.add_argument(
        "--ssh-key", help="private SSH key path (the public key is <path>.pub); default ~/.ssh/id_ed25519"
    )
    hetzner.add_argument("--kubeconfig", help="where hetzner-k3s writes the kubeconfig; default ./kubeconfig")
    hetzner.add_argument("--app-nodes", type=int, help="app-pool nodes, one per server to run (default: the file's)")
    args = parser.parse_args(argv)
    try:
        if args.target == "kind":
            sys.stdout.write(yaml.safe_dump_all(ctlptl_documents(), sort_keys=False))
        else:
            config = hetzner_config(parse_networks(args.allowed_networks), args.ssh_key, args.kubeconfig, args.app_nodes)
            sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    except RenderError as error:
        print(f"render_cluster: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
