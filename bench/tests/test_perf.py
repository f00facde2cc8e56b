"""bench/perf.py's arithmetic and tables, from hand-made numbers: no server, no load."""

from __future__ import annotations

from bench.perf import Load, Measured, Report, ratio_median, render, round_ratios

GO, RUST = "go-net-http", "rust-hyper"


def test_ratio_is_the_median_of_per_round_ratios():
    mine = [Load(6000), Load(3000), Load(5000)]
    peer = [Load(10000), Load(10000), Load(5000)]
    assert round_ratios(mine, peer) == [0.6, 0.3, 1.0]
    # Not median(mine) / median(peer) = 5000 / 10000: a round's noise hits both of its sides.
    assert ratio_median(mine, peer) == 0.6
    assert ratio_median(mine, []) is None


def report(with_peer: bool) -> Report:
    rows = {
        "stdlib-style": [Measured(3000, 10.0, 30.0, cpu_us=300.0), Measured(3300, 9.0, 25.0, cpu_us=310.0)],
        "async-style": [Load(7000, 4.0, 9.0)] * 2,
        RUST: [Load(14000), Load(14000)],
    }
    r = Report(
        machine={"when": "2026-11-27 12:00 UTC", "cpu": "AMD EPYC", "cpus": 2, "kernel": "6.1", "python": "3.11.7"},
        settings={"rounds": 2, "seconds": 8, "connections": 50, "server_cpu": "0", "load_cpu": "1", "cpus": 2,
                  "open_seconds": 15, "command": "make perf"},
        baseline=GO if with_peer else None,
        stands_for={"stdlib-style": GO, "async-style": RUST},
        skipped={} if with_peer else {GO: "its build (`go build`) failed: go: not found"},
        throughput=({GO: [Load(10000), Load(11000)]} if with_peer else {}) | rows,
    )  # fmt: skip
    return r


def test_table_has_a_row_per_server_with_its_ratio():
    text = render(report(with_peer=True))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {GO, "stdlib-style", "async-style"}
    assert "| 3,150 | 0.300 | 0.300 (go-net-http) | 305 µs |" in rows["stdlib-style"]  # median of 3000/10000, 3300/11000
    assert "| 7,000 | 0.668 | 0.500 (rust-hyper) |" in rows["async-style"]  # median of 0.7 and 0.636; 7000/14000
    assert "| 14,000 | 1.336 | – |" in rows[RUST]
    assert rows[GO].startswith(f"| {GO} | 10,500 | 1 |")
    assert "AMD EPYC" in text and "make perf" in text


def test_without_the_peer_the_ratio_column_is_empty_and_says_why():
    text = render(report(with_peer=False))
    stdlib = next(line for line in text.splitlines() if line.startswith("| stdlib-style"))
    assert "| 3,150 | – | – (go-net-http) |" in stdlib
    assert "Not measured: go-net-http: its build (`go build`) failed: go: not found" in text


def test_open_model_rows_put_the_p99s_side_by_side_with_the_generator_load():
    r = report(with_peer=True)
    r.open_model = {
        "async-style": {"rate": 5000, "server": {"p50_ms": 0.8, "p99_ms": 2.7, "errors": 0, "cpu_share": 0.28},
                        "go": {"p50_ms": 0.4, "p99_ms": 1.8, "errors": 0, "cpu_share": 0.31}},
    }  # fmt: skip
    row = next(line for line in render(r).splitlines() if line.startswith("| async-style | 5,000"))
    assert row == "| async-style | 5,000 | 0.80 ms | 2.70 ms | 1.80 ms | 1.50 | 0 / 0 | 0.28 / 0.31 |"


def test_the_seed_table_shows_what_wrk_does_not_count():
    r = report(with_peer=True)
    r.seed = {
        "stdlib-style": Measured(6418, 2020.0, 2580.0, requests=96710, max_ms=2610.0, peak_rss_mib=62.4),
        "stdlib-style-per-connection": Measured(259, 107.0, 8080.0, requests=3892, max_ms=8130.0, timeouts=0),
    }
    text = render(r)
    assert "wrk -t1 -c15000 -d15s --timeout 10s" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| stdlib")}
    assert rows["stdlib-style"].endswith("| 6,418 | 96,710 | 2,020 ms | 2,580 ms | 2,610 ms | 0 | 0 / 0 | 62 MiB |")
    assert "| 259 | 3,892 |" in rows["stdlib-style-per-connection"]


# -- the measuring path, for real: a short run through the same code a full `make perf` takes ------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from bench.tests.conftest import ROOT  # noqa: E402
from servers import registry  # noqa: E402
from servers.process import RUNNERS  # noqa: E402

SHORT = ["--rounds", "1", "--seconds", "1", "--open-seconds", "1", "--seed-connections", "200", "--seed-seconds", "1",
         "--rss-requests", "2000", "--memory-round-seconds", "1"]


def perf(tmp_path, *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "bench.perf", "--results", str(tmp_path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="make perf needs two CPUs")
def test_a_short_real_run_measures_every_runner_and_writes_perf_md_and_json(tmp_path):
    result = perf(tmp_path, *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    (out,) = tmp_path.glob("perf-*")
    report = json.loads((out / "perf.json").read_text())
    assert report["baseline"] == registry.baseline() is not None and not report["skipped"] and not report["incomplete"]
    assert set(report["throughput"]) == set(RUNNERS) == set(report["seed"]) == set(report["scaling"])
    for name, (load,) in report["throughput"].items():
        assert load["rps"] > 0 and load["requests"] > 0 and load["cpu_us"] > 0, name
        assert load["timeouts"] == load["socket_errors"] == load["non_2xx"] == 0, name
    assert set(report["open_model"]) == set(registry.names("stand-in"))
    for row in report["open_model"].values():
        assert row["server"]["requests"] > 0 and row["go"]["requests"] > 0
    assert set(report["memory"]) == set(registry.names())
    text = (out / "perf.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.split("## Throughput")[1].split("##")[0].splitlines()
            if line.startswith("| ") and not line.startswith("| server")}
    assert set(rows) == set(RUNNERS)
    assert rows[registry.baseline()].split("|")[3].strip() == "1"
    for name in registry.names("stand-in"):
        cells = [c.strip() for c in rows[name].split("|")]
        assert float(cells[3]) > 0 and cells[4].endswith(f"({registry.get(name).stands_for})"), rows[name]
    assert "wrk -t1 -c200 -d1s --timeout 10s" in text and text == result.stdout.split("\nperf: ")[0].rstrip() + "\n"


def test_one_cpu_is_refused_in_one_line_before_anything_runs(tmp_path):
    if shutil.which("taskset") is None:
        pytest.skip("taskset is missing: apt-get install util-linux")
    result = perf(tmp_path, *SHORT, prefix=("taskset", "-c", str(min(os.sched_getaffinity(0)))))
    assert result.returncode == 2 and result.stderr.startswith("perf: this process may use only CPU")
    assert result.stderr.count("\n") == 1 and not list(tmp_path.iterdir())


def test_a_missing_wrk_is_refused_naming_the_package(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("taskset", "curl"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    result = perf(tmp_path, *SHORT, env={"PATH": str(bin_dir)})
    assert result.returncode == 2 and result.stderr == "perf: `wrk` is not installed: apt-get install wrk.\n"
