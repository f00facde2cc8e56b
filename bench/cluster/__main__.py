"""Benchmark runs on a cluster (`make bench`, `make results`, `make deploy`) and their results.

    python -m bench.cluster run --run-id ID --servers "stdlib-style async-style" --profile seed \\
        --parallelism 2 --timeout 45m
    python -m bench.cluster collect --run-id ID [--prometheus-url http://127.0.0.1:9090]
    python -m bench.cluster kustomization k8s/overlays/hetzner .build/deploy stdlib-style=REG/stdlib-style:TAG ...

`run` applies the TestRuns (k6/render.py), waits for them, checks the runner pods, keeps their
logs and the run's time window in results/<run-id>/cluster-run.json, then collects. `collect`
asks Prometheus (through `kubectl port-forward` unless given a URL) for whole-run numbers and
writes the same summary.json + report as `make bench-local`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bench.cluster.deploy import kustomization
from bench.cluster.kube import ClusterError, say
from bench.cluster.results import RESULTS, collect
from bench.cluster.testruns import run
from servers import registry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command_name", required=True)
    run_parser = commands.add_parser("run", help="apply the TestRuns, wait, collect")
    run_parser.add_argument("--run-id", default="")
    run_parser.add_argument("--servers", default="stand-ins", help="SERVERS: names, stand-ins or all")
    run_parser.add_argument("--profile", default="seed")
    run_parser.add_argument("--parallelism", type=int, default=1)
    run_parser.add_argument("--timeout", default="45m")
    run_parser.add_argument("--rate", type=int)
    run_parser.add_argument("--duration")
    collect_parser = commands.add_parser("collect", help="(re)collect a finished run from Prometheus")
    collect_parser.add_argument("--run-id", required=True)
    for sub in (run_parser, collect_parser):
        sub.add_argument("--results", default=str(RESULTS))
        sub.add_argument("--prometheus-url", default=None, help="skip the port-forward (default: $PROMETHEUS_URL)")
    deploy_parser = commands.add_parser("kustomization", help="write OUT/kustomization.yaml: OVERLAY with these images")
    deploy_parser.add_argument("overlay", type=Path)
    deploy_parser.add_argument("out_dir", type=Path)
    deploy_parser.add_argument("--servers", default="", help="the servers to give a replica (SERVERS; default: stand-ins)")
    deploy_parser.add_argument("images", nargs="+", help="server=registry/name:tag")
    args = parser.parse_args(argv)
    try:
        if args.command_name == "run":
            args.servers = registry.select(args.servers)
            return run(args)
        if args.command_name == "collect":
            collect(Path(args.results) / args.run_id, args.prometheus_url)
            return 0
        images = dict(item.split("=", 1) for item in args.images)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        wrapper = kustomization(args.overlay, args.out_dir, images, registry.select(args.servers))
        (args.out_dir / "kustomization.yaml").write_text(yaml.safe_dump(wrapper, sort_keys=False))
        return 0
    except (ClusterError, registry.RegistryError) as error:
        say(f"make: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
