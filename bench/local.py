"""`make bench-local`: the servers on this machine, pinned apart from k6, in alternating rounds.

    python -m bench.local --servers "stand-ins" --profile quick --run-id my-run [--plan]

Writes results/<run-id>/summary.json (bench/model.py), report.md and the PNG plots, and prints
the tables. Every server is verified before it is measured; one that fails is refused. Stopped
(Ctrl-C, SIGTERM, SIGHUP), it stops what it started at once and keeps the rounds measured so far:
summary.json marked incomplete, and a report that opens by saying so. `--plan` prints what a run
would do and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from bench import cpulimit, machine, openmodel
from bench.cpulimit import Controller, Quota
from bench.k6run import K6Error, free_port, planned_seconds, run_k6
from bench.metrics import K6SummaryError, aggregate, metrics_from_run
from bench.model import SCHEMA_VERSION, Metrics, Round, Series, Summary, save
from bench.report import terminal_text, write_report
from bench.verify import verify
from servers import registry
from servers.process import Running, interruptible, running, serve_command

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("quick", "standard", "open", "smoke")
# Two rounds let the A B A B order spread a shared machine's drift over both servers while
# quick stays under 3 minutes for both (README); standard has time for three. smoke (5 VUs for
# 10 s) only shows that the wiring works.
DEFAULT_ROUNDS = {"quick": 2, "standard": 3, "open": 2, "smoke": 1}
# SERVER_CPU_LIMIT's default, in cores per CPU given to k6: the fastest server of the default run
# (async-style) under it leaves k6 at least twice the CPU it uses (docs/bench-local.md, "The CPU
# limit", has the measurements). On a larger machine k6 gets more CPUs and the limit grows with them.
CPU_LIMIT_PER_K6_CPU = 0.25


@dataclass(frozen=True)
class Plan:
    servers: list[str]
    profile: str
    rounds: int
    workers: str
    server_cpus: list[int]
    k6_cpus: list[int]
    k6: str
    run_dir: Path
    cpu_limit: float | None = None  # cores each server may use (a CFS quota), None: no limit
    limits: Controller | None = None  # where the quotas go
    limit_note: str = ""  # how the limit is set, or why there is none
    open_step_s: int = openmodel.STEP_S  # PROFILE=open: seconds per probe of the search, and per latency level
    open_measure_s: int = openmodel.MEASURE_S

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def server_running(plan: Plan, server: str, name: str, limited: bool = True,
                   env: dict[str, str] | None = None) -> Iterator[Running]:
    """The server under `make serve` (with `env`), pinned to the servers' CPUs and, if `limited`
    and the plan has one, under the CPU limit (its own cgroup; `live.quota`, else None)."""
    port = free_port()
    pin = ["taskset", "-c", ",".join(map(str, plan.server_cpus))]
    quota = plan.limits.quota(name, plan.cpu_limit) if limited and plan.limits and plan.cpu_limit else None
    try:
        with running([*pin, *serve_command(server, port, plan.workers)], port, plan.logs / f"{name}.server.log",
                     env=env, stop_timeout=registry.get(server).drain_timeout_s + 10,
                     setup=quota.join() if quota else None) as server_:
            server_.quota = quota
            yield server_
    finally:
        if quota:
            quota.remove()


def measure(
    plan: Plan, server: str, live: Running, name: str, label: str, extra: dict[str, str], planned: float | None
) -> tuple[Metrics, Series]:
    """One k6 run against `live`; its files are logs/<name>.*, its progress line says `label`."""
    env = {"TARGET": live.base_url, "SERVER": server, "PROFILE": plan.profile, **extra}
    quota: Quota | None = live.quota
    before = quota.throttling() if quota else None
    result = run_k6(
        plan.k6, plan.k6_cpus, plan.server_cpus, env, live.process.pid,
        plan.logs / f"{name}.k6-summary.json", plan.logs / f"{name}.k6.log", label, planned,
    )  # fmt: skip
    metrics = metrics_from_run(result.summary, result.series, len(plan.k6_cpus))
    metrics["cpu_limit_cores"] = quota.cores if quota else None
    metrics["throttling"] = (quota.throttling() - before).as_dict() if quota and before else None
    return metrics, result.series


def new_summary(plan: Plan, run_id: str, command: str, k6_version: str) -> Summary:
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "created": now(),
        "settings": {
            "where": "local",
            "profile": plan.profile,
            "rounds": plan.rounds,
            "workers": plan.workers,
            "server_cpus": plan.server_cpus,
            "k6_cpus": plan.k6_cpus,
            "server_cpu_limit": plan.cpu_limit,
            "server_cpu_limit_how": plan.limit_note,
            "servers": plan.servers,
            "command": command,
        },
        "machine": machine.describe(),
        "versions": machine.tool_versions(k6_version),
        "servers": {},
    }


def starter(plan: Plan, server: str):
    """For bench/verify.py's work check: the server started with other settings, as (port, pid)."""

    @contextmanager
    def start(env: dict[str, str]) -> Iterator[tuple[int, int]]:
        name = f"{server}-verify-" + "-".join(f"{k.lower()}{v}" for k, v in env.items())
        # Without the CPU limit: the work check counts CPU time, which a quota would only slow down.
        with server_running(plan, server, name, limited=False, env=env) as live:
            yield int(live.base_url.rsplit(":", 1)[1]), live.process.pid

    return start


