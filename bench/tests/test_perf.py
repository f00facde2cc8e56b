"""bench/perf.py's arithmetic and tables, from hand-made numbers: no server, no load."""

from __future__ import annotations

from bench.perf import GO, Load, Measured, Report, ratio_median, render, round_ratios


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
    }
    r = Report(
        machine={"when": "2026-11-27 12:00 UTC", "cpu": "AMD EPYC", "cpus": 2, "kernel": "6.1", "python": "3.11.7"},
        settings={"rounds": 2, "seconds": 8, "connections": 50, "server_cpu": "0", "load_cpu": "1", "cpus": 2,
                  "open_seconds": 15, "command": "make perf"},
        peer_note="built" if with_peer else "no Go peer: `go` is not installed",
        throughput=({GO: [Load(10000), Load(11000)]} if with_peer else {}) | rows,
    )  # fmt: skip
    return r


def test_table_has_a_row_per_server_with_its_ratio():
    text = render(report(with_peer=True))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {GO, "stdlib-style", "async-style"}
    assert "| 3,150 | 0.300 | 305 µs |" in rows["stdlib-style"]  # median of 3000/10000 and 3300/11000
    assert "| 7,000 | 0.668 |" in rows["async-style"]  # median of 0.7 and 0.636
    assert "AMD EPYC" in text and "make perf" in text


def test_without_the_peer_the_ratio_column_is_empty_and_says_why():
    text = render(report(with_peer=False))
    stdlib = next(line for line in text.splitlines() if line.startswith("| stdlib-style"))
    assert "| 3,150 | – |" in stdlib
    assert "`go` is not installed" in text


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
