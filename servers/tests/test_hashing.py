"""Every copy of the Python hash core gives the known answers from servers/vectors.json, and the
copies are the same code (the reference servers check theirs in `go test` and `cargo test`)."""

import hashlib
import importlib

import pytest

from servers import registry
from servers.contract import VECTORS, expected_hash

PYTHON = [name for name in registry.names() if (registry.get(name).folder / "pyproject.toml").is_file()]


def hash_chain(server: str):
    return importlib.import_module(f"{server.replace('-', '_')}.hashing").hash_chain


@pytest.mark.parametrize("server", PYTHON)
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"rounds={v['rounds']}")
def test_known_answers(server, vector):
    assert hash_chain(server)(vector["input"].encode(), vector["rounds"]) == vector["hex"]


@pytest.mark.parametrize("server", PYTHON)
def test_default_is_100_rounds_of_the_raw_digest(server):
    expected = b"input-42"
    for _ in range(100):
        expected = hashlib.sha256(expected).digest()
    assert hash_chain(server)(b"input-42") == expected.hex() == expected_hash(42, 100)


@pytest.mark.parametrize("server", PYTHON)
def test_zero_rounds_is_refused(server):
    with pytest.raises(ValueError):
        hash_chain(server)(b"x", 0)


def test_the_copies_are_the_same_code():
    copies = {name: next(registry.get(name).folder.glob("src/*/hashing.py")).read_text() for name in PYTHON}
    assert len(PYTHON) >= 2 and len(set(copies.values())) == 1, sorted(copies)


@pytest.mark.parametrize("server", registry.names())
def test_each_servers_known_answers_command_passes(server):
    """What bench/verify.py runs before it measures a server: `go test`, `cargo test`, or the
    Python hash core against servers/vectors.json (its build first)."""
    result = registry.known_answers(registry.get(server))
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
