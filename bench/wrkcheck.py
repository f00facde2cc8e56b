"""Was k6 the limit of a bench-local run? wrk against the same servers, under the same CPU limit.

    make wrkcheck [RUN_ID=<run-id>]          # the newest run without RUN_ID
    python -m bench.wrkcheck [<run-id> | results/<run-id>] [--rounds 3] [--seconds 15]

For each server the run measured, this starts it again as the run did (`make serve`, the run's
WORKERS, pinned to its server CPUs, in a cgroup of its own under the run's SERVER_CPU_LIMIT) and
loads it with wrk (`-t1`, as many connections as k6 had VUs, pinned to the run's k6 CPUs), the
servers alternating over rounds. wrk, written in C, costs far less CPU per request than k6: when
k6's req/s at full load is within 20 % of wrk's median, the server limited the run, not k6. The
table prints and goes to results/<run-id>/wrkcheck.md, with every round in wrkcheck.json; the
run's summary.json is left as it was. Run it in the same hour as the run: a shared machine drifts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench import cpulimit
from servers import registry
from servers.process import dies_with_parent, free_port, interruptible, kill_tree, running, serve_command
from servers.wrk import parse_wrk

# How far k6's req/s may fall below wrk's for the run to count as server-bound (issue 18).
WITHIN = 0.20
RESULTS = Path(__file__).resolve().parent.parent / "results"
# k6's VUs at full load in the closed profiles (k6/bench.js): wrk keeps as many connections open.
CONNECTIONS = 64


class CheckError(RuntimeError):
    """A run that cannot be checked: one line, with the fix."""


def cpu_list(cpus: list[int] | None) -> str:
    if not cpus:
        raise CheckError("the run's summary.json names no pinned CPUs (a cluster run?): wrkcheck repeats local runs only.")
    return ",".join(map(str, cpus))


def run_folder(given: str, results: Path) -> Path:
    """The run folder `given` names (a run id or a path), or the newest run in `results`."""
    if not given:
        runs = sorted(results.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise CheckError(f"there is no run in {results} yet: run make bench-local first, or give RUN_ID=<run-id>.")
        return runs[-1].parent
    path = Path(given)
    return path if path.is_dir() or "/" in given else results / given


def load(summary_path: Path) -> dict:
    if not summary_path.is_file():
        raise CheckError(f"{summary_path} does not exist: give a run folder from make bench-local, e.g. results/<run-id>.")
    summary = json.loads(summary_path.read_text())
    if summary["settings"]["where"] != "local":
        raise CheckError(f"{summary_path} is from a cluster run: wrkcheck repeats make bench-local runs only.")
    if summary["settings"]["profile"] == "open":
        raise CheckError("an open-profile run has no full-load req/s to compare: check a quick or standard run.")
    return summary


def wrk_rps(server: str, settings: dict, limits: cpulimit.Controller | None, seconds: int, connections: int,
            log: Path) -> float:
    """One wrk run against `server`, started as the run started it; its req/s."""
    port = free_port()
    limit = settings.get("server_cpu_limit")
    quota = limits.quota(f"wrkcheck-{server}", limit) if limits and limit else None
    pin = ["taskset", "-c", cpu_list(settings["server_cpus"])]
    try:
        with running([*pin, *serve_command(server, port, settings["workers"])], port, log,
                     stop_timeout=registry.get(server).drain_timeout_s + 10, setup=quota.join() if quota else None):
            command = ["taskset", "-c", cpu_list(settings["k6_cpus"]), "wrk", "-t1", f"-c{connections}",
                       f"-d{seconds}s", f"http://127.0.0.1:{port}/hash"]
            wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=dies_with_parent())
            try:
                output = wrk.communicate()[0]
            finally:
                if wrk.poll() is None:
                    kill_tree(wrk.pid)
                    wrk.wait()
            if wrk.returncode != 0:
                raise CheckError(f"wrk failed against {server} ({wrk.returncode}): {output.strip()[-200:]}")
            result = parse_wrk(output)
            if not result.clean:
                raise CheckError(f"wrk saw failures against {server} ({result.non_2xx} non-2xx, {result.socket_errors} socket "
                                 f"errors, {result.timeouts} timeouts): its log is {log}.")
            return result.rps
    finally:
        if quota:
            quota.remove()


def verdict(k6: float, wrk: float) -> str:
    if k6 >= (1 - WITHIN) * wrk:
        return "the server (k6 within 20 % of wrk)"
    return "k6 (more than 20 % below wrk)"


def render(summary: dict, found: dict[str, list[float]], seconds: int, connections: int) -> str:
    settings = summary["settings"]
    limit = settings.get("server_cpu_limit")
    lines = [
        f"wrk against the servers of run `{summary['run_id']}`, under its CPU limit "
        f"({f'{limit:g} cores' if limit else 'none'}), `wrk -t1 -c{connections} -d{seconds}s` on CPUs "
        f"{cpu_list(settings['k6_cpus'])}, servers on {cpu_list(settings['server_cpus'])}, {len(next(iter(found.values())))} "
        "alternating rounds:",
        "",
        "| server | k6 req/s (at full load) | wrk req/s, each round | wrk median | k6 ÷ wrk | limited by |",
        "|---|---:|---|---:|---:|---|",
    ]
    for server, rates in found.items():
        k6 = summary["servers"][server]["aggregate"]["rps_steady"]
        median = statistics.median(rates)
        lines.append(f"| {server} | {k6:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} | {median:,.0f} | "
                     f"{k6 / median:.2f} | {verdict(k6, median)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wrkcheck", description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="", help="a make bench-local run: its id or folder (default: the newest)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        args.run = run_folder(args.run, args.results)
        summary = load(args.run / "summary.json")
        settings = summary["settings"]
        servers = [n for n, s in summary["servers"].items() if s["aggregate"] and s["aggregate"].get("rps_steady")]
        if not servers:
            raise CheckError(f"run {summary['run_id']} measured no server at full load: nothing to check.")
        limits = cpulimit.controller() if settings.get("server_cpu_limit") else None
        found: dict[str, list[float]] = {s: [] for s in servers}
        logs = args.run / "logs"
        logs.mkdir(exist_ok=True)
        with interruptible():
            for number in range(1, args.rounds + 1):
                for server in servers:
                    rps = wrk_rps(server, settings, limits, args.seconds, args.connections,
                                  logs / f"wrkcheck-{server}-{number}.server.log")
                    found[server].append(rps)
                    print(f"wrkcheck: round {number}/{args.rounds} {server}: {rps:,.0f} req/s", file=sys.stderr, flush=True)
    except (CheckError, cpulimit.LimitError) as error:
        print(f"wrkcheck: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP as Interrupted
        print("wrkcheck: stopped; nothing written.", file=sys.stderr)
        return 130
    table = render(summary, found, args.seconds, args.connections)
    (args.run / "wrkcheck.md").write_text(table)
    (args.run / "wrkcheck.json").write_text(json.dumps({"seconds": args.seconds, "connections": args.connections,
                                                        "wrk_rps": found}, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
