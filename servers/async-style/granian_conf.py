"""granian's configuration for async-style: the same file in the image and under `make serve`.

granian has no configuration file of its own, so this script builds the server the way its CLI
would (https://github.com/emmett-framework/granian#options). The numbers below are sized for the
seed's load, 15,000 keep-alive connections against one pod; each says where it comes from.
"""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
sys.path.insert(0, str(SRC))

from granian.constants import HTTPModes, Interfaces, Loops  # noqa: E402
from granian.http import HTTP1Settings  # noqa: E402
from granian.log import LogLevels  # noqa: E402
from granian.server import Server  # noqa: E402

from async_style.settings import SettingsError, apply_sched_policy, load  # noqa: E402

# The kernel caps the accept queue at net.core.somaxconn (4096 on this machine's kernel);
# asking for more lets a node tuned higher use it. Measured: wrk opening 15,000 connections at
# once through the 4096 queue saw no connect error (the kernel drops a full queue's handshakes
# and the clients' retransmissions land once the worker catches up).
BACKLOG = 16384
# Backpressure gates accepted connections, not requests: a worker holding this many open
# keep-alive connections stops accepting. One worker must hold all 15,000 of the seed's VUs.
# Measured (wrk -c15000, one worker): 16384 held all 15,000 with no socket error
# (test_one_worker_answers_the_seeds_15000_keep_alive_connections_within_10_s); 1024, the default with the
# default backlog, held 1,024 and left the rest unanswered in the kernel's queue.
BACKPRESSURE = 16384
# Kubernetes waits terminationGracePeriodSeconds (30 s) before SIGKILL; in-flight requests
# get 20 s to finish, leaving room for the preStop pause.
WORKERS_KILL_TIMEOUT = 20
# hyper's header read timeout runs from the moment a connection waits for a head, so it is
# also granian's keep-alive idle timeout (measured: an idle kept-alive connection and a
# connection trickling header bytes were both closed at exactly the timeout, with no answer).
# 10 s would free trickling sockets sooner but close k6's idle connections sooner too; they cost
# granian no thread, so it stays at the 30 s default, and gunicorn's keepalive is 75 s.
HEADER_READ_TIMEOUT_MS = 30_000
# uvloop, named rather than `auto` so a missing package fails the start instead of silently
# falling back to asyncio. Server CPU per request, granian on one core, wrk on the other, 7
# alternating rounds on a busy machine (medians): asyncio 147 µs, uvloop 120, rloop 123 (rloop is
# young; uvloop is the mature one). `task_impl=rust` stays off: granian calls it experimental,
# it does not exist on Python 3.12+, and it showed no gain beyond the noise (uvloop+rust 143).
LOOP = Loops.uvloop


def build(argv: list[str]) -> Server:
    # `--reload` is the one argument, for Tilt's live update (the Tiltfile passes it as container
    # args, never the manifests): granian restarts its workers when a file under src/ changes,
    # as gunicorn's own --reload does for stdlib-style.
    if any(arg != "--reload" for arg in argv):
        sys.exit(f"async-style: granian_conf.py takes only --reload, got {' '.join(argv)!r}.")
    try:
        settings = load()
    except SettingsError as error:
        sys.exit(f"async-style: {error}")
    # Before granian starts a thread or a worker, so that all of them inherit it (settings.py).
    if refused := apply_sched_policy(settings.sched_policy):
        print(f"async-style: {refused}", file=sys.stderr)
    # Workers are forked from this process: left imported here, the package would be inherited as
    # it was at start, and --reload (Tilt's live update) would keep serving an edited
    # settings.py's old code. Each worker imports it afresh from src/.
    for module in [name for name in sys.modules if name.partition(".")[0] == "async_style"]:
        del sys.modules[module]
    return Server(
        "async_style.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        http=HTTPModes.http1,
        websockets=False,
        loop=LOOP,
        backlog=BACKLOG,
        backpressure=BACKPRESSURE,
        http1_settings=HTTP1Settings(keep_alive=True, header_read_timeout=HEADER_READ_TIMEOUT_MS),
        log_level=LogLevels(settings.log_level),
        log_access=settings.access_log,
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
        # A crashed worker is replaced, as gunicorn's arbiter does, instead of granian exiting
        # and taking the pod's other workers down with it.
        respawn_failed_workers=True,
        reload="--reload" in argv,
        reload_paths=[SRC],
    )


if __name__ == "__main__":
    build(sys.argv[1:]).serve()
