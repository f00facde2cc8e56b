"""report.md and the plots, written from summary.json alone."""

from __future__ import annotations

from bench.model import save
from bench.report import main, render, write_report
from bench.tests.conftest import metrics, summary


def test_report_has_the_tables_observations_plots_and_methodology(two_servers, tmp_path):
    save(two_servers, tmp_path)
    report = write_report(tmp_path).read_text()
    for heading in (
        "## Latency (successful requests only)",
        "## Request statistics",
        "## Throughput",
        "## CPU and memory",
        "## Key observations",
        "## Methodology",
    ):
        assert heading in report
    assert "| async-style  | 0.550 ms | 1.100 ms | 1.650 ms | 2.200 ms | 0.660 ms |" in report
    assert "Successful | Failed | Error Rate" in report
    assert "Test CPU, 2 cores, kernel 6.0" in report
    assert "Command: `make bench-local PROFILE=quick`" in report
    for png in ("latency.png", "rps.png", "resources.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report
    assert "load generator was the limit" not in report


def test_a_saturated_k6_makes_throughput_a_floor():
    s = summary({"async-style": [metrics(0.5, 2, 8000, k6_share=0.95), metrics(0.5, 2, 8000, k6_share=0.92)]})
    assert "**The load generator was the limit** for async-style" in render(s, [])


def test_one_round_with_k6_at_85_percent_makes_the_run_k6_bound():
    # The median over the two rounds is 72 %: one round at 85 % is enough to doubt the run.
    s = summary({"async-style": [metrics(0.5, 2, 8000, k6_share=0.85), metrics(0.5, 2, 8000, k6_share=0.60)],
                 "stdlib-style": [metrics(1.0, 4, 4000, k6_share=0.40)] * 2})
    text = render(s, [])
    assert text.startswith("# Benchmark fixture\n\n> **The load generator was the limit** for async-style: in at least one round")
    rows = {line.split("|")[1].strip(): line for line in text.split("## Who limited the run")[1].split("##")[0].splitlines()
            if line.startswith("| ") and "Server" not in line}
    cells = {name: [c.strip() for c in row.strip("|").split("|")] for name, row in rows.items()}
    assert cells["async-style"][-2:] == ["85 %", "k6 (its throughput is a floor)"]
    assert cells["stdlib-style"][-2:] == ["40 %", "the server"]


def test_the_cpu_limit_and_its_throttling_are_reported():
    limited = metrics(0.5, 2, 3000, k6_share=0.5)
    limited["cpu_limit_cores"], limited["throttling"] = 0.3, {"periods": 2000, "throttled_periods": 500, "throttled_s": 1.25}
    s = summary({"async-style": [limited, limited]})
    s["settings"]["server_cpu_limit"], s["settings"]["server_cpu_limit_how"] = 0.3, "cgroup v1, 10 ms period"
    text = render(s, [])
    row = next(line for line in text.split("## Who limited the run")[1].splitlines() if line.startswith("| async-style"))
    assert "| 0.30 cores " in row and "| 25 % of periods, 2.5 s " in row and "the server" in row
    assert "- CPU limit per server: 0.3 cores, the same for every server (cgroup v1, 10 ms period)" in text


def test_failures_are_shown_in_the_request_table():
    s = summary({"async-style": [metrics(0.5, 2, 100, failed=30)]})
    assert "| async-style | 3,000      | 30     | 0.990 %    |" in render(s, [])


def test_open_model_table_appears_when_the_run_has_one(two_servers):
    agg = two_servers["servers"]["async-style"]["aggregate"]
    two_servers["servers"]["async-style"]["open"] = {
        "max_rate": 6000,
        "limited_by": "server",
        "steps": [],
        "levels": [{"fraction": 0.5, "rate": 3000, "aggregate": agg}, {"fraction": 0.9, "rate": 5400, "aggregate": agg}],
    }
    report = render(two_servers, [])
    assert "## Open model: highest sustainable arrival rate" in report
    assert "| async-style | 6,000 req/s | server     | 3,000     | 0.550 ms | 2.200 ms | 5,400" in report


def test_the_command_line_rewrites_a_report_and_fails_in_one_line_without_a_summary(two_servers, tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "summary.json does not exist" in capsys.readouterr().err
    save(two_servers, tmp_path)
    assert main([str(tmp_path)]) == 0
    assert "Latency (successful requests only)" in capsys.readouterr().out


def test_plots_of_a_run_without_samples_are_written_without_warnings(two_servers, tmp_path):
    # A cluster run without cAdvisor, or a refused server, leaves every series empty; pytest turns
    # matplotlib's "no artists with labels" warning into an error.
    for server in two_servers["servers"].values():
        for rnd in server["rounds"]:
            rnd["series"] = {key: [None] * len(values) for key, values in rnd["series"].items()}
    two_servers["settings"].update(server_cpus=[], k6_cpus=[])
    save(two_servers, tmp_path)
    report = write_report(tmp_path).read_text()
    assert "Servers not pinned to CPUs, k6 not pinned to CPUs" in report
    assert (tmp_path / "resources.png").read_bytes().startswith(b"\x89PNG")
