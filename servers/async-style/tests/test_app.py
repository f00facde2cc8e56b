"""The contract in process, through Starlette's test client."""

import pytest
from async_style import app as app_module
from async_style.app import create_app
from async_style.settings import load
from starlette.testclient import TestClient

from servers.contract import check_hash, check_head, check_health, check_not_allowed, expected_hash

# A fixed clock: 2023-11-14 22:13:20.123456789 UTC.
NOW_NS = 1_700_000_000_123_456_789


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(load({})))


def answer(response):
    return response.status_code, response.headers, response.content


def test_hash_keeps_the_contract(client):
    first = check_hash(*answer(client.get("/hash")), source="async-style")
    second = check_hash(*answer(client.get("/hash")), source="async-style")
    assert first["hash"] != second["hash"], "each request hashes the current time"


@pytest.mark.parametrize("rounds", [1, 100])
def test_the_hash_is_the_chain_over_the_time_the_request_came(rounds, monkeypatch):
    """With the clock fixed, the answer is what hashlib computes here from the same instant."""
    monkeypatch.setattr(app_module, "time_ns", lambda: NOW_NS)
    fixed = TestClient(create_app(load({"HASH_ITERATIONS": str(rounds)})))
    payload = fixed.get("/hash").json()
    assert payload == {"hash": expected_hash(NOW_NS, rounds), "timestamp": NOW_NS // 1_000_000, "source": "async-style"}


def test_health(client):
    check_health(*answer(client.get("/health")))


@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_head_has_the_gets_headers_and_no_body(client, path):
    check_head(answer(client.get(path)), answer(client.head(path)))


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_other_methods_are_405_with_allow(client, method, path):
    status, headers, _ = answer(client.request(method, path))
    check_not_allowed(status, headers)
    assert headers["cache-control"] == "no-store"
