"""Everything the server reads from its environment, read once, here and nowhere else.

The twin of this file lives in the other server and differs only in SERVER_NAME; a test keeps the
two in step. A bad value raises SettingsError, whose message is the one line the runner prints
before it exits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SERVER_NAME = "async-style"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SCHED_POLICIES = ("batch", "other")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """One environment variable holds a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    workers: int
    hash_iterations: int
    log_level: str
    # Off by default: a log line per request is work on the hot path of a benchmark whose point
    # is the cost of serving. Measured (one worker on CPU 0, wrk -c50 on CPU 1, log to /dev/null,
    # 3 alternating rounds, medians): stdlib-style 2,851 -> 1,999 req/s, async-style 7,526 ->
    # 5,566 req/s with it on (docs/performance.md, "Why the access log is off").
    access_log: bool
    # Linux scheduling policy of the runner, its workers and all their threads (apply_sched_policy).
    sched_policy: str = "batch"
    source: str = SERVER_NAME


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    return Settings(
        host=env.get("HOST", "127.0.0.1") or "127.0.0.1",
        port=_integer(env, "PORT", 8080, low=1, high=65535),
        workers=_integer(env, "WORKERS", None, low=1, high=1024),
        hash_iterations=_integer(env, "HASH_ITERATIONS", 100, low=1, high=10_000_000),
        log_level=_choice(env, "LOG_LEVEL", "info", LOG_LEVELS),
        access_log=_boolean(env, "ACCESS_LOG", False),
        sched_policy=_choice(env, "SCHED_POLICY", "batch", SCHED_POLICIES),
    )


def apply_sched_policy(policy: str) -> str | None:
    """Put the calling thread under `policy`; threads and processes it starts later inherit it.

    `batch` is SCHED_BATCH: the same fair share of the CPU as Linux's default policy (`other`,
    SCHED_OTHER), but a thread woken up does not preempt the one running; it waits for it to
    block or for its time slice to end. Each request crosses threads here (granian's tokio
    thread hands it to the Python thread; gthread's event loop hands it to a pool thread), and
    under the default policy each such wake-up preempts the thread doing Python work. Measured
    (async-style, one worker on CPU 0, `wrk -t1 -c50` on CPU 1): 63,000 context switches for
    46,000 requests under `other`, 6,800 for 51,000 under `batch`; CPU per request, alternating
    rounds beside the Go peer, medians (docs/performance.md, "Why SCHED_POLICY=batch"): async-style 114 -> 96 us over
    10 rounds, stdlib-style 386 -> 351 us over 8. No privilege is needed for either policy.

    Returns None when done, or the one-line reason the OS refused (the server then runs under
    its current policy, which is only slower).
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return None if policy == "other" else f"SCHED_POLICY={policy} needs Linux; running under the default policy."
    try:
        setter(0, os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER, os.sched_param(0))
    except OSError as error:
        return f"SCHED_POLICY={policy} was refused ({error.strerror}); running under the current policy."
    return None


def _integer(env: Mapping[str, str], name: str, default: int | None, *, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return available_cpus() if default is None else default
    try:
        value = int(raw, 10)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}, got {raw!r}.")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}.")
    return raw


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false (also 1/0, yes/no, on/off), got {raw!r}.")


def available_cpus(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """CPUs this process can really use: the affinity mask, capped by a cgroup CPU quota.

    A quota of 1.5 CPUs gives 2 (rounded up); the host's core count is never used when a quota
    is set, because a container limited to 2 CPUs on a 64-core node must not start 64 workers.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(Path(cgroup_root), Path(proc_cgroup))
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cgroup_cpu_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors, or None."""
    quotas = [q for d in _cgroup_dirs(root, proc_cgroup) if (q := _read_quota(d)) is not None]
    return min(quotas) if quotas else None


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """Candidate directories holding CPU controller files, from the process's own cgroup up."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    mounts: list[tuple[Path, str]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2 unified hierarchy
            mounts.append((root, path))
        elif "cpu" in controllers.split(","):  # cgroup v1 cpu controller
            for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
                if (root / name).is_dir():
                    mounts.append((root / name, path))
                    break
    if not mounts:
        mounts = [(root, "/"), (root / "cpu,cpuacct", "/"), (root / "cpu", "/")]
    dirs = []
    for mount, path in mounts:
        # Inside a container the path from /proc may not exist under the namespaced mount;
        # walking up to the mount root finds the container's own limits there.
        current = mount / path.lstrip("/")
        while True:
            dirs.append(current)
            if current == mount or mount not in current.parents:
                break
            current = current.parent
        if mount not in dirs:
            dirs.append(mount)
    return dirs


def _read_quota(directory: Path) -> float | None:
    try:
        fields = (directory / "cpu.max").read_text().split()  # v2: "<quota|max> <period>"
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:  # v1: quota is -1 when unlimited
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None
