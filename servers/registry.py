"""The servers this repository measures, discovered from their folders: `servers/<name>/server.yaml`.

A server is a folder, as a framework is in TechEmpower's FrameworkBenchmarks or the-benchmarker's
web-frameworks: its code, its Dockerfile, its tests, and `server.yaml`, the one small file that
tells the harness what it cannot read off the code. Make, Tilt, bench/ and the tests all take the
list from here (Tilt from the manifests, which name the same servers), so a new server is its
folder, its manifests (`k8s/base/<name>.yaml`, `k6/servers/<name>/`) and one line in each
kustomization.

`server.yaml` (every key is required unless it says optional):

    role: stand-in               # stand-in: a Python server the benchmark is about;
                                 # reference: a server in the seed's own design, to measure against
    stands_for: go-net-http      # stand-in only: the reference server it stands in for
    design: Falcon (WSGI) on gunicorn   # one line for the README's and the reports' tables
    serve: [gunicorn, --config, gunicorn.conf.py]
                                 # run in this folder by `make serve`, in the foreground, with PORT,
                                 # HOST, WORKERS, HASH_ITERATIONS in its environment; the image's
                                 # ENTRYPOINT is the same argv (a test holds them equal)
    build: [go, build, -o, bin/x, .]   # optional: run in this folder before `serve` (it must be
                                 # quick when nothing changed); build_env: optional extra variables
    known_answers: [...]         # run in this folder: exits 0 when this server's own hash code gives
                                 # the answers in servers/vectors.json (bench/verify.py runs it)
    image: {base: python}        # the base servers/base/base-image.sh gives the Dockerfile's BASE
                                 # build argument: python (Python 3.11 on bookworm) or debian
    head_timeout_s: 10           # how long the server waits for a request head before it hangs up
    drain_timeout_s: 20          # how long SIGTERM lets in-flight requests finish
    baseline: true               # optional, one reference only: `make perf` divides every server's
                                 # req/s by this one's (go-net-http)
    features: [sched_policy]     # optional, what the Python runners have and the tests check:
                                 # sched_policy (SCHED_POLICY), live_reload (`--reload`, Tilt syncs
                                 # src/), worker_processes (WORKERS are processes under the runner)
    runners:                     # optional: other ways to run it, measured and tested beside it
      <server>-<variant>: {env: {NAME: value}, note: one line}

A bad file stops whoever reads it with one line naming the file, the key and what it accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Mapping

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVERS_DIR = ROOT / "servers"
DECLARATION = "server.yaml"
ROLES = ("stand-in", "reference")
BASES = ("python", "debian")
FEATURES = ("sched_policy", "live_reload", "worker_processes")
REQUIRED = ("role", "design", "serve", "known_answers", "image", "head_timeout_s", "drain_timeout_s")
OPTIONAL = ("stands_for", "build", "build_env", "features", "runners", "baseline")


class RegistryError(ValueError):
    """A server folder or its server.yaml is wrong; the message names the file and the fix."""


@dataclass(frozen=True)
class Server:
    name: str
    folder: Path
    role: str
    design: str
    serve: tuple[str, ...]
    known_answers: tuple[str, ...]
    image_base: str
    head_timeout_s: float
    drain_timeout_s: float
    stands_for: str | None = None
    build: tuple[str, ...] = ()
    build_env: Mapping[str, str] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    baseline: bool = False
    # runner name -> extra environment; the server itself is the runner named after it, with none
    runners: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> bool:
        return self.role == "reference"

    def has(self, feature: str) -> bool:
        return feature in self.features


def _argv(path: Path, key: str, value: object, optional: bool = False) -> tuple[str, ...]:
    if optional and value in (None, []):
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int)) for v in value):
        raise RegistryError(f"{path}: {key} must be a non-empty list of words (an argv), got {value!r}.")
    return tuple(str(v) for v in value)


def _environment(path: Path, key: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RegistryError(f"{path}: {key} must map variable names to values, got {value!r}.")
    return {k: str(v) for k, v in value.items()}


def _seconds(path: Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise RegistryError(f"{path}: {key} must be a number of seconds above 0, got {value!r}.")
    return float(value)


def parse(name: str, folder: Path) -> Server:
    """One server from its folder's server.yaml."""
    path = folder / DECLARATION
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RegistryError(f"{path} cannot be read ({error}): fix the file or remove the folder.") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} must be a mapping of keys (see servers/registry.py), got {type(data).__name__}.")
    missing = [key for key in REQUIRED if key not in data]
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        what = "; ".join(filter(None, [f"lacks {', '.join(missing)}" if missing else "",
                                       f"has unknown {', '.join(unknown)}" if unknown else ""]))
        raise RegistryError(f"{path} {what}: the keys are listed in servers/registry.py.")
    if data["role"] not in ROLES:
        raise RegistryError(f"{path}: role must be one of {', '.join(ROLES)}, got {data['role']!r}.")
    stands_for = data.get("stands_for")
    if (data["role"] == "stand-in") != (stands_for is not None):
        raise RegistryError(f"{path}: stands_for names the reference server of a stand-in, and only of a stand-in.")
    image = data["image"]
    if not isinstance(image, dict) or image.get("base") not in BASES or set(image) != {"base"}:
        raise RegistryError(f"{path}: image must be {{base: <one of {', '.join(BASES)}>}}, got {image!r}.")
    if data.get("baseline", False) not in (True, False) or (data.get("baseline") and data["role"] != "reference"):
        raise RegistryError(f"{path}: baseline is true or false, and true only on a reference server.")
    features = data.get("features") or []
    if not isinstance(features, list) or not set(features) <= set(FEATURES):
        raise RegistryError(f"{path}: features may list {', '.join(FEATURES)}, got {features!r}.")
    runners: dict[str, dict[str, str]] = {name: {}}
    notes: dict[str, str] = {}
    for runner, spec in (data.get("runners") or {}).items():
        if not str(runner).startswith(f"{name}-") or not isinstance(spec, dict) or set(spec) - {"env", "note"}:
            raise RegistryError(f"{path}: each of runners is `{name}-<variant>: {{env: {{...}}, note: ...}}`, got {runner!r}.")
        runners[runner] = _environment(path, f"runners.{runner}.env", spec.get("env"))
        notes[runner] = str(spec.get("note", ""))
    return Server(
        name=name,
        folder=folder,
        role=data["role"],
        design=str(data["design"]),
        serve=_argv(path, "serve", data["serve"]),
        known_answers=_argv(path, "known_answers", data["known_answers"]),
        image_base=image["base"],
        head_timeout_s=_seconds(path, "head_timeout_s", data["head_timeout_s"]),
        drain_timeout_s=_seconds(path, "drain_timeout_s", data["drain_timeout_s"]),
        stands_for=stands_for,
        build=_argv(path, "build", data.get("build"), optional=True),
        build_env=_environment(path, "build_env", data.get("build_env")),
        features=frozenset(features),
        baseline=bool(data.get("baseline", False)),
        runners=runners,
        notes=notes,
    )


