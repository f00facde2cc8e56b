"""The contract in process, through Starlette's test client."""

import pytest
from async_style.app import create_app
from async_style.settings import load
from starlette.testclient import TestClient

from servers.contract import check_hash, check_health, check_not_allowed


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(load({})))


def answer(response):
    return response.status_code, response.headers, response.content


def test_hash_keeps_the_contract(client):
    first = check_hash(*answer(client.get("/hash")), source="async-style")
    second = check_hash(*answer(client.get("/hash")), source="async-style")
    assert first["hash"] != second["hash"], "each request hashes the current time"


def test_hash_iterations_change_the_work():
    one_round = TestClient(create_app(load({"HASH_ITERATIONS": "1"})))
    assert check_hash(*answer(one_round.get("/hash")), source="async-style")


def test_health(client):
    check_health(*answer(client.get("/health")))


def test_head_has_headers_and_no_body(client):
    response = client.head("/hash")
    assert response.status_code == 200 and response.content == b""


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_other_methods_are_405_with_allow(client, method, path):
    status, headers, _ = answer(client.request(method, path))
    check_not_allowed(status, headers)
