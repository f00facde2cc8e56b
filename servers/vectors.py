"""Check one copy of the Python hash core against servers/vectors.json; exit 0 when every answer matches.

    python servers/vectors.py servers/async-style/src/async_style/hashing.py

A Python server's `known_answers` in its server.yaml (the reference servers run `go test` and
`cargo test` on the same file). One line per wrong answer on stderr, exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())["vectors"]


def wrong_answers(hashing: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location("_known_answers_hashing", hashing)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wrong = []
    for vector in VECTORS:
        got = module.hash_chain(vector["input"].encode(), vector["rounds"])
        if got != vector["hex"]:
            wrong.append(f"hash_chain({vector['input']!r}, {vector['rounds']}) = {got[:16]}…, expected {vector['hex'][:16]}…")
    return wrong


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python servers/vectors.py <path to hashing.py>", file=sys.stderr)
        return 2
    wrong = wrong_answers(Path(argv[0]))
    for line in wrong:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
