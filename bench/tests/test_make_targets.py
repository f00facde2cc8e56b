"""The Make wiring of bench-local and compare: which arguments reach the Python entry points."""

from __future__ import annotations

import os
import subprocess

from bench.tests.conftest import ROOT


def dry_run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.replace("\\\n", " ")


def test_bench_local_defaults_to_the_quick_profile_although_bench_defaults_to_seed():
    line = dry_run("bench-local")
    assert "-m bench.local" in line and '--profile "quick"' in line
    assert '--servers "stand-ins"' in line and "--plan" not in line


def test_bench_local_passes_every_variable_through():
    line = dry_run("bench-local", "PROFILE=open", "ROUNDS=3", "WORKERS=2", "SERVER_CPUS=0", "K6_CPUS=1",
                   "RUN_ID=my-run", "SERVERS=async-style")  # fmt: skip
    for arg in ('--profile "open"', '--rounds "3"', '--workers "2"', '--server-cpus "0"', '--k6-cpus "1"',
                '--run-id "my-run"', '--servers "async-style"'):  # fmt: skip
        assert arg in line


def test_plan_asks_for_the_plan_only():
    assert "--plan" in dry_run("bench-local", "PLAN=1")


def test_a_profile_from_the_environment_counts_too():
    assert '--profile "standard"' in dry_run("bench-local", env={"PROFILE": "standard"})


def test_compare_passes_both_runs():
    assert '-m bench.compare "a" "b"' in dry_run("compare", "A=a", "B=b")
