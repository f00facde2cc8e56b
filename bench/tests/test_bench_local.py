"""End to end: the real bench-local (servers under make serve, k6, sampling, the CPU limit) into
tmp_path, and the ways it is stopped.

One round of the quick profile for the two stand-ins: about 1.5 minutes on the 2-core dev machine;
the open profile, sized down, and the stops take a few seconds to half a minute each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.compare import comparison
from bench.model import load
from bench.tests.conftest import ROOT
from servers import registry

CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")


def bench_local(tmp_path: Path, *args: str, run_id: str = "e2e") -> list[str]:
    return [sys.executable, "-m", "bench.local", "--run-id", run_id, "--results", str(tmp_path), *args]


def test_quick_run_writes_summary_report_and_plots(tmp_path):
    command = bench_local(tmp_path, "--profile", "quick", "--rounds", "1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "e2e"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["servers"]) == registry.names("stand-in")
    limited = CGROUP_V1.exists() and os.geteuid() == 0
    for name, server in summary["servers"].items():
        assert server["verification"]["ok"], server["verification"]
        assert "ns a round" in server["verification"]["reason"], "the work was checked"
        agg = server["aggregate"]
        assert agg["requests"]["successful"] > 0, name
        assert agg["requests"]["failed"] == 0 and agg["requests"]["checks_failed"] == 0, name
        assert agg["latency_ms"]["p99"] >= agg["latency_ms"]["p50"] > 0
        assert agg["server_cpu_cores"]["mean"] > 0 and agg["server_rss_mb"]["peak"] > 0
        assert agg["k6_cpu_cores"]["mean"] > 0
        assert len(server["rounds"][0]["series"]["t_s"]) > 10
        if limited:
            # The default limit, and the server kept to it (a sample can straddle a period: 10 % slack).
            assert agg["cpu_limit_cores"] == summary["settings"]["server_cpu_limit"] > 0
            assert agg["server_cpu_cores"]["mean"] <= agg["cpu_limit_cores"] * 1.1, agg["server_cpu_cores"]
            assert agg["throttling"]["periods"] > 0
    assert summary["versions"]["k6"].startswith("1.") and summary["versions"]["granian"] != "not installed"

    report = (run_dir / "report.md").read_text()
    for heading in ("## Latency (successful requests only)", "## Request statistics", "## Throughput",
                    "## Who limited the run", "## CPU and memory", "## Key observations", "## Methodology"):  # fmt: skip
        assert heading in report
    for png in ("latency.png", "rps.png", "resources.png"):
        assert (run_dir / png).stat().st_size > 10_000
    # The tables also end up on the terminal, and progress lines went by while it ran.
    assert "Latency (successful requests only)" in result.stdout
    assert "stdlib-style round 1/1" in result.stderr and "req/s" in result.stderr


@pytest.mark.skipif(not CGROUP_V1.exists() or os.geteuid() != 0, reason="needs root and cgroup v1's cpu controller")
def test_the_cpu_limit_is_a_quota_on_the_servers_cgroup(tmp_path):
    """While a round runs, the server's processes are in a cgroup with the quota, and k6 is not."""
    process = subprocess.Popen(bench_local(tmp_path, "--servers", "async-style", "--profile", "smoke",
                                           "--server-cpu-limit", "250m"),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        k6 = wait_for_k6(process)
        runner = next(p for p in psutil.Process(process.pid).children(recursive=True) if "granian" in " ".join(p.cmdline()))
        cgroup = next(line.split(":", 2)[2] for line in Path(f"/proc/{runner.pid}/cgroup").read_text().splitlines()
                      if "cpu" in line.split(":")[1].split(","))
        folder = CGROUP_V1.parent / cgroup.lstrip("/")
        assert (folder / "cpu.cfs_period_us").read_text().strip() == "10000"
        assert (folder / "cpu.cfs_quota_us").read_text().strip() == "2500"
        assert k6.pid not in map(int, (folder / "cgroup.procs").read_text().split())
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert not folder.exists(), "the run's cgroup is removed once its server is gone"


def test_no_limit_and_a_refused_limit_both_run_without_one(tmp_path):
    off = subprocess.run(bench_local(tmp_path, "--plan", "--server-cpu-limit", "none"), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and "no CPU limit (SERVER_CPU_LIMIT=none)" in off.stderr
    bad = subprocess.run(bench_local(tmp_path, "--plan", "--server-cpu-limit", "lots"), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "SERVER_CPU_LIMIT must be cores (0.3), millicores (300m) or none, got 'lots': e.g. SERVER_CPU_LIMIT=0.3.")


def test_a_quota_that_cannot_be_set_is_one_line_and_the_run_goes_on(tmp_path, monkeypatch):
    from bench import cpulimit, local

    monkeypatch.setattr(cpulimit, "V1_ROOT", tmp_path / "no-cgroup-here")
    monkeypatch.setattr(cpulimit, "V2_ROOT", tmp_path / "none-either")
    plan, _, _ = local.make_plan(local.parse(["--results", str(tmp_path), "--run-id", "x"]))
    assert plan.cpu_limit is None and plan.limits is None
    assert plan.limit_note.startswith("no cgroup cpu controller is mounted here")


def wait_for_k6(process: subprocess.Popen, timeout: float = 180) -> psutil.Process:
    """The k6 of bench-local's first round, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        for child in psutil.Process(process.pid).children(recursive=True):
            try:
                if child.name() == "k6" and "run" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    raise AssertionError("k6 never started")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# How each signal reaches `make bench-local`: Ctrl-C (SIGINT) and a closed terminal (SIGHUP) signal
# the terminal's whole foreground process group; `kill` and `timeout` send SIGTERM to make alone,
# which passes it on to its children (GNU make does that for SIGTERM only; on SIGINT and SIGHUP it
# waits for its children, which the terminal signalled too).
SENT = [(signal.SIGINT, "group"), (signal.SIGHUP, "group"), (signal.SIGTERM, "make")]


@pytest.mark.parametrize("sig, to", SENT, ids=[f"{s.name} to the {to}" for s, to in SENT])
def test_a_stopped_run_leaves_nothing_running_and_keeps_an_incomplete_summary(tmp_path, sig, to):
    """Everything under `make bench-local` stops, at once, and the rounds measured are kept."""
    make = subprocess.Popen(["make", "-s", "-C", str(ROOT), "bench-local", "SERVERS=async-style", "PROFILE=smoke",
                             "ROUNDS=2", f"RUN_ID=stopped-{sig.name}-{to}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "MAKEFLAGS": ""})
    run_dir = ROOT / "results" / f"stopped-{sig.name}-{to}"
    try:
        wait_for_k6(make)
        # Let the first round finish, so a measured round is kept; stop during the second.
        deadline = time.monotonic() + 120
        while not (run_dir / "summary.json").exists() or not load(run_dir)["servers"]["async-style"]["rounds"]:
            assert time.monotonic() < deadline and make.poll() is None, "the first round never finished"
            time.sleep(0.5)
        wait_for_k6(make)
        family = descendants(make.pid)
        assert any(p.name() == "k6" for p in family)
        started = time.monotonic()
        if to == "group":
            os.killpg(make.pid, sig)
        else:
            make.send_signal(sig)
        _, stderr = make.communicate(timeout=60)
        took = time.monotonic() - started
        time.sleep(0.5)
        left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"still running after {sig.name}: {[p.cmdline() for p in left]}"
        assert took < 15, f"it took {took:.1f} s to stop"
        summary = load(run_dir)
        assert summary["incomplete"].startswith(f"stopped by {sig.name}"), summary.get("incomplete")
        assert summary["servers"]["async-style"]["rounds"], "the round measured before the stop is kept"
        report = (run_dir / "report.md").read_text()
        assert report.split("\n")[2].startswith("> **This run is incomplete**: stopped by"), report[:400]
        assert f"is incomplete (stopped by {sig.name}" in comparison(summary, summary)
        assert "Stopped" in stderr and "marked incomplete" in stderr
    finally:
        if make.poll() is None:
            make.kill()
        for process in descendants(make.pid):
            process.kill()
        subprocess.run(["rm", "-rf", str(run_dir)])


def test_a_killed_run_leaves_no_server_serving(tmp_path):
    """SIGKILL runs no cleanup: the servers and k6 stop because their parents died (PR_SET_PDEATHSIG)."""
    process = subprocess.Popen(bench_local(tmp_path, "--servers", "async-style", "--profile", "smoke"), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_k6(process)
        family = descendants(process.pid)
        ports = {c.laddr.port for p in family for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert ports, "the server listens"
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + 30
        while left := [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < deadline, f"still running 30 s after SIGKILL: {[p.cmdline() for p in left]}"
            time.sleep(0.2)
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert not ports & listening
    finally:
        for leftover in descendants(process.pid):
            leftover.kill()


def test_the_open_profile_runs_end_to_end(tmp_path):
    command = bench_local(tmp_path, "--profile", "open", "--rounds", "1", "--servers", "async-style",
                          "--open-step-seconds", "2", "--open-measure-seconds", "3")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = load(tmp_path / "e2e")
    found = summary["servers"]["async-style"]["open"]
    assert found["max_rate"] and found["steps"] and found["limited_by"] in ("server", "k6", "search bound")
    assert [level["fraction"] for level in found["levels"]] == [0.5, 0.9]
    assert "## Open model: highest sustainable arrival rate" in (tmp_path / "e2e" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--profile", "fast"], "PROFILE must be one of quick, standard, open, smoke, got 'fast': e.g. PROFILE=quick."),
    (["--rounds", "0"], "ROUNDS must be a whole number of at least 1, got '0': e.g. ROUNDS=2."),
    (["--workers", "many"], "WORKERS must be a whole number of at least 1 or empty, got 'many': e.g. WORKERS=1."),
    (["--servers", "nginx"], "SERVERS may name "),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, args, message):
    result = subprocess.run(bench_local(tmp_path, *args), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
    assert not (tmp_path / "e2e").exists()


def test_an_existing_run_id_is_refused_and_the_run_is_kept(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "summary.json").write_text("{}")
    result = subprocess.run(bench_local(tmp_path, run_id="taken"), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "already holds a run: pick another RUN_ID or delete that folder." in result.stderr
    assert (tmp_path / "taken" / "summary.json").read_text() == "{}"
