"""The HTTP contract every server keeps, as checks shared by every test layer."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
from pathlib import Path
from typing import Mapping

from servers import registry

SERVERS = tuple(registry.names())
ALLOWED = {"GET", "HEAD"}
HEX64 = re.compile(r"[0-9a-f]{64}")
VECTORS = json.loads((Path(__file__).with_name("vectors.json")).read_text())["vectors"]


def expected_hash(nanoseconds: int, rounds: int) -> str:
    """The contract's hash of a request that came at `nanoseconds`, computed here with hashlib:
    SHA-256 of `input-<ns>`, then of each 32-byte digest, `rounds` in all."""
    digest = hashlib.sha256(b"input-%d" % nanoseconds).digest()
    for _ in range(rounds - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def check_not_cached(headers: Mapping[str, str]) -> None:
    """Each answer is computed for its request: no cache may store it and answer in its place."""
    directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
    assert "no-store" in directives, f"Cache-Control is {headers.get('cache-control')!r}, not no-store"


def check_hash(status: int, headers: Mapping[str, str], body: bytes, source: str) -> dict:
    """Assert a GET /hash answer is the contract's; return the decoded body."""
    assert status == 200, (status, body)
    assert headers["content-type"].split(";")[0] == "application/json"
    check_not_cached(headers)
    payload = json.loads(body)
    assert set(payload) == {"hash", "timestamp", "source"}
    assert HEX64.fullmatch(payload["hash"]), payload
    assert isinstance(payload["timestamp"], int)
    assert abs(payload["timestamp"] - time.time() * 1000) < 60_000, "timestamp is not unix ms of now"
    assert payload["source"] == source
    return payload


def check_health(status: int, headers: Mapping[str, str], body: bytes) -> None:
    assert status == 200
    assert headers["content-type"].split(";")[0] == "text/plain"
    check_not_cached(headers)
    assert body == b"OK"


def check_head(get: tuple[int, Mapping[str, str], bytes], head: tuple[int, Mapping[str, str], bytes]) -> None:
    """HEAD answers as GET does, without the body: same status, type and length."""
    (get_status, get_headers, get_body), (status, headers, body) = get, head
    assert status == get_status == 200, (get_status, status)
    assert body == b"", body
    assert headers.get("content-type") == get_headers["content-type"], (headers, get_headers)
    assert headers.get("content-length") == get_headers.get("content-length") == str(len(get_body)), (headers, get_headers)
    check_not_cached(headers)


def check_not_allowed(status: int, headers: Mapping[str, str]) -> None:
    assert status == 405
    assert {m.strip() for m in headers["allow"].split(",")} == ALLOWED


def request(port: int, method: str, path: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:`port` on a fresh connection: status, lower-cased headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def check_contract(port: int, source: str) -> None:
    """The whole contract over HTTP against a server on `port` that calls itself `source`."""
    check_hash(*request(port, "GET", "/hash"), source=source)
    check_health(*request(port, "GET", "/health"))
    for path in ("/hash", "/health"):
        check_head(request(port, "GET", path), request(port, "HEAD", path))
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            check_not_allowed(*request(port, method, path)[:2])
    assert request(port, "GET", "/missing")[0] == 404
