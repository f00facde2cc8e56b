"""Test-wide rules and fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Each Python server's package (servers/<name>/src/<package>) imports as the runner imports it.
for _src in sorted(Path(__file__).resolve().parent.glob("servers/*/src")):
    sys.path.insert(0, str(_src))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a missing install step, so it fails the run instead of hiding."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which means .ci/run lacks an install step: {reason}"


@pytest.fixture
def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    from servers.process import free_port as new_port

    return new_port()
