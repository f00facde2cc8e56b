"""Write a kustomization that applies an overlay with the servers' images from a registry and tag.

    python k8s/with_images.py k8s/overlays/hetzner .build/hetzner --registry ghcr.io/you --tag 3f2c1ab
    kubectl apply -k .build/hetzner

OUT_DIR/kustomization.yaml lists OVERLAY as its only resource and an `images:` entry per server
(`<registry>/<server>:<tag>`): kustomize renames the images, nothing edits the YAML as text.
kubectl has no `kustomize edit set image`; this is that step, as a file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parent / "base"
# Docker's grammar for a tag, and for a registry host[:port] with an optional path.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._/-][a-z0-9]+)*)?")


class ImagesError(Exception):
    """A bad registry or tag; the message says what to pass instead."""


def server_images(base: Path = BASE) -> list[str]:
    """The image names (without tag) of every container in the base's Deployments."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    names = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((base / resource).read_text()):
            if doc and doc.get("kind") == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    names.append(container["image"].split(":")[0])
    return names


def wrapper(overlay: Path, out_dir: Path, registry: str, tag: str) -> dict[str, Any]:
    """The kustomization that applies `overlay` with images `<registry>/<name>:<tag>`."""
    registry = registry.rstrip("/")
    if not REGISTRY.fullmatch(registry):
        raise ImagesError(f"'{registry}' is not a registry path: pass e.g. --registry ghcr.io/you (no scheme, no tag).")
    if not TAG.fullmatch(tag):
        raise ImagesError(f"'{tag}' is not an image tag: pass e.g. --tag \"$(git rev-parse --short HEAD)\".")
    if tag == "latest":
        raise ImagesError(
            "The tag 'latest' does not pin what runs: pass a unique tag, e.g. --tag \"$(git rev-parse --short HEAD)\"."
        )
    if not (overlay / "kustomization.yaml").is_file():
        raise ImagesError(f"{overlay} has no kustomization.yaml: pass an overlay folder such as k8s/overlays/hetzner.")
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay.resolve(), out_dir.resolve())],
        "images": [{"name": name, "newName": f"{registry}/{name}", "newTag": tag} for name in server_images()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", type=Path, help="overlay folder, e.g. k8s/overlays/hetzner")
    parser.add_argument("out_dir", type=Path, help="folder to write kustomization.yaml into (created)")
    parser.add_argument("--registry", required=True, help="where the images were pushed, e.g. ghcr.io/you")
    parser.add_argument("--tag", required=True, help="the images' tag, e.g. the git commit")
    args = parser.parse_args(argv)
    try:
        kustomization = wrapper(args.overlay, args.out_dir, args.registry, args.tag)
    except ImagesError as error:
        print(f"with_images: {error}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
