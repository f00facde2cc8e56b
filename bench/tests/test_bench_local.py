"""End to end: the real bench-local (both servers under make serve, k6, sampling) into tmp_path.

One round of the quick profile: about 1.5 minutes on the 2-core dev machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.tests.conftest import ROOT


def test_quick_run_writes_summary_report_and_plots(tmp_path):
    command = [sys.executable, "-m", "bench.local", "--profile", "quick", "--rounds", "1",
               "--run-id", "e2e", "--results", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "e2e"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["servers"]) == {"stdlib-style", "async-style"}
    for name, server in summary["servers"].items():
        assert server["verification"]["ok"], server["verification"]
        agg = server["aggregate"]
        assert agg["requests"]["successful"] > 0, name
        assert agg["requests"]["failed"] == 0 and agg["requests"]["checks_failed"] == 0, name
        assert agg["latency_ms"]["p99"] >= agg["latency_ms"]["p50"] > 0
        assert agg["server_cpu_cores"]["mean"] > 0 and agg["server_rss_mb"]["peak"] > 0
        assert agg["k6_cpu_cores"]["mean"] > 0
        assert len(server["rounds"][0]["series"]["t_s"]) > 10
    assert summary["versions"]["k6"].startswith("1.") and summary["versions"]["granian"] != "not installed"

    report = (run_dir / "report.md").read_text()
    for heading in ("## Latency (successful requests only)", "## Request statistics", "## Throughput",
                    "## CPU and memory", "## Key observations", "## Methodology"):  # fmt: skip
        assert heading in report
    for png in ("latency.png", "rps.png", "resources.png"):
        assert (run_dir / png).stat().st_size > 10_000
    # The tables also end up on the terminal, and progress lines went by while it ran.
    assert "Latency (successful requests only)" in result.stdout
    assert "stdlib-style round 1/1" in result.stderr and "req/s" in result.stderr
