"""The contract in process, through Falcon's test client."""

import pytest
from falcon import testing
from stdlib_style.app import create_app
from stdlib_style.settings import load

from servers.contract import check_hash, check_health, check_not_allowed


@pytest.fixture
def client() -> testing.TestClient:
    return testing.TestClient(create_app(load({})))


def answer(result: testing.Result):
    return result.status_code, {k.lower(): v for k, v in result.headers.items()}, result.content


def test_hash_keeps_the_contract(client):
    first = check_hash(*answer(client.simulate_get("/hash")), source="stdlib-style")
    second = check_hash(*answer(client.simulate_get("/hash")), source="stdlib-style")
    assert first["hash"] != second["hash"], "each request hashes the current time"


def test_hash_iterations_change_the_work():
    one_round = testing.TestClient(create_app(load({"HASH_ITERATIONS": "1"})))
    assert check_hash(*answer(one_round.simulate_get("/hash")), source="stdlib-style")


def test_health(client):
    check_health(*answer(client.simulate_get("/health")))


def test_head_has_headers_and_no_body(client):
    result = client.simulate_head("/hash")
    assert result.status_code == 200 and result.content == b""


def test_unknown_path_is_404(client):
    assert client.simulate_get("/nope").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/hash", "/health"])
def test_other_methods_are_405_with_allow(client, method, path):
    status, headers, _ = answer(client.simulate_request(method, path))
    check_not_allowed(status, headers)
