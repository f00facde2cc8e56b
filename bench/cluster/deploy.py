"""The kustomization `make deploy` applies: an overlay with each server's image replaced."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench.cluster.kube import ClusterError, kubectl


def kustomization(overlay: Path, out_dir: Path, images: dict[str, str], running: list[str] | None = None) -> dict[str, Any]:
    """A kustomization applying `overlay` with each server's image replaced by `images[server]`.

    The names to replace are read from the rendered overlay, so an overlay that already renames
    the images (kind: localhost:5005/<server>) is matched as it renders. Servers not in `running`
    (all, when None) are deployed with no replica: they exist, named as always, but take no app
    node, since each server's pod needs an app node of its own (the manifests' anti-affinity).
    """
    rendered = kubectl("kustomize", str(overlay)).stdout
    names = {ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
             for ref in re.findall(r"^\s*-?\s*image:\s*['\"]?([^'\"\s]+)", rendered, re.MULTILINE)}
    entries = []
    for server, ref in images.items():
        matches = [name for name in names if name.rsplit("/", 1)[-1] == server]
        if len(matches) != 1:
            raise ClusterError(f"{overlay} deploys no single image named {server}: check its images: list.")
        new_name, _, new_tag = ref.rpartition(":")
        if not new_name or "/" in new_tag:
            raise ClusterError(f"image '{ref}' has no tag: set TAG (or {server.upper().replace('-', '_')}_TAG).")
        entries.append({"name": matches[0], "newName": new_name, "newTag": new_tag})
    wrapper: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay.resolve(), out_dir.resolve())],
        "images": entries,
    }
    idle = [server for server in images if running is not None and server not in running]
    if idle:
        wrapper["replicas"] = [{"name": server, "count": 0} for server in idle]
    return wrapper

