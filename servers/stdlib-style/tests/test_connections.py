"""stdlib-style's own promises about connections, beyond the reliability suite every server runs:
503 past worker_connections, and a stop that closes no kept-alive connection under a request.
Also that server.yaml's numbers are the runner's."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from stdlib_style import limits

from servers import registry
from servers.process import RUNNERS, free_port, running, serve_command
from servers.tests.hostile import connect, get, parse_responses, send_raw, sigterm_under_load

SERVER = "stdlib-style"
FOLDER = Path(__file__).resolve().parents[1]
WORKERS = [name for name, (server, _) in RUNNERS.items() if server == SERVER]
LIMIT = 8
PROMPT = 5.0


def test_server_yaml_holds_the_runners_own_numbers():
    declared = registry.get(SERVER)
    gunicorn = (FOLDER / "gunicorn.conf.py").read_text()
    assert declared.head_timeout_s == limits.HEAD_TIMEOUT
    assert declared.drain_timeout_s == int(re.search(r"^graceful_timeout = (\d+)", gunicorn, re.M).group(1))


def kept_alive(port: int):
    """A connection that has been answered once and is kept open, idle."""
    sock = connect(port, timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while not parse_responses(data)[0]:
        chunk = sock.recv(65536)
        assert chunk, "closed before answering"
        data += chunk
    assert parse_responses(data)[0][0].status == 200
    return sock


def with_gunicorn_args(runner: str, *arguments: str) -> dict[str, str]:
    """The environment that selects `runner`'s worker, with more gunicorn `arguments`."""
    return {"GUNICORN_CMD_ARGS": " ".join(filter(None, [RUNNERS[runner][1].get("GUNICORN_CMD_ARGS", ""), *arguments]))}


@pytest.mark.parametrize("runner", WORKERS)
def test_past_worker_connections_a_client_gets_503_and_a_close_not_a_wait(runner, tmp_path):
    port = free_port()
    env = with_gunicorn_args(runner, f"--worker-connections {LIMIT}")
    with running(serve_command(SERVER, port, workers=1), port, tmp_path / "log", env=env):
        held = []
        try:
            for _ in range(LIMIT):
                held.append(kept_alive(port))
            # expect=2: wait for the close after the one answer there must be.
            refused = send_raw(port, b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n", expect=2, timeout=PROMPT)
        finally:
            for sock in held:
                sock.close()
        assert refused.statuses == [503] and refused.closed, refused
        assert refused.responses[0].headers.get("connection", "").lower() == "close"
        deadline = time.monotonic() + 10
        while (status := get(port, timeout=5)[0]) != 200:
            assert status == 503 and time.monotonic() < deadline, f"answered {status} after the held connections closed"
            time.sleep(0.1)


# The worker keeps kept-alive connections open at SIGTERM and answers the next request on each with
# `Connection: close`, and only after it has closed its listening socket: a client that reconnects
# is refused before it sends. (Told to close earlier, clients reconnected into the kernel's accept
# queue, and one that landed there as the worker closed the socket got a reset after sending: 2
# runs in 8.) So, unlike granian and hyper, no request is ever left for the client to resend.
@pytest.mark.parametrize("runner", WORKERS)
def test_at_sigterm_no_kept_alive_connection_is_closed_under_a_request(runner, tmp_path):
    exit_code, tally = sigterm_under_load(SERVER, RUNNERS[runner][1], tmp_path / "log")
    assert exit_code == 0 and not tally.failed, tally
    assert tally.unanswered_on_reuse == 0, f"kept-alive connections were closed under a request: {tally}"
    assert tally.reconnected == 0, f"connections were told to close while the listening socket was open: {tally}"


def test_only_this_server_gets_a_writable_dev_shm_in_its_manifest():
    """gunicorn's worker_tmp_dir; granian, Go and Rust write nowhere (measured with a read-only
    root, /tmp and /dev/shm)."""
    import yaml

    root = FOLDER.parents[1]
    mounts = {}
    for manifest in (root / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc.get("kind") == "Deployment":
                [container] = doc["spec"]["template"]["spec"]["containers"]
                mounts[doc["metadata"]["name"]] = [m["mountPath"] for m in container.get("volumeMounts", [])]
    assert mounts.pop(SERVER) == ["/dev/shm"] and mounts and all(m == [] for m in mounts.values()), mounts
    assert re.search(r'^worker_tmp_dir = "/dev/shm"', (FOLDER / "gunicorn.conf.py").read_text(), re.M)
