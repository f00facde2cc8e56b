"""The open-model search against stand-in servers with a known capacity."""

from __future__ import annotations

from bench import openmodel
from bench.openmodel import search
from bench.tests.conftest import metrics


def stand_in(capacity: int, k6_limit: int = 10**9):
    """A probe whose server drops what arrives above `capacity`; k6 saturates above `k6_limit`."""
    rates = []

    def probe(rate: int):
        rates.append(rate)
        m = metrics(0.5, 2.0, min(rate, capacity), k6_share=0.95 if rate > k6_limit else 0.4)
        m["requests"]["dropped_iterations"] = max(0, rate - capacity) * 30
        return m

    return probe, rates


def test_finds_the_capacity_within_an_eighth_of_the_last_doubling():
    probe, rates = stand_in(3000)
    result = search(probe, lambda _: None)
    assert rates[:4] == [500, 1000, 2000, 4000]
    assert 3000 - 2000 / 8 <= result["max_rate"] <= 3000
    assert result["limited_by"] == "server"
    assert len(rates) == 4 + openmodel.BISECTIONS
    assert [s["sustained"] for s in result["steps"]][:4] == [True, True, True, False]


def test_a_saturated_k6_at_the_edge_is_named_as_the_limit():
    probe, _ = stand_in(50_000, k6_limit=6000)
    probe_with_k6_drops = lambda rate: probe(rate) if rate <= 6000 else _dropping(probe(rate))  # noqa: E731
    result = search(probe_with_k6_drops, lambda _: None)
    assert result["limited_by"] == "k6"


def _dropping(m):
    m["requests"]["dropped_iterations"] = m["requests"]["successful"]
    return m


def test_a_server_that_never_falls_behind_stops_at_the_bound():
    probe, rates = stand_in(10**9)
    result = search(probe, lambda _: None, max_rate=5000)
    assert result["max_rate"] == rates[-1] == 4000
    assert result["limited_by"] == "search bound"


def test_a_slow_server_is_searched_downwards():
    probe, rates = stand_in(180)
    result = search(probe, lambda _: None)
    assert rates[:3] == [500, 250, 125]
    assert 180 - 125 / 8 <= result["max_rate"] <= 180
    assert result["limited_by"] == "server"


def test_errors_above_a_tenth_of_a_percent_are_not_sustained():
    result = search(lambda rate: metrics(0.5, 2.0, rate, failed=rate * 30 // 500), lambda _: None)
    assert result["max_rate"] is None
    assert [s["rate"] for s in result["steps"]] == [500, 250, 125, 62]
