"""Both copies of the hash core give the known answers from servers/vectors.json."""

import hashlib
from pathlib import Path

import async_style.hashing
import pytest
import stdlib_style.hashing

from servers.contract import VECTORS

COPIES = [stdlib_style.hashing.hash_chain, async_style.hashing.hash_chain]
IDS = ["stdlib-style", "async-style"]


@pytest.mark.parametrize("hash_chain", COPIES, ids=IDS)
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"rounds={v['rounds']}")
def test_known_answers(hash_chain, vector):
    assert hash_chain(vector["input"].encode(), vector["rounds"]) == vector["hex"]


@pytest.mark.parametrize("hash_chain", COPIES, ids=IDS)
def test_default_is_100_rounds_of_the_raw_digest(hash_chain):
    expected = b"input-42"
    for _ in range(100):
        expected = hashlib.sha256(expected).digest()
    assert hash_chain(b"input-42") == expected.hex()


@pytest.mark.parametrize("hash_chain", COPIES, ids=IDS)
def test_zero_rounds_is_refused(hash_chain):
    with pytest.raises(ValueError):
        hash_chain(b"x", 0)


def test_the_two_copies_are_the_same_code():
    root = Path(__file__).resolve().parents[1]
    stdlib = (root / "stdlib-style/src/stdlib_style/hashing.py").read_text()
    asyncs = (root / "async-style/src/async_style/hashing.py").read_text()
    assert stdlib == asyncs