def verify_all(plan: Plan, summary: Summary) -> list[str]:
    """Verify every server; return those that may be measured."""
    for server in plan.servers:
        say(f"{server}: verifying (known answers, the HTTP contract, the work)")
        try:
            with server_running(plan, server, f"{server}-verify", limited=False) as live:
                verdict = verify(server, int(live.base_url.rsplit(":", 1)[1]), starter(plan, server))
        except RuntimeError as error:
            # The server's own one-line complaint (settings.py) says more than "it exited".
            lines = str(error).splitlines()
            own = [line for line in lines if line.startswith(f"{server}: ")]
            verdict = {"ok": False, "reason": f"it did not start: {(own or lines)[0]}"}
        summary["servers"][server] = {"verification": verdict, "rounds": [], "aggregate": None, "open": None}
        say(f"{server}: " + ("verified (" + verdict["reason"] + ")" if verdict["ok"] else "REFUSED, not measured: " + verdict["reason"]))
    return [s for s in plan.servers if summary["servers"][s]["verification"]["ok"]]


def closed_rounds(plan: Plan, summary: Summary, servers: list[str]) -> None:
    planned = planned_seconds(plan.k6, {"TARGET": "http://127.0.0.1:1", "SERVER": servers[0], "PROFILE": plan.profile})
    for number in range(1, plan.rounds + 1):
        for server in servers:
            name = f"{server}-round{number}"
            started = now()
            with server_running(plan, server, name) as live:
                metrics, series = measure(plan, server, live, name, f"{server} round {number}/{plan.rounds}", {}, planned)
            record(summary, server, {"round": number, "started": started, "target_rate": None, "metrics": metrics, "series": series})
            save(summary, plan.run_dir)


def record(summary: Summary, server: str, round_: Round) -> None:
    result = summary["servers"][server]
    result["rounds"].append(round_)
    result["aggregate"] = aggregate([r["metrics"] for r in result["rounds"]])


def describe(plan: Plan, run_id: str) -> str:
    """What the run will do, in a few lines: the first thing it prints, and all that --plan prints."""
    limit = (f"each limited to {plan.cpu_limit:g} of a CPU ({plan.limit_note})" if plan.cpu_limit
             else f"no CPU limit ({plan.limit_note})")
    lines = [
        f"bench-local {run_id}: profile {plan.profile}, {plan.rounds} round(s), servers on CPU "
        f"{plan.server_cpus} {limit}, k6 on CPU {plan.k6_cpus}; results in {plan.run_dir}",
    ]
    for name in plan.servers:
        server = registry.get(name)
        what = f"stands in for {server.stands_for}" if server.stands_for else "a reference server"
        lines.append(f"  {name}: {server.design} ({what}), under `make serve` in servers/{name}/")
    return "\n".join(lines)


