"""The HTTP contract both servers keep, as checks shared by every test layer."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path
from typing import Mapping

SERVERS = ("stdlib-style", "async-style")
ALLOWED = {"GET", "HEAD"}
HEX64 = re.compile(r"[0-9a-f]{64}")
VECTORS = json.loads((Path(__file__).with_name("vectors.json")).read_text())["vectors"]


def check_hash(status: int, headers: Mapping[str, str], body: bytes, source: str) -> dict:
    """Assert a GET /hash answer is the contract's; return the decoded body."""
    assert status == 200, (status, body)
    assert headers["content-type"].split(";")[0] == "application/json"
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
    assert body == b"OK"


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
