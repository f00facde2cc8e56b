"""The work every request does: SHA-256 chained over its own digest.

The twin of this file lives in the other server; both are checked against servers/vectors.json.
"""

try:
    # CPython 3.11's own SHA-256 (the one hashlib falls back to without OpenSSL): 100 rounds of
    # 32 bytes cost 34-36 µs of CPU here against 40-42 µs through OpenSSL's EVP layer, whose per-call
    # context setup outweighs its faster compression at this size (docs/performance.md, "What each lever measured").
    from _sha256 import sha256
except ImportError:
    # 3.12 replaced it with HACL* code (`_sha2`), no faster than OpenSSL here (47 vs 45 µs).
    from hashlib import sha256


def hash_chain(data: bytes, rounds: int = 100) -> str:
    """Hex of the last digest after hashing `data`, then each 32-byte digest, `rounds` times in all."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    digest = sha256(data).digest()
    for _ in range(rounds - 1):
        digest = sha256(digest).digest()
    return digest.hex()
