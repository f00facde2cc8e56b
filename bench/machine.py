"""What a local run needs from this machine: CPU sets, k6, tool versions, a description."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.model import Machine
from bench.versions import read_versions

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("granian", "gunicorn", "falcon", "starlette", "orjson")


class SetupError(RuntimeError):
    """Something the run needs is missing or wrong; the message says how to fix it."""


def parse_cpus(text: str) -> list[int]:
    """A taskset-style CPU list ("0", "0-1", "0,2-3") as sorted CPU numbers."""
    cpus: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise SetupError(f"'{text}' is not a CPU list: write it like 0 or 0-1 or 0,2.") from None
    return sorted(cpus)


def cpu_sets(server: str = "", k6: str = "") -> tuple[list[int], list[int]]:
    """Disjoint CPU sets for the servers and for k6; by default the lower half serves, the upper loads.

    Overlapping sets are refused: k6 and the server would take CPU from each other, and a server
    left running by anything else would take it from both, with nothing in the numbers to say so.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise SetupError(
            f"this process may use only CPU {allowed}: a local benchmark needs two, one for the servers "
            "and one for k6, so run it where two CPUs are free (taskset, or a larger machine)."
        )
    half = (len(allowed) + 1) // 2
    server_cpus = parse_cpus(server) if server else allowed[:half]
    k6_cpus = parse_cpus(k6) if k6 else [c for c in allowed if c not in server_cpus] or allowed[half:]
    for name, cpus in (("SERVER_CPUS", server_cpus), ("K6_CPUS", k6_cpus)):
        outside = [c for c in cpus if c not in allowed]
        if not cpus or outside:
            raise SetupError(f"{name} must be CPUs this process may use ({allowed}), got {cpus}: fix {name}.")
    if shared := sorted(set(server_cpus) & set(k6_cpus)):
        raise SetupError(
            f"SERVER_CPUS and K6_CPUS share CPU {','.join(map(str, shared))}, so k6 and the servers would take CPU "
            f"from each other: give them different CPUs, e.g. SERVER_CPUS={allowed[0]} K6_CPUS={allowed[-1]}."
        )
    return server_cpus, k6_cpus


def k6_binary() -> tuple[str, str]:
    """The k6 to run and its version: the venv's (from requirements-dev.lock), else one on PATH of the same major."""
    wanted = read_versions()["K6_VERSION"]
    candidates = [str(Path(sys.executable).parent / "k6"), str(ROOT / ".venv" / "bin" / "k6"), shutil.which("k6")]
    for candidate in filter(None, candidates):
        if not os.access(candidate, os.X_OK):
            continue
        output = subprocess.run([candidate, "version"], capture_output=True, text=True, timeout=30).stdout
        found = re.search(r"v(\d+)\.(\d+)\.(\d+)", output)
        if found and found.group(1) == wanted.split(".")[0]:
            return candidate, found.group(0)[1:]
    raise SetupError(f"no k6 {wanted.split('.')[0]}.x found: run `make test` once to create .venv with k6 {wanted}.")


def require_taskset() -> None:
    if shutil.which("taskset") is None:
        raise SetupError("taskset is missing: install it with `apt-get install util-linux`.")


# The reference servers' toolchains, as each prints its version (the first a-b-c number it prints).
TOOLCHAINS = {"go": ["go", "version"], "rustc": ["rustc", "--version"]}


def tool_versions(k6_version: str) -> dict[str, str]:
    found = {"python": platform.python_version(), "k6": k6_version}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    for tool, command in TOOLCHAINS.items():
        try:
            output = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version := re.search(r"\d+\.\d+(\.\d+)?", output):
            found[tool] = version.group(0)
    return found


def describe() -> Machine:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count() or 0,
        "kernel": platform.release(),
        "description": f"servers and k6 on one machine over loopback; load average {os.getloadavg()[0]:.1f} at the start",
    }
