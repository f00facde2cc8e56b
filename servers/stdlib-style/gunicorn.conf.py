"""gunicorn's configuration for stdlib-style: the same file in the image and under `make serve`.

Settings (docs): https://gunicorn.org/reference/settings/ . The numbers below are sized for the
seed's load, 15,000 keep-alive connections against one pod; each says where it comes from.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from stdlib_style.settings import SettingsError, apply_sched_policy, load  # noqa: E402

try:
    _settings = load()
except SettingsError as error:
    sys.exit(f"stdlib-style: {error}")
# In the arbiter, before it forks a worker or a worker starts its threads, so that all of them
# inherit it (settings.py).
if _refused := apply_sched_policy(_settings.sched_policy):
    print(f"stdlib-style: {_refused}", file=sys.stderr)
# Workers are forked from this process: left imported here, the package would be inherited as it
# was at start, and --reload (Tilt's live update) would keep serving an edited settings.py's old
# code. Each worker imports it afresh from src/.
for _module in [name for name in sys.modules if name.partition(".")[0] == "stdlib_style"]:
    del sys.modules[_module]

wsgi_app = "stdlib_style.app:create_app()"
bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
# gthread with request heads read on its event loop instead of on pool threads: stock gthread
# left pipelined requests unanswered and was starved by clients trickling header bytes
# (src/stdlib_style/worker.py says how; servers/tests/test_reliability.py proves it).
# Not stdlib_style.per_connection.ThreadPerConnectionWorker, a thread per connection as in Go:
# measured in one run beside it and the Go peer (make perf, 2026-12-02 19:56), the same under
# wrk -c50 (0.311 and 0.306 of the Go peer's req/s, 118 us of CPU per request each), but under
# wrk -c15000 -d15s --timeout 10s it answered 1,243 requests where this worker answered 119,030,
# the slowest in 2.24 s (docs/performance.md, "A thread per connection").
worker_class = "stdlib_style.worker.HeadFirstWorker"
# The C parser from gunicorn[fast] (gunicorn_h1c); "fast" fails loudly if it is missing instead
# of falling back to the pure-Python parser as "auto" would.
http_parser = "fast"
# The hash holds the GIL, so threads only overlap socket I/O; more threads add switching.
# (HeadFirstWorker's pool size; ThreadPerConnectionWorker has a thread per connection instead.)
threads = 4
# One worker must be able to hold every connection of the seed's 15,000-VU run on its own
# (connections land unevenly across workers); past this limit the worker answers 503 and closes.
# Measured (wrk -c15000, one worker): 16384 held all 15,000 with no socket error
# (test_one_worker_answers_the_seeds_15000_keep_alive_connections_within_10_s); the default 1000
# held 1,000 and (under stock gthread) left the rest unanswered in the kernel's queue.
worker_connections = 16384
# k6 VUs reuse their connection; the 2 s default closes connections that wait longer than that
# between requests under overload, and the reconnects show up as http_req_connecting.
keepalive = 75
# The kernel caps the accept queue at net.core.somaxconn (4096 on this machine's kernel);
# asking for more lets a node tuned higher use it. Measured: wrk opening 15,000 connections at
# once through the 4096 queue saw no connect error (the kernel drops a full queue's handshakes
# and the clients' retransmissions land once the worker catches up).
backlog = 16384
# Kubernetes waits terminationGracePeriodSeconds (30 s) before SIGKILL; in-flight requests
# get 20 s to finish, leaving room for the preStop pause.
graceful_timeout = 20
timeout = 30
# The heartbeat file is fchmod'ed every second; /dev/shm keeps that off a (read-only) disk.
worker_tmp_dir = "/dev/shm"
# gunicorn 26's control socket lives under $HOME, which is read-only in the image; nothing here
# uses it (signals do the same job).
control_socket_disable = True
loglevel = _settings.log_level
errorlog = "-"
accesslog = "-" if _settings.access_log else None
