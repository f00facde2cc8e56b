"""PROFILE=open: each server's highest sustainable arrival rate, then its latency at 50 % and 90 % of it.

The search doubles a constant arrival rate from START_RATE until a step is not sustained (k6
dropped ≥ 1 % of the arrivals, or ≥ 0.1 % of requests failed), or halves it until one is, then
bisects between the last good and the first bad rate a fixed number of times, so it ends in
bounded time whatever the server does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.metrics import aggregate
from bench.model import K6_SATURATED, Metrics, OpenLevel, OpenResult, OpenStep, Summary

if TYPE_CHECKING:
    from bench.local import Plan

START_RATE = 500  # req/s; the gunicorn side sustains several times this on one core (verified-here.md)
MIN_RATE = 50  # below this a loopback server is broken, not slow
# Twice the ~8,400 req/s one k6 core generates (verified-here.md), per k6 CPU: past it k6 is the
# limit anyway, and bench.js lets k6 hold up to a second of arrivals in VUs (~1 MB each).
MAX_RATE_PER_K6_CPU = 16_000
BISECTIONS = 3  # the answer lands within 1/8 of the last doubling
STEP_S = 10  # per probe: ~9 probes per server, ~1.5 min (bench.local's --open-step-seconds)
MEASURE_S = 20  # per latency level and round (--open-measure-seconds)
MAX_DROPPED = 0.01
MAX_ERRORS = 0.001
FRACTIONS = (0.5, 0.9)


def dropped_fraction(m: Metrics) -> float:
    requests = m["requests"]
    arrivals = requests["successful"] + requests["failed"] + requests["dropped_iterations"]
    return requests["dropped_iterations"] / arrivals if arrivals else 1.0


def step(rate: int, m: Metrics) -> OpenStep:
    dropped = dropped_fraction(m)
    return {
        "rate": rate,
        "dropped_pct": 100 * dropped,
        "error_rate": m["requests"]["error_rate"],
        "k6_cpu_share": m["k6_cpu_share"],
        "sustained": dropped < MAX_DROPPED and m["requests"]["error_rate"] < MAX_ERRORS,
    }


def search(probe, say, max_rate: int = MAX_RATE_PER_K6_CPU) -> OpenResult:
    """Find the highest sustained rate up to `max_rate` with `probe(rate) -> Metrics`."""
    steps: list[OpenStep] = []

    def try_rate(rate: int) -> bool:
        s = step(rate, probe(rate))
        steps.append(s)
        k6 = "–" if s["k6_cpu_share"] is None else f"{s['k6_cpu_share']:.0%}"
        say(
            f"    {rate:>7,} req/s: {'sustained' if s['sustained'] else 'NOT sustained'} "
            f"(dropped {s['dropped_pct']:.2f} %, errors {100 * s['error_rate']:.3f} %, k6 CPU {k6})"
        )
        return s["sustained"]

    good, bad, rate = None, None, START_RATE
    if try_rate(rate):
        good = rate
        while good * 2 <= max_rate:
            if not try_rate(good * 2):
                bad = good * 2
                break
            good *= 2
    else:
        # A crowded machine may not sustain even the first step: walk down instead.
        bad = rate
        while bad // 2 >= MIN_RATE:
            if try_rate(bad // 2):
                good = bad // 2
                break
            bad //= 2
    if good is not None and bad is not None:
        for _ in range(BISECTIONS):
            middle = (good + bad) // 2
            if middle in (good, bad):
                break
            if try_rate(middle):
                good = middle
            else:
                bad = middle
    edge = [s for s in steps if s["rate"] in (good, bad)]
    if bad is None:
        limited_by = "search bound"
    elif any((s["k6_cpu_share"] or 0) >= K6_SATURATED for s in edge):
        limited_by = "k6"
    else:
        limited_by = "server"
    return {"max_rate": good, "limited_by": limited_by, "steps": steps, "levels": []}


def run(plan: Plan, summary: Summary, servers: list[str]) -> None:
    from bench.local import measure, now, record, save, say, server_running

    for server in servers:
        say(f"{server}: searching the highest sustainable arrival rate ({plan.open_step_s} s steps)")
        with server_running(plan, server, f"{server}-search") as live:

            def probe(rate: int) -> Metrics:
                extra = {"RATE": str(rate), "DURATION": f"{plan.open_step_s}s"}
                name, label = f"{server}-probe{rate}", f"{server} probe {rate:,} req/s"
                return measure(plan, server, live, name, label, extra, plan.open_step_s)[0]

            summary["servers"][server]["open"] = search(probe, say, MAX_RATE_PER_K6_CPU * len(plan.k6_cpus))
        save(summary, plan.run_dir)

    levels: dict[str, dict[float, list[Metrics]]] = {s: {f: [] for f in FRACTIONS} for s in servers}
    for number in range(1, plan.rounds + 1):
        for server in servers:
            result = summary["servers"][server]["open"]
            if not result["max_rate"]:
                continue
            with server_running(plan, server, f"{server}-round{number}") as live:
                for fraction in FRACTIONS:
                    rate = max(1, int(result["max_rate"] * fraction))
                    started = now()
                    extra = {"RATE": str(rate), "DURATION": f"{plan.open_measure_s}s"}
                    label = f"{server} round {number}/{plan.rounds} @{fraction:.0%}"
                    name = f"{server}-round{number}-at{int(fraction * 100)}"
                    metrics, series = measure(plan, server, live, name, label, extra, plan.open_measure_s)
                    levels[server][fraction].append(metrics)
                    if fraction == FRACTIONS[-1]:
                        record(summary, server, {"round": number, "started": started, "target_rate": rate, "metrics": metrics, "series": series})
            result["levels"] = [
                OpenLevel(fraction=f, rate=max(1, int(result["max_rate"] * f)), aggregate=aggregate(levels[server][f]))
                for f in FRACTIONS
                if levels[server][f]
            ]
            save(summary, plan.run_dir)
