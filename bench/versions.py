"""versions.env, the one file where every version is pinned, as a dict for Python code and tests."""

from __future__ import annotations

from pathlib import Path

VERSIONS = Path(__file__).resolve().parents[1] / "versions.env"


def read_versions(path: Path = VERSIONS) -> dict[str, str]:
    """The KEY=value pairs of versions.env; comments (from `#`) and blank lines are skipped."""
    versions = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("#")[0].partition("=")
        if sep:
            versions[key.strip()] = value.strip()
    return versions
