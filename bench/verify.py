"""Check a server's answers before measuring it: a fast wrong server must not win a benchmark."""

from __future__ import annotations

import http.client
import importlib.util
import traceback
from pathlib import Path
from typing import Callable

from bench.model import Verification
from servers.contract import VECTORS, check_hash, check_health, check_not_allowed, request

ROOT = Path(__file__).resolve().parents[1]
# Distinct answers from a few calls show the hash depends on the time, as the contract says.
HASH_CALLS = 3


def hashing_module(server: str):
    """The server's own copy of the hash core, loaded from its source file."""
    package = server.replace("-", "_")
    path = ROOT / "servers" / server / "src" / package / "hashing.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{package}_hashing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_vectors(server: str) -> None:
    hash_chain = hashing_module(server).hash_chain
    for vector in VECTORS:
        got = hash_chain(vector["input"].encode(), vector["rounds"])
        assert got == vector["hex"], f"hash_chain({vector['input']!r}, {vector['rounds']}) = {got[:16]}…, expected {vector['hex'][:16]}…"


def check_http(server: str, port: int) -> None:
    check_health(*request(port, "GET", "/health"))
    hashes = {check_hash(*request(port, "GET", "/hash"), source=server)["hash"] for _ in range(HASH_CALLS)}
    assert len(hashes) == HASH_CALLS, f"{HASH_CALLS} calls to /hash gave only {len(hashes)} distinct hash(es)"
    status, headers, _ = request(port, "POST", "/hash")
    check_not_allowed(status, headers)


def _why(step: str, error: BaseException) -> str:
    if isinstance(error, AssertionError):
        detail = str(error) or (traceback.extract_tb(error.__traceback__)[-1].line or "an assertion")
        return f"{step} failed the check `{detail}`"
    return f"{step} failed: {type(error).__name__}: {error}"


def verify(server: str, port: int) -> Verification:
    """Known answers of the server's hash core, then its contract over HTTP on `port`."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("the known-answer vectors (servers/vectors.json)", lambda: check_vectors(server)),
        (f"the HTTP contract (health, /hash shape, source '{server}', 405)", lambda: check_http(server, port)),
    ]
    for step, check in steps:
        try:
            check()
        except (AssertionError, OSError, ValueError, KeyError, http.client.HTTPException) as error:
            return {"ok": False, "reason": _why(step, error).replace("\n", " ")}
    return {"ok": True, "reason": "known-answer vectors, HTTP contract and source name checked"}
