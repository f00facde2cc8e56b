"""`make compare`: two runs side by side, and one line when a run is missing."""

from __future__ import annotations

import subprocess

from bench.compare import change, comparison, main
from bench.model import save
from bench.tests.conftest import ROOT, metrics, summary


def test_change_is_relative_to_a():
    assert change(2.0, 3.0) == "+50.0 %"
    assert change(4.0, 3.0) == "-25.0 %"
    assert change(None, 3.0) == "–"
    assert change(0, 0) == "–"


def test_comparison_has_p50_p99_and_requests_per_server():
    a = summary({"async-style": [metrics(0.5, 2.0, 1000)]}, run_id="musl")
    b = summary({"async-style": [metrics(0.4, 3.0, 1500)]}, run_id="glibc")
    text = comparison(a, b)
    assert "| Server      | Metric              | musl     | glibc    | Change  |" in text
    assert "| async-style | P50                 | 0.500 ms | 0.400 ms | -20.0 % |" in text
    assert "| async-style | P99                 | 2.000 ms | 3.000 ms | +50.0 % |" in text
    assert "| async-style | Successful requests | 30,000   | 45,000   | +50.0 % |" in text


def test_different_settings_are_flagged():
    a = summary({"async-style": [metrics(0.5, 2.0, 1000)]})
    b = summary({"async-style": [metrics(0.5, 2.0, 1000)], "stdlib-style": [metrics(1, 2, 3)]})
    b["settings"]["profile"] = "standard"
    text = comparison(a, b)
    assert text.startswith("Note: the runs differ in profile 'quick' vs 'standard'")
    assert "In one run only: stdlib-style." in text


def test_runs_are_found_by_folder(tmp_path, capsys):
    save(summary({"async-style": [metrics(0.5, 2.0, 1000)]}, run_id="a"), tmp_path / "a")
    save(summary({"async-style": [metrics(0.5, 2.0, 1000)]}, run_id="b"), tmp_path / "b")
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "+0.0 %" in capsys.readouterr().out


def test_make_compare_says_in_one_line_which_run_is_missing(tmp_path):
    save(summary({"async-style": [metrics(0.5, 2.0, 1000)]}), tmp_path / "a")
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "compare", f"A={tmp_path / 'a'}", "B=no-such-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("B=no-such-run: no run there") and first.endswith("pick a run id from `ls results/`.")