@cache
def discover(servers_dir: Path = SERVERS_DIR) -> dict[str, Server]:
    """Every server folder under `servers_dir`, by name, stand-ins first, then references, each sorted."""
    found = {folder.name: parse(folder.name, folder)
             for folder in sorted(servers_dir.iterdir()) if (folder / DECLARATION).is_file()}
    for server in found.values():
        if server.stands_for is not None and (server.stands_for not in found or not found[server.stands_for].reference):
            raise RegistryError(
                f"{server.folder / DECLARATION}: stands_for names {server.stands_for!r}, which is no reference server here."
            )
    if len([s for s in found.values() if s.baseline]) > 1:
        raise RegistryError(f"more than one server.yaml under {servers_dir} says baseline: true: keep one.")
    return dict(sorted(found.items(), key=lambda item: (item[1].reference, item[0])))


def names(role: str | None = None) -> list[str]:
    """The servers' names (of one role, if given), in discovery order."""
    return [name for name, server in discover().items() if role is None or server.role == role]


def get(name: str, variable: str = "SERVER") -> Server:
    """The server called `name`, or a RegistryError, for the setting `variable`, listing the servers found."""
    servers = discover()
    if name not in servers:
        raise RegistryError(
            f"{variable} must be one of {', '.join(servers)} (the folders under servers/), got '{name}': "
            f"e.g. {variable}={names('stand-in')[0]}."
        )
    return servers[name]


def baseline() -> str | None:
    """The reference `make perf` divides by, if a server.yaml names one."""
    return next((name for name, server in discover().items() if server.baseline), None)


def runners() -> dict[str, tuple[str, dict[str, str]]]:
    """Every way a server runs that the tests and `make perf` measure: runner -> (server, extra env)."""
    return {runner: (server.name, dict(env)) for server in discover().values() for runner, env in server.runners.items()}


def tool_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with this Python's bin folder first on PATH, as `make serve`
    puts the virtual environment's: a server.yaml's `python` is the one running the harness."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return env


def build(server: Server, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess | None:
    """Run the server's build step, if it has one, in its folder; None when there is nothing to build."""
    if not server.build:
        return None
    return subprocess.run(list(server.build), cwd=server.folder, env={**tool_env(env), **server.build_env},
                          capture_output=True, text=True, check=False)


def known_answers(server: Server, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the server's known-answer command in its folder (after its build, if any failed: that)."""
    built = build(server)
    if built is not None and built.returncode != 0:
        return built
    return subprocess.run(list(server.known_answers), cwd=server.folder, env=tool_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


# Words SERVERS may hold beside server names: the default, the Python servers the benchmark is
# about, and every server found.
GROUPS = {"stand-ins": "stand-in", "all": None}


def select(text: str, variable: str = "SERVERS") -> list[str]:
    """Server names from a SERVERS value: names, `stand-ins` or `all`, in the order given, each once."""
    chosen: list[str] = []
    for word in text.split() or ["stand-ins"]:
        found = names(GROUPS[word]) if word in GROUPS else [word] if word in discover() else None
        if found is None:
            raise RegistryError(
                f"{variable} may name {', '.join(discover())}, or stand-ins or all, got '{word}': "
                f"e.g. {variable}={names('stand-in')[0]}."
            )
        chosen += [name for name in found if name not in chosen]
    return chosen


def main(argv: list[str]) -> int:
    """`python -m servers.registry select "<SERVERS>"` or `field <server> <key>`: for the Makefile."""
    try:
        if argv[:1] == ["select"] and len(argv) <= 3:
            print(" ".join(select(argv[1] if len(argv) > 1 else "", *argv[2:])))
        elif argv[:1] == ["field"] and len(argv) == 3:
            value = {"image.base": lambda s: s.image_base, "role": lambda s: s.role}[argv[2]](get(argv[1]))
            print(value)
        else:
            print('usage: python -m servers.registry select "<SERVERS>" [VARIABLE] | field <server> image.base|role',
                  file=sys.stderr)
            return 2
    except RegistryError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
