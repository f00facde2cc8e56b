"""Key observations are computed from the numbers: change a number, the sentence changes."""

from __future__ import annotations

from bench.observations import observations
from bench.tests.conftest import metrics, summary


def test_the_faster_server_and_the_ratios_are_named(two_servers):
    lines = observations(two_servers)
    text = "\n".join(lines)
    assert "async-style answers faster than stdlib-style at every percentile" in text
    assert "P50 0.550 ms vs 1.100 ms (2.00× lower)" in text
    assert "async-style served 2.03× the requests per second of stdlib-style" in text
    assert "CPU efficiency: async-style" in text
    assert "No request and no check failed." in lines


def test_mixed_winners_get_one_line_per_percentile():
    s = summary({"stdlib-style": [metrics(0.4, 9.0, 3000)], "async-style": [metrics(0.5, 2.0, 3000)]})
    lines = observations(s)
    assert "At P50 stdlib-style is faster: 0.400 ms vs 0.500 ms (1.25× lower)." in lines
    assert "At P99 async-style is faster: 2.000 ms vs 9.000 ms (4.50× lower)." in lines


def test_failures_and_a_saturated_load_generator_are_said():
    s = summary({"stdlib-style": [metrics(1.0, 4.0, 3000, failed=12, k6_share=0.97)], "async-style": [metrics(0.5, 2, 6000)]})
    text = "\n".join(observations(s))
    assert "stdlib-style: 12 request(s) failed" in text
    assert "stdlib-style: k6 used 97% of its CPUs in its busiest round, so the load generator was the limit" in text
    assert "async-style: server-bound: k6 used at most 50% of its CPUs in any round." in text
    assert "No request and no check failed." not in text


def test_a_refused_server_is_reported_with_its_reason(two_servers):
    two_servers["servers"]["stdlib-style"]["verification"] = {"ok": False, "reason": "GET /hash failed the check `x`"}
    two_servers["servers"]["stdlib-style"]["aggregate"] = None
    lines = observations(two_servers)
    assert lines[0] == "stdlib-style was not measured: GET /hash failed the check `x`"
    assert not any("faster" in line for line in lines)


def test_a_shared_machine_is_mentioned():
    s = summary({"async-style": [metrics(0.5, 2.0, 3000)]})
    s["servers"]["async-style"]["aggregate"]["others_cpu_cores"]["mean"] = 0.4
    assert any("machine was shared" in line for line in observations(s))


def test_the_open_model_compares_sustainable_rates_not_the_chosen_ones(two_servers):
    two_servers["settings"]["profile"] = "open"
    for name, rate in (("stdlib-style", 3000), ("async-style", 7500)):
        two_servers["servers"][name]["open"] = {"max_rate": rate, "limited_by": "server", "steps": [], "levels": []}
    lines = observations(two_servers)
    assert not any("the requests per second of" in line for line in lines)
    assert "Open model: async-style sustained 2.50× the arrival rate of stdlib-style (7,500 vs 3,000 req/s)." in lines
