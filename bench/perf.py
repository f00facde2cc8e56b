"""Every server on one core, beside the in-repo Go net/http server doing the same work.

    python -m bench.perf [--rounds 3] [--seconds 8] [--rss-requests 200000]

`make perf` runs it. Every runner (servers/registry.py: each server folder, and the other ways
a server.yaml lists to run it) is started by `make serve`, its build step first:

1. throughput: each runner (WORKERS=1, pinned to CPU 0) answers `wrk -t1 -c50` pinned to CPU 1,
   alternating A B C ... for `--rounds` rounds; the ratios are medians of the per-round ratios,
   to the baseline reference (server.yaml `baseline: true`, go-net-http) and to the reference
   each stand-in stands for, so a noisy neighbour hits both sides of a round; beside them the
   server's CPU time per answered request;
2. the seed's connections: each of them once under `wrk -t1 -c15000 -d15s --timeout 10s`:
   answers, the slowest, answers later than 10 s, errors, peak RSS;
3. open model: at half of each stand-in's median maximum, a constant arrival rate from
   bench/openloop.py (pinned to CPU 1; k6 alone on one CPU cannot generate these rates, its
   docstring says how that was measured) against the stand-in, then against the baseline at the
   same rate: the p99s side by side;
4. scaling: WORKERS=2 on both CPUs, wrk sharing them, beside WORKERS=1 on one CPU;
5. memory: RSS of each server's processes every few seconds of wrk load (servers/memory.py),
   start against end.

Results: results/perf-<UTC time>/perf.md and perf.json; the tables are printed too. A server
whose build fails (its toolchain missing, say) is left out with the reason in the report.
Stopped (Ctrl-C, SIGTERM, SIGHUP), it stops its servers and wrk at once and writes what it
measured so far, marked incomplete.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import psutil

from servers import registry
from servers.process import RUNNERS, dies_with_parent, free_port, interruptible, kill_tree
from servers.wrk import Load, parse_wrk, room_for_connections

ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = 50
# The seed's load on one pod, and the answer time past which its users count a request failed.
SEED_CONNECTIONS, SEED_SECONDS, SEED_TIMEOUT = 15_000, 15, 10


class PerfError(RuntimeError):
    """A tool or CPU the run needs is missing; the message says how to fix it."""


@dataclass
class Measured(Load):
    """A wrk run and what the server spent on it."""

    cpu_us: float | None = None  # CPU time of the server's processes per answered request
    peak_rss_mib: float | None = None  # of the runner and its worker, sampled every 0.5 s


@dataclass
class Report:
    machine: dict
    settings: dict
    baseline: str | None = None  # the reference every ratio is to (server.yaml baseline: true)
    stands_for: dict[str, str] = field(default_factory=dict)  # runner -> the reference it stands in for
    skipped: dict[str, str] = field(default_factory=dict)  # runner -> why it was not measured
    incomplete: str = ""  # how the run was stopped early, if it was
    throughput: dict[str, list[Load]] = field(default_factory=dict)
    seed: dict[str, Load] = field(default_factory=dict)
    open_model: dict[str, dict] = field(default_factory=dict)
    scaling: dict[str, dict] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)


# -- pure parts (tested in bench/tests/test_perf.py) ------------------------------------------


def median_rps(loads: Sequence[Load]) -> float:
    return statistics.median(load.rps for load in loads)


def round_ratios(mine: Sequence[Load], peer: Sequence[Load]) -> list[float]:
    """Per-round server ÷ peer req/s; rounds pair up in the order they ran."""
    return [m.rps / p.rps for m, p in zip(mine, peer) if p.rps > 0]


def ratio_median(mine: Sequence[Load], peer: Sequence[Load]) -> float | None:
    ratios = round_ratios(mine, peer)
    return statistics.median(ratios) if ratios else None


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _ratio(report: Report, name: str, to: str | None) -> str:
    if to is None:
        return "–"
    if name == to:
        return "1"
    return _num(ratio_median(report.throughput[name], report.throughput.get(to, [])), 3)


def render(report: Report) -> str:
    """The Markdown of perf.md."""
    m, s = report.machine, report.settings
    base = report.baseline
    lines = [
        f"# perf — {m['when']}",
        "",
        *([f"> **This run is incomplete**: {report.incomplete}. The tables hold what was measured before.", ""]
          if report.incomplete else []),
        f"Machine: {m['cpu']}, {m['cpus']} CPUs usable, Linux {m['kernel']}, Python {m['python']}"
        + (f", load average {m['load_average'][0]:.1f} at the start" if m.get("load_average") else "")
        + f". Command: `{s['command']}`.",
        "",
        f"## Throughput: one worker on CPU {s['server_cpu']}, `wrk -t1 -c{s['connections']}` on CPU {s['load_cpu']}",
        "",
        f"{s['rounds']} rounds of {s['seconds']} s, servers alternating; medians. Each ratio is the median of "
        f"the per-round ratios: to {base or 'the baseline reference (none was measured)'}, and to the reference "
        "the server stands in for (same work everywhere: 100 chained SHA-256 + JSON).",
        "",
        f"| server | req/s | ÷ {base or 'baseline'} | ÷ what it stands for | CPU per request | p50 | p99 (closed loop) | rounds (req/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, loads in report.throughput.items():
        reference = report.stands_for.get(name)
        cpu = [x.cpu_us for x in loads if getattr(x, "cpu_us", None) is not None]
        lines.append(
            f"| {name} | {_num(median_rps(loads))} | {_ratio(report, name, base)} "
            f"| {_ratio(report, name, reference) + (f' ({reference})' if reference else '')} "
            f"| {_num(statistics.median(cpu) if cpu else None, 0, ' µs')} "
            f"| {_num(statistics.median(x.p50_ms for x in loads if x.p50_ms is not None), 2, ' ms') if any(x.p50_ms for x in loads) else '–'} "
            f"| {_num(statistics.median(x.p99_ms for x in loads if x.p99_ms is not None), 2, ' ms') if any(x.p99_ms for x in loads) else '–'} "
            f"| {', '.join(_num(x.rps) for x in loads)} |"
        )
    errors = [f"{name}: {x.errors}" for name, loads in report.throughput.items() for x in loads if x.errors]
    for name, why in report.skipped.items():
        lines += ["", f"Not measured: {name}: {why}"]
    if errors:
        lines += ["", "wrk saw errors: " + " | ".join(errors)]
    if report.seed:
        lines += [
            "",
            f"## The seed's connections: `wrk -t1 -c{s.get('seed_connections', SEED_CONNECTIONS)} "
            f"-d{s.get('seed_seconds', SEED_SECONDS)}s --timeout {SEED_TIMEOUT}s`",
            "",
            f"One worker on CPU {s['server_cpu']}, wrk on CPU {s['load_cpu']}, each server once. wrk counts an answer "
            f"later than {SEED_TIMEOUT} s as a timeout and does not count one that never came, so *answered* and "
            "*slowest* say the rest.",
            "",
            "| server | req/s | answered | p50 | p99 | slowest | later than 10 s | socket errors / non-2xx | peak RSS |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for name, load in report.seed.items():
            lines.append(
                f"| {name} | {_num(load.rps)} | {_num(load.requests)} | {_num(load.p50_ms, 0, ' ms')} "
                f"| {_num(load.p99_ms, 0, ' ms')} | {_num(load.max_ms, 0, ' ms')} | {load.timeouts:,} "
                f"| {load.socket_errors:,} / {load.non_2xx:,} | {_num(getattr(load, 'peak_rss_mib', None), 0, ' MiB')} |"
            )
    if report.open_model:
        lines += [
            "",
            "## Open model: constant arrival rate at half of each server's median maximum",
            "",
            f"[`bench/openloop.py`](../../bench/openloop.py) (wrk2's method: fixed intended send times on "
            f"{CONNECTIONS} keep-alive connections, latency from the intended time) on CPU {s['load_cpu']} for "
            f"{s['open_seconds']} s against the server, then against {base} at the same rate. The last "
            "column is the generator's CPU share in each run: near 1.0, the generator was the bottleneck.",
            "",
            f"| server | rate (req/s) | p50 | p99 | {base} p99 at that rate | p99 ÷ {base} p99 | errors (server / {base}) "
            f"| generator CPU (server / {base}) |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for name, row in report.open_model.items():
            mine, go = row["server"], row.get("go") or {}
            quotient = mine["p99_ms"] / go["p99_ms"] if go.get("p99_ms") else None
            lines.append(
                f"| {name} | {row['rate']:,} | {_num(mine['p50_ms'], 2, ' ms')} | {_num(mine['p99_ms'], 2, ' ms')} "
                f"| {_num(go.get('p99_ms'), 2, ' ms')} | {_num(quotient, 2)} "
                f"| {mine['errors']:,} / {_num(go.get('errors'))} | {mine['cpu_share']:.2f} / {_num(go.get('cpu_share'), 2)} |"
            )
    if report.scaling:
        lines += [
            "",
            "## Scaling: workers up to the CPUs there are",
            "",
            f"WORKERS=1 on one CPU with wrk on the other (the throughput table) beside WORKERS={s['cpus']} on all "
            f"{s['cpus']} CPUs with wrk sharing them: on a {s['cpus']}-CPU machine the load generator takes CPU from "
            "the servers, so the second column understates what more cores would give.",
            "",
            "| server | 1 worker, 1 CPU (req/s) | all workers, all CPUs shared with wrk (req/s) | req/s per worker |",
            "|---|---:|---:|---:|",
        ]
        for name, row in report.scaling.items():
            lines.append(
                f"| {name} | {_num(row['one'])} | {_num(row['all'])} | {_num(row['all'] / row['workers'])} |"
            )
    if report.memory:
        lines += [
            "",
            "## Memory: RSS of the runner and its one worker under load",
            "",
            "| server | requests | RSS after warm-up | RSS at the end | change | samples |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in report.memory.items():
            first, last = row["samples"][0], row["samples"][-1]
            lines.append(
                f"| {name} | {last['requests']:,} | {first['rss_mib']:.1f} MiB | {last['rss_mib']:.1f} MiB "
                f"| {last['rss_mib'] - first['rss_mib']:+.1f} MiB | {len(row['samples'])} |"
            )
    return "\n".join(lines) + "\n"


# -- running things ---------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"perf: {text}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def prepare(runners: Sequence[str]) -> dict[str, str]:
    """Build every server that has a build step, once, before any is timed; runner -> why it is left
    out, for the ones whose build fails (a missing toolchain, say)."""
    failed: dict[str, str] = {}
    for server in dict.fromkeys(RUNNERS[name][0] for name in runners):
        built = registry.build(registry.get(server))
        if built is not None and built.returncode != 0:
            last = (built.stdout + built.stderr).strip().splitlines()[-1:] or ["no output"]
            why = f"its build (`{' '.join(registry.get(server).build)}`) failed: {last[0]}"
            failed.update({name: why for name in runners if RUNNERS[name][0] == server})
    return failed


def start(name: str, cpus: str, workers: int, log: Path):
    """A context manager serving runner `name` (one of RUNNERS) on a free port, pinned to `cpus`."""
    from servers.process import running, serve_command

    port = free_port()
    server, runner_env = RUNNERS[name]
    command = ["taskset", "-c", cpus, *serve_command(server, port, workers)]
    return port, running(command, port, log, env=runner_env, stop_timeout=registry.get(server).drain_timeout_s + 10)


def serve_and_load(name: str, cpus: str, workers: int, log: Path, load: Callable):
    """Start `name`, warm it with one request, and return `load(port, running server)`."""
    port, server = start(name, cpus, workers, log)
    with server as running_server:
        subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/hash"], check=True)  # warm
        return load(port, running_server)


def server_processes(leader_pid: int) -> list[psutil.Process]:
    """The server's own processes: the runner and its workers, not `make` or `taskset` above them."""
    leader = psutil.Process(leader_pid)
    return [p for p in [leader, *leader.children(recursive=True)] if p.name() not in ("make", "taskset")]


