"""The contract in process, through Falcon's test client."""

import time

import pytest
from falcon import testing
from stdlib_style.app import create_app
from stdlib_style.settings import load

from servers.contract import check_hash, check_head, check_health, check_not_allowed, expected_hash

# A fixed clock: 2023-11-14 22:13:20.123456789 UTC.
NOW_NS = 1_700_000_000_123_456_789


@pytest.fixture
def client() -> testing.TestClient:
    return testing.TestClient(create_app(load({})))


def answer(result: testing.Result):
    return result.status_code, {k.lower(): v for k, v in result.headers.items()}, result.content


def test_hash_keeps_the_contract(client):
    first = check_hash(*answer(client.simulate_get("/hash")), source="stdlib-style")
    second = check_hash(*answer(client.simulate_get("/hash")), source="stdlib-style")
    assert first["hash"] != second["hash"], "each request hashes the current time"


@pytest.mark.parametrize("rounds", [1, 100])
def test_the_hash_is_the_chain_over_the_time_the_request_came(rounds, monkeypatch):
    """With the clock fixed, the answer is what hashlib computes here from the same instant."""
    fixed = testing.TestClient(create_app(load({"HASH_ITERATIONS": str(rounds)})))
    monkeypatch.setattr(time, "time_ns", lambda: NOW_NS)
    payload = fixed.simulate_get("/hash").json
    monkeypatch.undo()
    assert payload == {"hash": expected_hash(NOW_NS, rounds), "timestamp": NOW_NS // 1_000_000, "source": "stdlib-style"}


def test_health(client):
    check_health(*answer(client.simulate_get("/health")))


@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_head_has_the_gets_headers_and_no_body(client, path):
    check_head(answer(client.simulate_get(path)), answer(client.simulate_head(path)))


def test_unknown_path_is_404(client):
    assert client.simulate_get("/nope").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_other_methods_are_405_with_allow(client, method, path):
    status, headers, _ = answer(client.simulate_request(method, path))
    check_not_allowed(status, headers)
    assert headers["cache-control"] == "no-store"
