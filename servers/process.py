"""Start a server command in its own process group, wait until it answers, stop it with SIGTERM.

Also what every command that starts processes needs to stop them all when it is stopped itself:
`interruptible()` turns SIGTERM and SIGHUP into the same exception as Ctrl-C, so the `finally`
and `except` paths that stop servers, k6 and wrk run for all three; `dies_with_parent()` makes a
child stop when this process dies without running them (SIGKILL); `kill_tree()` ends a process and
every descendant, whatever sessions or groups they made.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Sequence

import psutil

from servers import registry

ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1

# Each way a server can run that the tests and `make perf` measure: runner -> (server, environment).
# A server is the runner of its own name; a server.yaml `runners:` entry adds another (stdlib-style
# on its thread-per-connection worker, say), held to the same answers and measured beside it.
RUNNERS: dict[str, tuple[str, dict[str, str]]] = registry.runners()


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop as Ctrl-C (SIGINT) would."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Interrupted in the main thread, as SIGINT raises
    KeyboardInterrupt, so cleanup code written for Ctrl-C runs for every way a command is stopped."""

    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A Popen `preexec_fn`: Linux sends the child `sig` when the thread that started it ends
    (PR_SET_PDEATHSIG), so a SIGKILLed command leaves no k6 or wrk behind. Start such children
    from the main thread: a worker thread that ends would take them with it."""
    parent = os.getpid()

    def arrange() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux
            return
        if os.getppid() != parent:  # the parent already died
            os.kill(os.getpid(), sig)

    return arrange


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to `pid`, its process group and every descendant, deepest found first."""
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for process in family:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


_HANDED: dict[int, float] = {}  # port -> when free_port() handed it out
_HANDED_LOCK = threading.Lock()
HANDED_FOR = 120.0  # seconds a handed-out port is not handed out again by this process


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The ports the kernel picks for outgoing connections (Linux's default where unreadable)."""
    try:
        low, high = map(int, path.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, for a server started a moment later.

    Not the kernel's pick (bind to port 0): that comes from the ephemeral range, the same pool every
    client's connect() draws from, and under load (the stop loop runs four servers' clients side by
    side) a client took such a port between this call and the server's bind, which then failed
    with "Address already in use" (1 start in 1,100). So the port is drawn from below the ephemeral
    range, where only an explicit bind can take it, and never twice in HANDED_FOR seconds by this
    process, whose threads start servers in parallel.
    """
    import random
    import socket

    low, _ = ephemeral_range()
    start, stop = max(1024, low // 2), low
    if stop - start < 1000:  # an ephemeral range that starts low leaves no room: the kernel's pick
        start, stop = 0, 0
    with _HANDED_LOCK:
        now = time.monotonic()
        for port, at in list(_HANDED.items()):
            if now - at > HANDED_FOR:
                del _HANDED[port]
        for _ in range(200):
            candidate = random.randrange(start, stop) if stop else 0
            if candidate in _HANDED:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    continue
                port = sock.getsockname()[1]
            _HANDED[port] = now
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in {start}-{stop - 1}: close some servers and try again.")


def serve_command(server: str, port: int, workers: int | str = "") -> list[str]:
    """The `make serve` command line, the one way a person starts a server."""
    return ["make", "-s", "-C", str(ROOT), "serve", f"SERVER={server}", f"PORT={port}", f"WORKERS={workers}"]


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll GET `url` until it answers 200; fail early if `process` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.05)


class Running:
    def __init__(self, process: subprocess.Popen, base_url: str, log: Path) -> None:
        self.process, self.base_url, self.log = process, base_url, log
        self.quota = None  # bench.local: the CPU quota (bench.cpulimit.Quota) it runs under, if any

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the runner, as Docker and Kubernetes do, and return the command's exit code.

        Under `make serve` the runner is make's child: make itself must not get the signal, or
        it would exit at once with -15 instead of reporting how the runner ended. A runner still
        running after `timeout` is killed with all it started, and TimeoutExpired is raised.
        """
        if self.process.poll() is None:
            leader = psutil.Process(self.process.pid)
            targets = leader.children() if leader.name() == "make" else [leader]
            for target in targets or [leader]:
                target.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.process.pid)
            self.process.wait()
            raise


