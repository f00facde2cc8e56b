"""A CPU limit on a server's whole process tree, as a pod's `resources.limits.cpu` is: a CFS quota.

`make bench-local` gives every server of a run the same SERVER_CPU_LIMIT (the seed's "identical
resource constraints for fair comparison"), less CPU than k6 can load, so the server, not k6, is
what limits the run. Each server round gets a cgroup of its own:

- cgroup v1 (this project's machines: the cpu controller at /sys/fs/cgroup/cpu):
  `cpu.cfs_period_us` and `cpu.cfs_quota_us`, throttling in `cpu.stat` (throttled_time in ns);
- cgroup v2 (the unified hierarchy with the cpu controller, e.g. systemd machines): a
  `py-serving-bench` cgroup under the root with `+cpu` delegated, `cpu.max` "<quota> <period>",
  throttling in `cpu.stat` (throttled_usec).

The server's first process joins the cgroup before it execs (a Popen preexec function), so every
process it forks inherits the limit, as in a container. The period is 10 ms, not the kernel's
100 ms default: a quota is spent in bursts and then throttled until the period ends, and with
100 ms periods a 0.3-core limit stalls the server for up to 70 ms at a time (measured here:
async-style p50 8 ms, p90 72 ms, bimodal); Kubernetes' kubelet uses 100 ms unless its
cpuCFSQuotaPeriod is set, which docs/bench-local.md discusses.

Where no quota can be set (no permission, no cpu controller), `controller()` says so in one line
with the fix and the run goes on without one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PERIOD_US = 10_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
GROUP = "py-serving-bench"


class LimitError(RuntimeError):
    """The quota cannot be set here; the message is one line with the fix."""


def parse_limit(text: str, default: float) -> float | None:
    """SERVER_CPU_LIMIT: cores as a number (0.3), millicores (300m), `none`; empty gives `default`."""
    text = text.strip().lower()
    if text in ("none", "off"):
        return None
    if not text:
        return default
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        cores = -1.0
    if not 0.01 <= cores <= 1024:
        raise ValueError(f"SERVER_CPU_LIMIT must be cores (0.3), millicores (300m) or none, got '{text}': e.g. SERVER_CPU_LIMIT=0.3.")
    return cores


@dataclass
class Throttling:
    """cpu.stat counters of one cgroup, or their difference over an interval."""

    periods: int = 0
    throttled: int = 0
    throttled_s: float = 0.0

    def __sub__(self, other: "Throttling") -> "Throttling":
        return Throttling(self.periods - other.periods, self.throttled - other.throttled,
                          self.throttled_s - other.throttled_s)

    def as_dict(self) -> dict[str, float]:
        return {"periods": self.periods, "throttled_periods": self.throttled, "throttled_s": self.throttled_s}


class Quota:
    """One cgroup holding one server run, limited to `cores` every PERIOD_US."""

    def __init__(self, path: Path, version: int, cores: float) -> None:
        self.path, self.version, self.cores = path, version, cores
        quota = max(1000, round(cores * PERIOD_US))
        path.mkdir(parents=True, exist_ok=True)
        if version == 1:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def join(self) -> Callable[[], None]:
        """A Popen preexec function: the child moves itself into this cgroup before it execs."""
        procs = str(self.path / "cgroup.procs")

        def move() -> None:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

        return move

    def throttling(self) -> Throttling:
        fields = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        throttled = int(fields.get("throttled_time", 0)) / 1e9 if self.version == 1 else int(fields.get("throttled_usec", 0)) / 1e6
        return Throttling(int(fields.get("nr_periods", 0)), int(fields.get("nr_throttled", 0)), throttled)

    def remove(self, timeout: float = 10.0) -> None:
        """Delete the cgroup once the server's processes have left it (they are gone by then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # a process still inside: the kernel keeps it; nothing to lose but a name
                time.sleep(0.05)


class Controller:
    """Makes Quotas under one cgroup hierarchy."""

    def __init__(self, base: Path, version: int) -> None:
        self.base, self.version = base, version

    def sweep(self) -> None:
        """Remove the empty cgroups of runs that died without removing theirs (SIGKILL): their
        names end in the run's PID and a time, and that PID no longer runs."""
        for group in self.base.iterdir() if self.base.is_dir() else []:
            parts = group.name.rsplit("-", 2)
            if group.is_dir() and len(parts) == 3 and parts[1].isdigit() and not Path(f"/proc/{parts[1]}").exists():
                try:
                    group.rmdir()
                except OSError:
                    pass  # still holds a process (a server left running by hand): keep it

    def describe(self) -> str:
        files = "cpu.cfs_quota_us" if self.version == 1 else "cpu.max"
        return f"a cgroup v{self.version} CPU quota, {files} under {self.base}, {PERIOD_US // 1000} ms period"

    def quota(self, name: str, cores: float) -> Quota:
        return Quota(self.base / f"{name}-{os.getpid()}-{time.monotonic_ns()}", self.version, cores)


def controller(v1_root: Path | None = None, v2_root: Path | None = None) -> Controller:
    """The hierarchy to put quotas in, checked by making (and removing) one; LimitError if none works."""
    v1_root = V1_ROOT if v1_root is None else v1_root
    v2_root = V2_ROOT if v2_root is None else v2_root
    candidates: list[tuple[Path, int]] = []
    if (v1_root / "cpu.cfs_quota_us").is_file():
        candidates.append((v1_root / GROUP, 1))
    controllers = v2_root / "cgroup.controllers"
    if controllers.is_file() and "cpu" in controllers.read_text().split():
        candidates.append((v2_root / GROUP, 2))
    if not candidates:
        raise LimitError(
            "no cgroup cpu controller is mounted here (neither /sys/fs/cgroup/cpu nor a cgroup v2 /sys/fs/cgroup with cpu), "
            "so the servers run without a CPU limit: mount one, or set SERVER_CPU_LIMIT=none to say so."
        )
    problems = []
    for base, version in candidates:
        try:
            if version == 2:
                _delegate_cpu(base)
            base.mkdir(exist_ok=True)
            found = Controller(base, version)
            probe = found.quota("probe", 0.5)
            probe.throttling()
            probe.remove()
            found.sweep()
            return found
        except OSError as error:
            problems.append(f"cgroup v{version} at {base}: {error.strerror or error}")
    raise LimitError(
        f"a CPU quota cannot be set ({'; '.join(problems)}), so the servers run without a CPU limit: "
        "run make bench-local as root (or with write access to that cgroup), or set SERVER_CPU_LIMIT=none."
    )


def _delegate_cpu(base: Path) -> None:
    """cgroup v2: cpu must be enabled in the subtree of every ancestor of a cgroup that uses it."""
    for parent in (base.parent, base):
        parent.mkdir(exist_ok=True)
        control = parent / "cgroup.subtree_control"
        if "cpu" not in control.read_text().split():
            control.write_text("+cpu")
