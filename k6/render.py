"""Render the k6 TestRuns for one benchmark run: `kubectl kustomize k6`, then set the run's fields.

Make supplies the run id, so nothing in the repository is edited per run (the seed rewrote its
TestRuns with `sed`). Usage, as the Makefile calls it:

    .venv/bin/python k6/render.py --run 20261127-1130 --profile seed --parallelism 2 \\
        --servers "stdlib-style async-style" | kubectl apply -f -

Arguments:
    --run ID            required; tags every metric `run=ID` and `testid=ID-<server>`. Letters,
                        digits, `.`, `_`, `-` only: the operator splits `arguments` on whitespace.
    --profile NAME      smoke (default) | quick | standard | open | seed, as in k6/bench.js.
    --parallelism N     runner Jobs per server (default 1); k6 splits the VUs/rate between them.
    --servers "A B"     the servers whose TestRun to emit (default: every server in k6/servers/);
                        the ConfigMap with the script is always emitted.
    --rate R            requests per second, required for the open profile (env RATE).
    --duration D        how long the open profile runs, a k6 duration (env DURATION).
    --runner-cpu C      CPU request = limit per runner, e.g. 1 (default: the seed's 6 req / 7 lim);
    --runner-memory M   memory request = limit per runner, e.g. 1Gi; for small clusters like kind.
    --input FILE        read an already rendered `kubectl kustomize k6` from FILE (`-` = stdin)
                        instead of running kubectl.

Output: the ConfigMap and the chosen TestRuns as YAML on stdout. The TestRuns keep fixed names
(`k6-<server>`): the operator never re-runs a finished TestRun, so delete the old ones first,
e.g. `kubectl -n py-bench delete testrun -l app.kubernetes.io/component=load --ignore-not-found`.
Wait with `kubectl -n py-bench wait testrun/k6-<server> --for=jsonpath='{.status.stage}'=finished`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import yaml

K6_DIR = Path(__file__).resolve().parent
PROFILES = ("smoke", "quick", "standard", "open", "seed")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DURATION = re.compile(r"^(?=.)(\d+h)?(\d+m)?(\d+s)?$")
RUN_TAGS = ("testid", "server", "run")


class RenderError(Exception):
    """A bad argument or manifest, said in one sentence that names the fix."""


def kustomize(directory: Path = K6_DIR) -> str:
    """`kubectl kustomize` of the k6 folder."""
    try:
        result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    except FileNotFoundError:
        raise RenderError("kubectl is not installed: install it (it bundles kustomize) and run again.") from None
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return result.stdout


def _env(testrun: dict) -> list[dict]:
    return testrun["spec"]["runner"].setdefault("env", [])


def env_value(testrun: dict, name: str) -> str | None:
    """The value of runner env `name` in a TestRun, or None."""
    for item in _env(testrun):
        if item.get("name") == name:
            return item.get("value")
    return None


def set_env(testrun: dict, name: str, value: str) -> None:
    for item in _env(testrun):
        if item.get("name") == name:
            item["value"] = value
            return
    _env(testrun).append({"name": name, "value": value})


def with_tags(arguments: str, tags: dict[str, str]) -> str:
    """`arguments` with each `--tag key=…` for a key in `tags` replaced by the given value."""
    words, kept = arguments.split(), []
    i = 0
    while i < len(words):
        if words[i] == "--tag" and i + 1 < len(words) and words[i + 1].split("=", 1)[0] in tags:
            i += 2
            continue
        kept.append(words[i])
        i += 1
    for key, value in tags.items():
        kept += ["--tag", f"{key}={value}"]
    return " ".join(kept)


def check_args(run: str, profile: str, parallelism: int, rate: int | None, duration: str | None) -> None:
    if not RUN_ID.match(run):
        raise RenderError(f"run id '{run}' must be 1-63 letters, digits, '.', '_' or '-': try RUN_ID=$(date +%Y%m%d-%H%M).")
    if profile not in PROFILES:
        raise RenderError(f"profile '{profile}' is unknown: use one of {', '.join(PROFILES)}, e.g. PROFILE=quick.")
    if parallelism < 1:
        raise RenderError(f"parallelism must be 1 or more, got {parallelism}: try PARALLELISM=1.")
    if profile == "open" and (rate is None or rate < 1):
        raise RenderError("the open profile needs a rate in requests per second: pass --rate, e.g. RATE=2000.")
    if duration is not None and not DURATION.match(duration):
        raise RenderError(f"duration '{duration}' is not a k6 duration: try DURATION=60s or 2m30s.")


def render(
    manifests: str,
    run: str,
    profile: str = "smoke",
    parallelism: int = 1,
    servers: Sequence[str] | None = None,
    rate: int | None = None,
    duration: str | None = None,
    runner_cpu: str | None = None,
    runner_memory: str | None = None,
) -> list[dict]:
    """The documents of `manifests` with the run's fields set on each TestRun of `servers`."""
    check_args(run, profile, parallelism, rate, duration)
    documents = [doc for doc in yaml.safe_load_all(manifests) if doc]
    testruns = {env_value(doc, "SERVER"): doc for doc in documents if doc.get("kind") == "TestRun"}
    wanted = list(servers) if servers else list(testruns)
    unknown = [name for name in wanted if name not in testruns]
    if unknown:
        raise RenderError(f"no TestRun for server {', '.join(unknown)}: use one of {', '.join(testruns)}.")
    out = []
    for doc in documents:
        if doc.get("kind") == "TestRun":
            server = env_value(doc, "SERVER")
            if server not in wanted:
                continue
            spec = doc["spec"]
            spec["parallelism"] = parallelism
            spec["arguments"] = with_tags(spec.get("arguments", ""), {"testid": f"{run}-{server}", "server": server, "run": run})
            set_env(doc, "PROFILE", profile)
            if rate is not None:
                set_env(doc, "RATE", str(rate))
            if duration is not None:
                set_env(doc, "DURATION", duration)
            resources = spec["runner"].setdefault("resources", {})
            for key, value in (("cpu", runner_cpu), ("memory", runner_memory)):
                if value:
                    resources.setdefault("requests", {})[key] = value
                    resources.setdefault("limits", {})[key] = value
        out.append(doc)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--servers", default="", help="space-separated server names (default: all)")
    parser.add_argument("--rate", type=int)
    parser.add_argument("--duration")
    parser.add_argument("--runner-cpu")
    parser.add_argument("--runner-memory")
    parser.add_argument("--input", help="rendered manifests to read instead of running kubectl kustomize ('-' = stdin)")
    args = parser.parse_args(argv)
    try:
        if args.input == "-":
            manifests = sys.stdin.read()
        elif args.input:
            manifests = Path(args.input).read_text()
        else:
            manifests = kustomize()
        documents = render(
            manifests,
            run=args.run,
            profile=args.profile,
            parallelism=args.parallelism,
            servers=args.servers.split(),
            rate=args.rate,
            duration=args.duration or None,
            runner_cpu=args.runner_cpu,
            runner_memory=args.runner_memory,
        )
    except RenderError as error:
        print(f"k6/render.py: {error}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(documents, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
