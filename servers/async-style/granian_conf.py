"""granian's configuration for async-style: the same file in the image and under `make serve`.

granian has no configuration file of its own, so this script builds the server the way its CLI
would (https://github.com/emmett-framework/granian#options). The numbers below are sized for the
seed's load, 15,000 keep-alive connections against one pod; each says where it comes from.
"""

import os
import signal
import sys
import threading
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


class SignalSafeServer(Server):
    """granian's server, its SIGINT, SIGTERM and SIGHUP handlers free of locks.

    granian's handlers (granian/server/common.py, `signal_handler_interrupt` and
    `signal_handler_reload`) set a flag, then call `main_loop_interrupt.set()`, a threading.Event
    whose lock is not reentrant, and Python runs a handler on the main thread between two
    bytecodes, whatever that thread holds. A signal that lands while the main thread is inside
    that Event (a second SIGTERM or Ctrl-C during the first handler, or while the main loop's
    `wait()` holds the lock) runs a handler that waits forever for a lock its own thread holds,
    and the worker watcher then blocks on it too (issue 16). Here a handler sets the same flag
    and writes a byte to a pipe, neither of which takes a lock; a thread reads the pipe and
    calls `set()`, then an ordinary wake-up from another thread, like the watcher's. gunicorn's
    arbiter works the same way (its handlers queue the signal and write to a pipe).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._master_pid = os.getpid()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        threading.Thread(target=self._wake_main_loop, name="signal-wake", daemon=True).start()

    def signal_handler_interrupt(self, signum: int, frame: object) -> None:
        if self._in_a_worker(signum):
            return
        # Set here, not by the thread: a worker that exits on the same SIGTERM (sent to the
        # process group) may wake the main loop first, which must then stop, not respawn it.
        self.interrupt_signal = True
        self._wake()

    def signal_handler_reload(self, signum: int, frame: object) -> None:
        if self._in_a_worker(signum):
            return
        self.reload_signal = True
        self._wake()

    def _in_a_worker(self, signum: int) -> bool:
        # A forked worker keeps these handlers until it sets its own, before it serves; a
        # SIGTERM or SIGINT there, which granian's handlers ignore, ends it at once: nothing
        # is in flight yet, and ignored it would leave a worker respawned during a stop serving
        # until it is killed, 20 s later. SIGHUP stays ignored in a worker, as in granian.
        if os.getpid() == self._master_pid:
            return False
        if signum != signal.SIGHUP:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        return True

    def shutdown(self, exit_code: int = 0) -> None:
        # A worker that got the stop's SIGTERM too (sent to the process group, or by systemd to
        # the whole cgroup) drains and exits on its own, before the master's terminate(): the
        # watcher logs that as an unexpected exit, and granian's shutdown() exits 1 for it. During
        # a stop a signal asked for, a worker that exited 0 has not failed.
        if self.interrupt_signal:
            clean = {worker.idx for worker in self.wrks if worker.inner.exitcode == 0}
            self.interrupt_children[:] = [idx for idx in self.interrupt_children if idx not in clean]
        super().shutdown(exit_code)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups the thread has yet to read

    def _wake_main_loop(self) -> None:
        while os.read(self._wake_read, 4096):
            self.main_loop_interrupt.set()


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
    return SignalSafeServer(
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
