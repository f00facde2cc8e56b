"""No cache may answer in a server's place: REDbot (PyPI `redbot`, "lint for HTTP") on every
server's /hash and /health under `make serve` finds each answer uncacheable, and none of the notes
it gave before the servers said `Cache-Control: no-store` (that any cache may store the answer, give
it a freshness lifetime of its own, or serve it stale)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servers.contract import SERVERS
from servers.process import running, serve_command

REDBOT = Path(sys.executable).with_name("redbot")
# What REDbot 2.7.1 said of every answer while they carried no Cache-Control (issue 17).
CACHING_NOTES = (
    "allows all caches to store it",
    "allows caches to assign their own freshness lifetimes",
    "caches can serve this response stale",
)


@pytest.mark.parametrize("server", SERVERS)
def test_redbot_finds_no_answer_a_cache_may_store(server, free_port, tmp_path):
    if not REDBOT.exists() and shutil.which("redbot") is None:
        pytest.skip("redbot is not installed: it is in requirements-dev.in, so make test installs it")
    with running(serve_command(server, free_port, workers=1), free_port, tmp_path / "log"):
        for path in ("/hash", "/health"):
            result = subprocess.run([str(REDBOT), "-o", "text", f"http://127.0.0.1:{free_port}{path}"],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            text = result.stdout
            assert "HTTP/1.1 200" in text, text
            assert "can't be stored by caches" in text, f"{server} {path}:\n{text}"
            assert not [note for note in CACHING_NOTES if note in text], f"{server} {path}:\n{text}"
