"""Run k6/bench.js once against a running server, pinned to k6's CPUs, sampling as it goes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.model import Series
from servers.process import dies_with_parent, free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "k6" / "bench.js"
# Half a second resolves a 35 s quick run into ~70 points while the sampler (on k6's CPUs) stays
# under 1 % of a core, measured with `make bench-local` on the 2-core dev machine.
INTERVAL_S = 0.5
# k6 exits 99 when a threshold fails (errors above 1 %); the run is still complete and reported.
K6_OK_EXITS = (0, 99)


class K6Error(RuntimeError):
    pass


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def planned_seconds(k6: str, env: dict[str, str]) -> float | None:
    """How long the profile runs (stages or duration, without graceful stops), from `k6 inspect`."""
    command = [k6, "inspect", "--execution-requirements", *_env_flags(env), str(SCRIPT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise K6Error(f"k6 could not load {SCRIPT.relative_to(ROOT)} ({last}): run `make test` to see what broke it.")
    options = json.loads(result.stdout[result.stdout.index("{"):])
    total = 0.0
    for scenario in options.get("scenarios", {}).values():
        if "stages" in scenario:
            total = max(total, sum(_seconds(s["duration"]) for s in scenario["stages"]))
        elif "duration" in scenario:
            total = max(total, _seconds(scenario["duration"]))
    return total or None


def _env_flags(env: dict[str, str]) -> list[str]:
    return [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]


@dataclass
class Sampler:
    """Samples the server's process tree, the k6 process and k6's request counter every INTERVAL_S."""

    server_pid: int
    k6: psutil.Process
    api: str
    cpus: list[int]  # every CPU the server and k6 are pinned to
    series: Series = field(default_factory=lambda: {k: [] for k in ("t_s", "rps", "vus", "server_cpu_cores", "server_rss_mb", "k6_cpu_cores", "others_cpu_cores")})  # type: ignore[assignment]
    _cpu: dict[int, float] = field(default_factory=dict)
    _last: tuple[float, int | None] | None = None
    _busy: float | None = None  # busy CPU seconds of the pinned CPUs at the last read
    _cpu_at: float | None = None  # when the CPU counters were last read (monotonic)

    def _cpus_busy(self) -> float:
        """CPU seconds the pinned CPUs spent busy so far, whoever used them."""
        per_cpu = psutil.cpu_times(percpu=True)
        return sum(sum(per_cpu[c]) - per_cpu[c].idle - getattr(per_cpu[c], "iowait", 0) for c in self.cpus)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.server_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu_delta(self, processes: list[psutil.Process], key: str) -> float | None:
        """CPU seconds used since the previous sample by `processes` (those seen then)."""
        total, known = 0.0, False
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            ident = hash((key, process.pid))
            if ident in self._cpu:
                total += used - self._cpu[ident]
                known = True
            self._cpu[ident] = used
        return total if known else None

    def _k6_api(self, metric: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.api}/v1/metrics/{metric}", timeout=0.3) as response:
                return json.load(response)["data"]["attributes"]["sample"]
        except (OSError, ValueError, KeyError):
            return None

    def sample(self, t: float) -> None:
        tree = self._tree()
        rss = 0
        for process in tree:
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                pass
        # Each rate is taken over its own counters' interval: listing the process tree or asking
        # k6's API can stall on a crowded machine, and mixed intervals once showed other
        # processes using more CPU than the machine has.
        now = time.monotonic()
        server_cpu = self._cpu_delta(tree, "server")
        k6_cpu = self._cpu_delta([self.k6], "k6")
        busy = self._cpus_busy()
        cpu_dt = now - self._cpu_at if self._cpu_at is not None else None
        busy_delta = busy - self._busy if self._busy is not None else None
        self._cpu_at, self._busy = now, busy
        rate = lambda used: used / cpu_dt if used is not None and cpu_dt else None  # noqa: E731
        others = None
        if None not in (server_cpu, k6_cpu, busy_delta) and cpu_dt:
            others = max(0.0, (busy_delta - server_cpu - k6_cpu) / cpu_dt)

        reqs, vus = self._k6_api("http_reqs"), self._k6_api("vus")
        count = int(reqs["count"]) if reqs else None
        rps = None
        if self._last is not None and count is not None and self._last[1] is not None:
            rps = (count - self._last[1]) / (t - self._last[0])
        self._last = (t, count)

        s = self.series
        s["t_s"].append(round(t, 3))
        s["rps"].append(rps)
        s["vus"].append(int(vus["value"]) if vus else None)
        s["server_cpu_cores"].append(rate(server_cpu))
        s["server_rss_mb"].append(rss / 1e6 if tree else None)
        s["k6_cpu_cores"].append(rate(k6_cpu))
        s["others_cpu_cores"].append(others)


@dataclass
class K6Result:
    summary: dict[str, Any]
    series: Series
    log: Path


def run_k6(
    k6: str,
    k6_cpus: list[int],
    server_cpus: list[int],
    env: dict[str, str],
    server_pid: int,
    summary_path: Path,
    log: Path,
    label: str,
    planned_s: float | None,
) -> K6Result:
    """Run k6 to the end, showing a live progress line, and return its summary and the samples."""
    port = free_port()
    command = [
        "taskset", "-c", ",".join(map(str, k6_cpus)),
        k6, "run", "--no-usage-report", "--address", f"127.0.0.1:{port}",
        *_env_flags({**env, "SUMMARY": str(summary_path)}), str(SCRIPT),
    ]  # fmt: skip
    summary_path.unlink(missing_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=dies_with_parent())
    sampler = Sampler(server_pid, psutil.Process(process.pid), f"http://127.0.0.1:{port}", sorted({*k6_cpus, *server_cpus}))
    progress = Progress(label, planned_s)
    start = time.monotonic()
    stop = threading.Event()
    try:
        while process.poll() is None:
            stop.wait(INTERVAL_S)
            if process.poll() is not None:
                break
            sampler.sample(time.monotonic() - start)
            progress.show(time.monotonic() - start, sampler.series)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        progress.done(time.monotonic() - start, sampler.series)
    if process.returncode not in K6_OK_EXITS or not summary_path.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise K6Error(f"k6 exited with {process.returncode} ({label}); last lines of {log}:\n" + "\n".join(tail))
    return K6Result(json.loads(summary_path.read_text()), sampler.series, log)


class Progress:
    """One live line per run on a terminal; a line every 5 s otherwise (CI logs)."""

    EVERY_S = 5.0

    def __init__(self, label: str, planned_s: float | None) -> None:
        self.label, self.planned = label, planned_s
        self.tty = sys.stderr.isatty()
        self.printed = 0.0

    def _line(self, elapsed: float, series: Series, window: int = 4) -> str:
        total = f"/{self.planned:.0f}" if self.planned else ""
        recent = [r for r in series["rps"][-window:] if r is not None]
        rate = f"{sum(recent) / len(recent):8,.0f} req/s" if recent else "       – req/s"
        cpu = [c for c in series["server_cpu_cores"][-window:] if c is not None]
        load = f"  server {sum(cpu) / len(cpu):4.2f} cores" if cpu else ""
        return f"  {self.label:<34} {elapsed:5.0f}{total} s {rate}{load}  ({len(series['t_s'])} samples)"

    def show(self, elapsed: float, series: Series) -> None:
        if self.tty:
            print("\r" + self._line(elapsed, series), end="", file=sys.stderr, flush=True)
        elif elapsed - self.printed >= self.EVERY_S:
            self.printed = elapsed
            print(self._line(elapsed, series), file=sys.stderr, flush=True)

    def done(self, elapsed: float, series: Series) -> None:
        # The closing line averages the whole run, not its ramp-down.
        print(("\r" if self.tty else "") + self._line(elapsed, series, window=0), file=sys.stderr, flush=True)