def run(plan: Plan, summary: Summary) -> Summary:
    plan.logs.mkdir(parents=True, exist_ok=True)
    servers = verify_all(plan, summary)
    save(summary, plan.run_dir)
    if servers:
        if plan.profile == "open":
            openmodel.run(plan, summary, servers)
        else:
            closed_rounds(plan, summary, servers)
        save(summary, plan.run_dir)
    write_report(plan.run_dir)
    return summary


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.local", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="stand-ins", help="server names, stand-ins (the Python servers) or all")
    parser.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--rounds", default="", help="rounds per server (empty: the profile's default)")
    parser.add_argument("--workers", default="", help="worker processes per server (empty: its CPUs)")
    parser.add_argument("--server-cpus", default="", help="CPU list for the servers, e.g. 0")
    parser.add_argument("--k6-cpus", default="", help="CPU list for k6, e.g. 1")
    parser.add_argument("--server-cpu-limit", default="",
                        help=f"cores each server may use, e.g. 0.3 or 300m, or none (empty: {CPU_LIMIT_PER_K6_CPU:g} per k6 CPU)")
    parser.add_argument("--run-id", default="", help="name of the results folder (empty: a UTC timestamp)")
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder holding the run folders")
    parser.add_argument("--plan", action="store_true", help="print what the run would do and exit")
    parser.add_argument("--open-step-seconds", type=int, default=openmodel.STEP_S, help="PROFILE=open: seconds per search probe")
    parser.add_argument("--open-measure-seconds", type=int, default=openmodel.MEASURE_S, help="PROFILE=open: seconds per latency level")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> tuple[Plan, str, str]:
    try:
        servers = registry.select(args.servers)
    except registry.RegistryError as error:
        raise machine.SetupError(str(error)) from None
    if args.profile not in PROFILES:
        raise machine.SetupError(f"PROFILE must be one of {', '.join(PROFILES)}, got '{args.profile}': e.g. PROFILE=quick.")
    if args.rounds and (not args.rounds.isdigit() or int(args.rounds) < 1):
        raise machine.SetupError(f"ROUNDS must be a whole number of at least 1, got '{args.rounds}': e.g. ROUNDS=2.")
    if args.workers and (not args.workers.isdigit() or int(args.workers) < 1):
        raise machine.SetupError(f"WORKERS must be a whole number of at least 1 or empty, got '{args.workers}': e.g. WORKERS=1.")
    run_id = args.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.results) / run_id
    if (run_dir / "summary.json").exists() and not args.plan:
        raise machine.SetupError(f"{run_dir} already holds a run: pick another RUN_ID or delete that folder.")
    machine.require_taskset()
    server_cpus, k6_cpus = machine.cpu_sets(args.server_cpus, args.k6_cpus)
    k6, k6_version = machine.k6_binary()
    try:
        cpu_limit = cpulimit.parse_limit(args.server_cpu_limit, min(len(server_cpus), CPU_LIMIT_PER_K6_CPU * len(k6_cpus)))
    except ValueError as error:
        raise machine.SetupError(str(error)) from None
    limits, limit_note = None, "SERVER_CPU_LIMIT=none"
    if cpu_limit is not None:
        try:
            limits = cpulimit.controller()
            limit_note = limits.describe()
        except cpulimit.LimitError as error:
            say(f"bench-local: {error}")
            cpu_limit, limit_note = None, str(error).split(", so ")[0]
    plan = Plan(
        servers=servers,
        profile=args.profile,
        rounds=int(args.rounds or DEFAULT_ROUNDS[args.profile]),
        workers=args.workers,
        server_cpus=server_cpus,
        k6_cpus=k6_cpus,
        k6=k6,
        run_dir=run_dir,
        cpu_limit=cpu_limit,
        limits=limits,
        limit_note=limit_note,
        open_step_s=args.open_step_seconds,
        open_measure_s=args.open_measure_seconds,
    )
    return plan, run_id, k6_version


def command_line(plan: Plan, run_id: str) -> str:
    parts = ["make bench-local", f"SERVERS={shlex.quote(' '.join(plan.servers))}", f"PROFILE={plan.profile}", f"ROUNDS={plan.rounds}"]
    if plan.workers:
        parts.append(f"WORKERS={plan.workers}")
    parts += [f"SERVER_CPUS={','.join(map(str, plan.server_cpus))}", f"K6_CPUS={','.join(map(str, plan.k6_cpus))}",
              f"SERVER_CPU_LIMIT={plan.cpu_limit:g}" if plan.cpu_limit else "SERVER_CPU_LIMIT=none", f"RUN_ID={run_id}"]
    return " ".join(parts)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    try:
        plan, run_id, k6_version = make_plan(args)
    except machine.SetupError as error:
        say(str(error))
        return 2
    say(describe(plan, run_id))
    if args.plan:
        return 0
    # The driver samples and talks to k6's API from k6's CPUs, never from the servers'.
    os.sched_setaffinity(0, plan.k6_cpus)
    summary = new_summary(plan, run_id, command_line(plan, run_id), k6_version)
    try:
        with interruptible():
            run(plan, summary)
    except (K6Error, K6SummaryError) as error:
        say(str(error))
        return 1
    except KeyboardInterrupt as stopped:
        # Whatever it started was stopped on the way out (servers.process.running, bench.k6run).
        how = getattr(stopped, "signum", signal.SIGINT)
        summary["incomplete"] = f"stopped by {signal.Signals(how).name} at {now()}, before every round had run"
        save(summary, plan.run_dir)
        write_report(plan.run_dir)
        say(f"\nStopped ({signal.Signals(how).name}): the rounds measured so far are in {plan.run_dir / 'summary.json'} "
            f"(marked incomplete) and {plan.run_dir / 'report.md'}.")
        return 128 + how
    print()
    print(terminal_text(summary))
    print(f"\nReport: {plan.run_dir / 'report.md'}")
    refused = [s for s, r in summary["servers"].items() if not r["verification"]["ok"]]
    if refused:
        say(f"Refused (not measured): {', '.join(refused)}; see the Verification section of the report.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
