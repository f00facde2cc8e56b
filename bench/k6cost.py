"""What a k6 script costs its load generator: k6's req/s on one core against a server that is never
the limit, scripts alternating over rounds.

    python -m bench.k6cost k6/bench.js old-bench.js [--rounds 3] [--server go-net-http] [--seconds 15]

k6 on the second usable CPU with 64 VUs for `--seconds`, the server (`make serve`, one worker) on
the first; the scripts alternate A B A B so a noisy neighbour hits each. Each script runs with
PROFILE=smoke overridden by `--vus 64 --duration`, so only its default function differs. An older
version of the script: `git show <commit>:k6/bench.js > old-bench.js`. docs/bench-local.md keeps the
numbers of k6/bench.js against the version before its body checks were sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.machine import k6_binary
from servers.process import dies_with_parent, free_port, interruptible, running, serve_command


def k6_rps(k6: str, cpu: int, script: Path, port: int, server: str, seconds: int, summary: Path) -> float:
    command = ["taskset", "-c", str(cpu), k6, "run", "--quiet", "--no-usage-report", "--vus", "64",
               "--duration", f"{seconds}s", "-e", f"TARGET=http://127.0.0.1:{port}", "-e", f"SERVER={server}",
               "-e", "PROFILE=smoke", "-e", f"SUMMARY={summary}", str(script)]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=dies_with_parent())
    if done.returncode not in (0, 99) or not summary.is_file():
        raise RuntimeError(f"k6 failed on {script} ({done.returncode}): {done.stderr.strip()[-300:]}")
    return json.loads(summary.read_text())["http_reqs"]["rate"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.k6cost", description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--server", default="go-net-http")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("k6cost: this needs two CPUs, one for the server and one for k6.", file=sys.stderr)
        return 2
    k6, _ = k6_binary()
    found: dict[str, list[float]] = {str(s): [] for s in args.scripts}
    with tempfile.TemporaryDirectory() as tmp, interruptible():
        port = free_port()
        with running(["taskset", "-c", str(cpus[0]), *serve_command(args.server, port, 1)], port, Path(tmp) / "server.log"):
            for number in range(1, args.rounds + 1):
                for script in args.scripts:
                    rps = k6_rps(k6, cpus[1], script, port, args.server, args.seconds, Path(tmp) / f"{number}.json")
                    found[str(script)].append(rps)
                    print(f"round {number}/{args.rounds} {script}: {rps:,.0f} req/s", file=sys.stderr, flush=True)
    print("| script | req/s on one k6 core, each round | median |\n|---|---|---:|")
    for script, rates in found.items():
        print(f"| {script} | {', '.join(f'{r:,.0f}' for r in rates)} | {statistics.median(rates):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
