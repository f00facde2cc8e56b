"""Start a server command in its own process group, wait until it answers, stop it with SIGTERM."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]


# Each way a server can run that the tests and `make perf` measure: name -> (server, environment).
# stdlib-style-per-connection is stdlib-style on its other worker, a thread per connection as in
# Go (stdlib_style/per_connection.py): not the default, held to the same answers and measured
# beside it. GUNICORN_CMD_ARGS overrides gunicorn.conf.py.
RUNNERS: dict[str, tuple[str, dict[str, str]]] = {
    "stdlib-style": ("stdlib-style", {}),
    "stdlib-style-per-connection": (
        "stdlib-style",
        {"GUNICORN_CMD_ARGS": "--worker-class stdlib_style.per_connection.ThreadPerConnectionWorker"},
    ),
    "async-style": ("async-style", {}),
}


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

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the runner, as Docker and Kubernetes do, and return the command's exit code.

        Under `make serve` the runner is make's child: make itself must not get the signal, or
        it would exit at once with -15 instead of reporting how the runner ended.
        """
        if self.process.poll() is None:
            leader = psutil.Process(self.process.pid)
            targets = leader.children() if leader.name() == "make" else [leader]
            for target in targets or [leader]:
                target.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise


@contextmanager
def running(
    command: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Running]:
    """Run `command` (listening on 127.0.0.1:`port`) for the duration of the block."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    else:
        if process.poll() is None:
            server.stop()


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