def measured_wrk(name: str, cpus: str, load_cpu: str, seconds: int, log: Path,
                 connections: int = CONNECTIONS, timeout: int | None = None, workers: int = 1) -> Measured:
    """One wrk run against `name`, with the server's CPU time per answer and its peak RSS."""

    def load(port: int, server) -> Measured:
        tree = server_processes(server.process.pid)

        def cpu_seconds() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in tree if p.is_running())

        before, peak = cpu_seconds(), 0.0
        command = ["taskset", "-c", load_cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                   *(["--timeout", f"{timeout}s"] if timeout else []), f"http://127.0.0.1:{port}/hash"]
        wrk_run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=dies_with_parent())
        try:
            while wrk_run.poll() is None:
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
                time.sleep(0.5)
            output, spent = wrk_run.communicate()[0], cpu_seconds() - before
        finally:
            if wrk_run.poll() is None:
                kill_tree(wrk_run.pid)
                wrk_run.wait()
        if wrk_run.returncode != 0:
            raise RuntimeError(f"wrk failed against {name}: {output.strip()[-300:]}")
        result = parse_wrk(output)
        cpu_us = spent / result.requests * 1e6 if result.requests else None
        return Measured(**asdict(result), cpu_us=cpu_us, peak_rss_mib=peak)

    return serve_and_load(name, cpus, workers, log, load)


