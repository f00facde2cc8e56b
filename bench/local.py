"""`make bench-local`: both servers on this machine, pinned apart from k6, in alternating rounds.

    python -m bench.local --servers "stdlib-style async-style" --profile quick --run-id my-run

Writes results/<run-id>/summary.json (bench/model.py), report.md and the PNG plots, and prints
the tables. Every server is verified before it is measured; one that fails is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from bench import machine
from bench.k6run import K6Error, free_port, planned_seconds, run_k6
from bench.metrics import K6SummaryError, aggregate, metrics_from_run
from bench.model import SCHEMA_VERSION, Metrics, Round, Series, Summary, save
from bench.report import terminal_text, write_report
from bench.verify import verify
from servers.contract import SERVERS
from servers.process import Running, running, serve_command

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("quick", "standard", "open")
# Two rounds let the A B A B order spread a shared machine's drift over both servers while
# quick stays under 3 minutes for both (README); standard has time for three.
DEFAULT_ROUNDS = {"quick": 2, "standard": 3, "open": 2}


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

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def server_running(plan: Plan, server: str, name: str) -> Iterator[Running]:
    """The server under `make serve`, pinned to the servers' CPUs."""
    port = free_port()
    pin = ["taskset", "-c", ",".join(map(str, plan.server_cpus))]
    with running([*pin, *serve_command(server, port, plan.workers)], port, plan.logs / f"{name}.server.log") as server_:
        yield server_


def measure(
    plan: Plan, server: str, live: Running, name: str, label: str, extra: dict[str, str], planned: float | None
) -> tuple[Metrics, Series]:
    """One k6 run against `live`; its files are logs/<name>.*, its progress line says `label`."""
    env = {"TARGET": live.base_url, "SERVER": server, "PROFILE": plan.profile, **extra}
    result = run_k6(
        plan.k6, plan.k6_cpus, plan.server_cpus, env, live.process.pid,
        plan.logs / f"{name}.k6-summary.json", plan.logs / f"{name}.k6.log", label, planned,
    )  # fmt: skip
    return metrics_from_run(result.summary, result.series, len(plan.k6_cpus)), result.series


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
            "servers": plan.servers,
            "command": command,
        },
        "machine": machine.describe(),
        "versions": machine.tool_versions(k6_version),
        "servers": {},
    }


def verify_all(plan: Plan, summary: Summary) -> list[str]:
    """Verify every server; return those that may be measured."""
    for server in plan.servers:
        try:
            with server_running(plan, server, f"{server}-verify") as live:
                verdict = verify(server, int(live.base_url.rsplit(":", 1)[1]))
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


def run(plan: Plan, run_id: str, command: str, k6_version: str) -> Summary:
    from bench import openmodel  # the open model's search is only needed for PROFILE=open

    plan.logs.mkdir(parents=True, exist_ok=True)
    summary = new_summary(plan, run_id, command, k6_version)
    say(
        f"bench-local {run_id}: profile {plan.profile}, {plan.rounds} round(s), servers on CPU "
        f"{plan.server_cpus}, k6 on CPU {plan.k6_cpus}; results in {plan.run_dir}"
    )
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
    parser.add_argument("--servers", default=" ".join(SERVERS), help="space-separated server names")
    parser.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--rounds", default="", help="rounds per server (empty: the profile's default)")
    parser.add_argument("--workers", default="", help="worker processes per server (empty: its CPUs)")
    parser.add_argument("--server-cpus", default="", help="CPU list for the servers, e.g. 0")
    parser.add_argument("--k6-cpus", default="", help="CPU list for k6, e.g. 1")
    parser.add_argument("--run-id", default="", help="name of the results folder (empty: a UTC timestamp)")
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder holding the run folders")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> tuple[Plan, str, str]:
    servers = args.servers.split() or list(SERVERS)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown or not servers:
        raise machine.SetupError(f"SERVERS must name some of {', '.join(SERVERS)}, got '{args.servers}': e.g. SERVERS=async-style.")
    if args.profile not in PROFILES:
        raise machine.SetupError(f"PROFILE must be one of {', '.join(PROFILES)}, got '{args.profile}': e.g. PROFILE=quick.")
    if args.rounds and (not args.rounds.isdigit() or int(args.rounds) < 1):
        raise machine.SetupError(f"ROUNDS must be a whole number of at least 1, got '{args.rounds}': e.g. ROUNDS=2.")
    if args.workers and (not args.workers.isdigit() or int(args.workers) < 1):
        raise machine.SetupError(f"WORKERS must be a whole number of at least 1 or empty, got '{args.workers}': e.g. WORKERS=1.")
    run_id = args.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.results) / run_id
    if (run_dir / "summary.json").exists():
        raise machine.SetupError(f"{run_dir} already holds a run: pick another RUN_ID or delete that folder.")
    machine.require_taskset()
    server_cpus, k6_cpus = machine.cpu_sets(args.server_cpus, args.k6_cpus)
    k6, k6_version = machine.k6_binary()
    plan = Plan(
        servers=servers,
        profile=args.profile,
        rounds=int(args.rounds or DEFAULT_ROUNDS[args.profile]),
        workers=args.workers,
        server_cpus=server_cpus,
        k6_cpus=k6_cpus,
        k6=k6,
        run_dir=run_dir,
    )
    return plan, run_id, k6_version


def command_line(plan: Plan, run_id: str) -> str:
    parts = ["make bench-local", f"SERVERS={shlex.quote(' '.join(plan.servers))}", f"PROFILE={plan.profile}", f"ROUNDS={plan.rounds}"]
    if plan.workers:
        parts.append(f"WORKERS={plan.workers}")
    parts += [f"SERVER_CPUS={','.join(map(str, plan.server_cpus))}", f"K6_CPUS={','.join(map(str, plan.k6_cpus))}", f"RUN_ID={run_id}"]
    return " ".join(parts)


def main(argv: Sequence[str]) -> int:
    try:
        plan, run_id, k6_version = make_plan(parse(argv))
    except machine.SetupError as error:
        say(str(error))
        return 2
    # The driver samples and talks to k6's API from k6's CPUs, never from the servers'.
    os.sched_setaffinity(0, plan.k6_cpus)
    try:
        summary = run(plan, run_id, command_line(plan, run_id), k6_version)
    except (K6Error, K6SummaryError) as error:
        say(str(error))
        return 1
    except KeyboardInterrupt:
        say(f"\nInterrupted: the rounds finished so far are in {plan.run_dir / 'summary.json'}.")
        return 130
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
