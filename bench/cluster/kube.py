"""kubectl, the Kubernetes quantities and timestamps it returns, and the error a person can fix."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

NAMESPACE = "py-bench"


class ClusterError(RuntimeError):
    """Something the person running the benchmark can fix; the message says how."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ClusterError("kubectl is not installed: install it from https://kubernetes.io/docs/tasks/tools/.") from None
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU or memory quantity ("6", "500m", "12Gi", "1.5G") as cores or bytes."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)