def open_loop(port: int, cpu: str, rate: int, seconds: int, log: Path) -> dict:
    """bench/openloop.py pinned to `cpu`: its result (p50_ms, p99_ms, cpu_share, errors, ...)."""
    with open(log, "wb") as err:
        done = subprocess.run(["taskset", "-c", cpu, sys.executable, "-m", "bench.openloop", "--url",
                               f"http://127.0.0.1:{port}/hash", "--rate", str(rate), "--seconds", str(seconds)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=err, check=False,
                              preexec_fn=dies_with_parent())  # fmt: skip
    if done.returncode != 0:
        raise PerfError(f"the open-model generator failed ({log}): read the log, then run make perf again.")
    return json.loads(done.stdout)


def check_machine() -> list[int]:
    """The CPUs to use; PerfError when there are fewer than two or a tool is missing."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise PerfError(f"this process may use only CPU {cpus}: perf needs two, one for the server and one for the load.")
    for tool in ("wrk", "taskset", "curl"):
        if not shutil.which(tool):
            raise PerfError(f"`{tool}` is not installed: apt-get install {'util-linux' if tool == 'taskset' else tool}.")
    return cpus


def new_report(args: argparse.Namespace, cpus: list[int]) -> Report:
    return Report(
        machine={"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "cpus": len(cpus),
                 "kernel": platform.release(), "python": platform.python_version(), "load_average": os.getloadavg()},
        settings={"rounds": args.rounds, "seconds": args.seconds, "connections": CONNECTIONS, "server_cpu": str(cpus[0]),
                  "load_cpu": str(cpus[1]), "cpus": len(cpus), "open_seconds": args.open_seconds,
                  "rss_requests": args.rss_requests, "seed_connections": args.seed_connections,
                  "seed_seconds": args.seed_seconds, "command": " ".join(["make perf", *args.make_args])},
        baseline=registry.baseline(),
        stands_for={name: spec.stands_for for name, (server, _) in RUNNERS.items()
                    if (spec := registry.get(server)).stands_for},
    )  # fmt: skip


def run(args: argparse.Namespace, out: Path, report: Report, cpus: list[int]) -> Report:
    server_cpu, load_cpu, all_cpus = str(cpus[0]), str(cpus[1]), ",".join(map(str, cpus))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report.skipped = prepare(list(RUNNERS))
    for name, why in report.skipped.items():
        say(f"{name} is left out: {why}")
    names = [name for name in RUNNERS if name not in report.skipped]
    if report.baseline not in names:
        report.baseline = None
    servers = [name for name in names if name in registry.names()]  # each server once, not its variants
    for name in names:
        report.throughput[name] = []
    for r in range(1, args.rounds + 1):
        for name in names:
            load = measured_wrk(name, server_cpu, load_cpu, args.seconds, logs / f"{name}-round{r}.log")
            report.throughput[name].append(load)
            say(f"round {r}/{args.rounds} {name}: {load.rps:,.0f} req/s, {_num(load.cpu_us, 0)} us of CPU per request")
    if args.seed:
        if problem := room_for_connections(args.seed_connections + 2000):
            raise PerfError(problem)
        for name in names:
            load = measured_wrk(name, server_cpu, load_cpu, args.seed_seconds, logs / f"{name}-seed.log",
                                connections=args.seed_connections, timeout=SEED_TIMEOUT)  # fmt: skip
            report.seed[name] = load
            say(f"{args.seed_connections:,} connections, {name}: {load.requests:,} answered, slowest "
                f"{_num(load.max_ms, 0)} ms, {load.timeouts:,} later than {SEED_TIMEOUT} s")  # fmt: skip
    if args.open_seconds:
        for name in [n for n in servers if n in report.stands_for]:
            rate = max(1, int(median_rps(report.throughput[name]) / 2))
            row = {"rate": rate}
            for who in [name] + ([report.baseline] if report.baseline else []):
                row["server" if who == name else "go"] = serve_and_load(
                    who, server_cpu, 1, logs / f"open-{name}-{who}.log",
                    lambda port, _, who=who: open_loop(port, load_cpu, rate, args.open_seconds,
                                                    logs / f"open-{name}-{who}.openloop.log"),
                )  # fmt: skip
                say(f"open {name} at {rate:,} req/s, {who}: p99 {row['server' if who == name else 'go']['p99_ms']} ms")
            report.open_model[name] = row
    if args.scaling:
        for name in names:
            load = measured_wrk(name, all_cpus, all_cpus, args.seconds, logs / f"{name}-scaling.log",
                                workers=len(cpus))  # fmt: skip
            workers = len(cpus) if registry.get(RUNNERS[name][0]).has("worker_processes") else 1
            report.scaling[name] = {"one": median_rps(report.throughput[name]), "all": load.rps, "workers": workers}
            say(f"scaling {name}: {load.rps:,.0f} req/s on {len(cpus)} CPUs")
    if args.rss_requests:
        from servers.memory import measure

        for name in servers:
            samples = measure(name, args.rss_requests, logs / f"{name}-memory.log", round_seconds=args.memory_round_seconds,
                              progress=lambda s, name=name: say(f"memory {name}: {s.requests:,} requests, {s.rss_mib:.1f} MiB"))  # fmt: skip
            report.memory[name] = {"samples": [asdict(s) for s in samples]}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--open-seconds", type=int, default=15, help="0 skips the open-model runs")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false")
    parser.add_argument("--no-seed", dest="seed", action="store_false", help="skip the 15,000-connection runs")
    parser.add_argument("--rss-requests", type=int, default=100_000, help="0 skips the memory runs")
    # Sizes for a short run (the tests'); the defaults are the seed's load and servers/memory.py's rounds.
    parser.add_argument("--seed-connections", type=int, default=SEED_CONNECTIONS)
    parser.add_argument("--seed-seconds", type=int, default=SEED_SECONDS)
    parser.add_argument("--memory-round-seconds", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    args.make_args = [f"PERF_ROUNDS={args.rounds}", f"PERF_RSS_REQUESTS={args.rss_requests}"]
    out = args.results / time.strftime("perf-%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        cpus = check_machine()
    except PerfError as error:
        print(f"perf: {error}", file=sys.stderr)
        return 2
    report = new_report(args, cpus)
    code = 0
    try:
        with interruptible():
            run(args, out, report, cpus)
    except PerfError as error:
        print(f"perf: {error}", file=sys.stderr)
        return 2
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as error:
        print(f"perf: a run failed ({error}); its logs are in {out / 'logs'}: read them, then run make perf again.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stopped:
        name = signal.Signals(getattr(stopped, "signum", signal.SIGINT)).name
        report.incomplete = f"stopped by {name} at {time.strftime('%H:%M:%S UTC', time.gmtime())}"
        code = 128 + getattr(stopped, "signum", signal.SIGINT)
    out.mkdir(parents=True, exist_ok=True)
    text = render(report)
    (out / "perf.md").write_text(text)
    (out / "perf.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(text)
    say(f"wrote {out / 'perf.md'} and perf.json" + (f" ({report.incomplete})" if report.incomplete else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
