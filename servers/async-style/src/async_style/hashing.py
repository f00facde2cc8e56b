"""The work every request does: SHA-256 chained over its own digest.

The twin of this file lives in the other server; both are checked against servers/vectors.json.
"""

from hashlib import sha256


def hash_chain(data: bytes, rounds: int = 100) -> str:
    """Hex of the last digest after hashing `data`, then each 32-byte digest, `rounds` times in all."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    digest = sha256(data).digest()
    for _ in range(rounds - 1):
        digest = sha256(digest).digest()
    return digest.hex()
