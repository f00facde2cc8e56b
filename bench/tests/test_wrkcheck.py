"""bench/wrkcheck.py: a bench-local run's servers again under wrk, same CPU limit, and the verdict."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench import wrkcheck
from bench.tests.conftest import metrics, summary


def test_within_20_percent_of_wrk_is_server_bound():
    assert wrkcheck.verdict(8000, 10000).startswith("the server")
    assert wrkcheck.verdict(7900, 10000).startswith("k6")
    assert wrkcheck.verdict(12000, 10000).startswith("the server")


def test_the_newest_run_is_the_default_and_an_id_is_a_folder_in_results(tmp_path):
    with pytest.raises(wrkcheck.CheckError, match="run make bench-local first"):
        wrkcheck.run_folder("", tmp_path)
    for name in ("b-older", "a-newer"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
        time.sleep(0.01)
    assert wrkcheck.run_folder("", tmp_path) == tmp_path / "a-newer"
    assert wrkcheck.run_folder("b-older", tmp_path) == tmp_path / "b-older"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"where": "cluster"}, "cluster run"),
        ({"profile": "open"}, "open-profile run"),
    ],
)
def test_runs_it_cannot_repeat_are_one_line(tmp_path, capsys, change, message):
    s = summary({"async-style": [metrics(1.0, 4.0, 3000)]})
    s["settings"].update(change)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(s))
    assert wrkcheck.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "wrkcheck.md").exists()


def test_a_run_whose_k6_fell_short_of_wrk_is_called_k6_bound(tmp_path):
    # A real wrk round against async-style under a 0.25-core quota, as bench-local's default runs
    # it; the run's own k6 figure is set far below what the server can do.
    cpus = sorted(os.sched_getaffinity(0))
    s = summary({"async-style": [metrics(1.0, 4.0, 50)]})
    s["settings"].update(server_cpus=cpus[:1], k6_cpus=cpus[-1:], server_cpu_limit=0.25)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(s))
    before = (run / "summary.json").read_text()
    assert wrkcheck.main([str(run), "--rounds", "1", "--seconds", "2"]) == 0
    table = (run / "wrkcheck.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| async-style"))
    assert row.endswith("| k6 (more than 20 % below wrk) |"), table
    wrk_rps = json.loads((run / "wrkcheck.json").read_text())["wrk_rps"]["async-style"]
    assert len(wrk_rps) == 1 and wrk_rps[0] > 500, table  # the server answered at its limit's pace
    assert "0.25 cores" in table
    assert (run / "summary.json").read_text() == before
