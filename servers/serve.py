"""`make serve`: build a server if it has a build step, then become its runner, in its folder.

    python -m servers.serve SERVER --port 8080 [--workers 2]

The runner replaces this process (exec), so it is the one `make` waits for and the one that gets
SIGTERM, exactly as in the image, where the same argv (server.yaml `serve`) is the ENTRYPOINT.
It is also told to stop (SIGTERM) when its parent dies, so a `make serve` that is killed, or a
benchmark that started it and died without cleaning up, leaves no server serving.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

from servers import registry

PR_SET_PDEATHSIG = 1


def stop_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process (and what it execs) when its parent exits."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.serve", description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("--port", default="8080")
    parser.add_argument("--workers", default="")
    args = parser.parse_args(argv)
    try:
        server = registry.get(args.server)
    except registry.RegistryError as error:
        print(error, file=sys.stderr)
        return 2
    built = registry.build(server)
    if built is not None and built.returncode != 0:
        tail = "\n".join((built.stdout + built.stderr).strip().splitlines()[-20:])
        print(f"{server.name}: its build ({' '.join(server.build)}) failed in {server.folder}:\n{tail}", file=sys.stderr)
        return 1
    os.chdir(server.folder)
    env = {**os.environ, "PORT": args.port, "WORKERS": args.workers}
    stop_with_parent()
    try:
        os.execvpe(server.serve[0], list(server.serve), env)
    except OSError as error:
        print(f"{server.name}: cannot run {server.serve[0]} in {server.folder} ({error.strerror}): "
              f"check server.yaml's serve.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