@contextmanager
def running(
    command: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
    stop_timeout: float = 30.0, setup: Callable[[], None] | None = None,
) -> Iterator[Running]:
    """Run `command` (listening on 127.0.0.1:`port`) for the duration of the block.

    The command gets a session of its own (a terminal's Ctrl-C reaches only this process, which
    then stops it) and SIGKILL should this process die without stopping it; leaving the block
    normally stops it with SIGTERM (up to `stop_timeout`), leaving it by an exception kills it
    and everything it started at once. `setup` runs in the child before it execs (joining a
    cgroup, say).
    """
    arrange = dies_with_parent()

    def prepare() -> None:
        arrange()
        if setup is not None:
            setup()

    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=prepare,
        )
    server = Running(process, f"http://127.0.0.1:{port}", log)
    try:
        try:
            wait_until_healthy(server.base_url + "/health", process)
        except (RuntimeError, TimeoutError) as error:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"{error}; last lines of {log}:\n" + "\n".join(tail)) from None
        yield server
    except BaseException:
        kill_tree(process.pid)
        process.wait()
        raise
    else:
        if process.poll() is None:
            server.stop(stop_timeout)


def requests_in_flight(port: int, leader_pid: int, count: int, path: str = "/hash", timeout: float = 60) -> tuple[list, list[threading.Thread]]:
    """`count` GET requests in flight at once: their connections first, each accepted by the server
    (held by `leader_pid` or a descendant, not only queued by the kernel), then a request on each,
    sent together. Returns the list their answers (status, lower-cased headers, body) fill in, or
    the exception each met, and the client threads to join."""
    import http.client

    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) for _ in range(count)]
    for connection in connections:
        connection.connect()
    leader = psutil.Process(leader_pid)
    deadline = time.monotonic() + 20
    while established_connections(leader, port) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server accepted fewer than {count} connections in 20 s")
        time.sleep(0.01)
    results: list = []

    def ask(connection) -> None:
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            results.append((response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()))
        except (OSError, http.client.HTTPException) as error:
            results.append(error)
        finally:
            connection.close()

    clients = [threading.Thread(target=ask, args=(connection,)) for connection in connections]
    for client in clients:
        client.start()
    return results, clients


def established_connections(root: psutil.Process, port: int) -> int:
    """Established connections to `port` held by `root` or any of its descendants: how a test
    knows its requests were accepted by the server, not only queued by the kernel."""
    count = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            count += sum(
                1 for c in process.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
            )
        except psutil.NoSuchProcess:
            pass
    return count


def start_prometheus(workdir: Path, port: int, scrape_target: str, job: str) -> subprocess.Popen:
    """Debian's Prometheus on 127.0.0.1:`port` with k6's remote-write receiver and native
    histograms, scraping `scrape_target` (host:port) every second as `job`; returns once ready."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{scrape_target}']\n"
    )
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
                # A no-op from Prometheus 3.9 (the cluster's); Debian's 2.42 rejects k6's histograms without it.
                "--enable-feature=native-histograms",
            ],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/-/ready", process, timeout=60)
    except (RuntimeError, TimeoutError) as error:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RuntimeError(f"prometheus did not start ({error}): {log.read_text()[-2000:]}") from None
    return process


def scheduling_policies(process: psutil.Process) -> set[int]:
    """The scheduling policy of every thread of `process` (field 41 of /proc/PID/task/TID/stat)."""
    policies = set()
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        policies.add(int(fields[41 - 3]))
    return policies


@contextmanager
def stand_in(answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    """Answer every GET with `answer(path)` -> (status, headers, body) from threads of this
    process, on a free loopback port, keeping connections alive; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the head and the body are two writes

        def do_GET(self):  # noqa: N802 (http.server's name)
            status, headers, body = answer(self.path)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
