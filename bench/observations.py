""""Key observations": sentences computed from a summary's numbers, never written by hand."""

from __future__ import annotations

from itertools import combinations

from bench.model import K6_SATURATED, Metrics, Summary

PERCENTILES = ("p50", "p90", "p95", "p99")
# Other processes using a tenth of a core on the pinned CPUs visibly move a run's numbers.
SHARED = 0.1


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _ratio(high: float, low: float) -> str:
    return f"{high / low:.2f}×" if low > 0 else "∞×"


def _throughput(m: Metrics) -> float | None:
    return m["rps_steady"] if m["rps_steady"] is not None else m["rps"]


def latency_lines(a: str, ma: Metrics, b: str, mb: Metrics) -> list[str]:
    """Which server is faster at which percentile, and by how much."""
    wins = []
    for key in PERCENTILES:
        la, lb = ma["latency_ms"][key], mb["latency_ms"][key]
        if la is None or lb is None:
            continue
        winner, fast, slow = (a, la, lb) if la <= lb else (b, lb, la)
        wins.append((key, winner, fast, slow))
    if not wins:
        return []
    detail = lambda k, f, s: f"{k.upper()} {_ms(f)} vs {_ms(s)} ({_ratio(s, f)} lower)"  # noqa: E731
    winners = {w for _, w, _, _ in wins}
    if len(winners) == 1:
        other = b if winners == {a} else a
        return [
            f"{winners.pop()} answers faster than {other} at every percentile: "
            + "; ".join(detail(k, f, s) for k, _, f, s in wins)
            + "."
        ]
    return [f"At {k.upper()} {w} is faster: {_ms(f)} vs {_ms(s)} ({_ratio(s, f)} lower)." for k, w, f, s in wins]


def throughput_lines(a: str, ma: Metrics, b: str, mb: Metrics, open_model: bool = False) -> list[str]:
    lines = []
    ta, tb = _throughput(ma), _throughput(mb)
    # In the open model k6 sets the rate, so a req/s ratio only restates the chosen rates.
    if ta and tb and not open_model:
        (hi, thi), (lo, tlo) = sorted([(a, ta), (b, tb)], key=lambda x: -x[1])
        when = " at full load" if ma["rps_steady"] is not None and mb["rps_steady"] is not None else ""
        lines.append(
            f"{hi} served {_ratio(thi, tlo)} the requests per second of {lo} ({thi:,.0f} vs {tlo:,.0f} req/s{when})."
        )
    ca, cb = ma["server_cpu_cores"]["mean"], mb["server_cpu_cores"]["mean"]
    # Both over the whole run: the CPU mean includes the ramps, so the req/s must too.
    if ma["rps"] and mb["rps"] and ca and cb:
        ea, eb = ma["rps"] / ca, mb["rps"] / cb
        (hi, ehi), (lo, elo) = sorted([(a, ea), (b, eb)], key=lambda x: -x[1])
        lines.append(
            f"CPU efficiency: {hi} did {ehi:,.0f} req/s per busy core, {lo} {elo:,.0f} "
            f"({_ratio(ehi, elo)} the work per unit of CPU)."
        )
    ra, rb = ma["server_rss_mb"]["peak"], mb["server_rss_mb"]["peak"]
    if ra and rb:
        lines.append(f"Peak memory (RSS, all processes): {a} {ra:,.0f} MB, {b} {rb:,.0f} MB.")
    return lines


def server_lines(summary: Summary, name: str, m: Metrics) -> list[str]:
    lines = []
    req = m["requests"]
    if req["failed"] or req["checks_failed"]:
        lines.append(
            f"{name}: {req['failed']:,} request(s) failed ({100 * req['error_rate']:.3f} %) and "
            f"{req['checks_failed']:,} check(s) failed; latency above excludes the failures."
        )
    shares = [r["metrics"]["k6_cpu_share"] for r in summary["servers"][name]["rounds"] if r["metrics"]["k6_cpu_share"] is not None]
    if shares and max(shares) >= K6_SATURATED:
        lines.append(
            f"{name}: k6 used {max(shares):.0%} of its CPUs in its busiest round, so the load generator was the "
            "limit: its throughput is a floor."
        )
    elif shares:
        lines.append(f"{name}: server-bound: k6 used at most {max(shares):.0%} of its CPUs in any round.")
    p50, p99 = m["latency_ms"]["p50"], m["latency_ms"]["p99"]
    if p50 and p99:
        lines.append(f"{name}: the tail (P99) is {_ratio(p99, p50)} its median (P50).")
    rates = [r["metrics"]["rps"] for r in summary["servers"][name]["rounds"]]
    if len(rates) > 1 and m["rps"]:
        spread = (max(rates) - min(rates)) / m["rps"]
        lines.append(
            f"{name}: req/s varied by {spread:.0%} between its {len(rates)} rounds "
            f"({min(rates):,.0f}–{max(rates):,.0f}); the tables give medians."
        )
    return lines


def observations(summary: Summary) -> list[str]:
    servers = summary["servers"]
    measured = [(n, s["aggregate"]) for n, s in servers.items() if s["aggregate"] is not None]
    lines = [f"{n} was not measured: {s['verification']['reason']}" for n, s in servers.items() if not s["verification"]["ok"]]
    for (a, ma), (b, mb) in combinations(measured, 2):
        open_model = summary["settings"]["profile"] == "open"
        lines += latency_lines(a, ma, b, mb) + throughput_lines(a, ma, b, mb, open_model)
    opened = [(n, s["open"]["max_rate"]) for n, s in servers.items() if s.get("open") and s["open"]["max_rate"]]
    for (a, ra), (b, rb) in combinations(opened, 2):
        (hi, rhi), (lo, rlo) = sorted([(a, ra), (b, rb)], key=lambda x: -x[1])
        lines.append(f"Open model: {hi} sustained {_ratio(rhi, rlo)} the arrival rate of {lo} ({rhi:,.0f} vs {rlo:,.0f} req/s).")
    for n, s in servers.items():
        o = s.get("open")
        if o and o["limited_by"] != "server":
            lines.append(f"{n}: the open-model search was stopped by {o['limited_by']}, so its max rate is a floor.")
    if not any(m["requests"]["failed"] or m["requests"]["checks_failed"] for _, m in measured) and measured:
        lines.append("No request and no check failed.")
    for n, m in measured:
        lines += server_lines(summary, n, m)
    limit = summary["settings"].get("server_cpu_limit")
    if limit and len(measured) > 1:
        lines.append(
            f"Every server ran under the same CPU limit, {limit:g} cores (a CFS quota, as a pod's limits.cpu): the "
            "ratios above are between limited servers, which a quota wakes and throttles every 10 ms period, so they "
            "are not the full-core ratios of `make perf`; both are real, for different deployments."
        )
    others = [m["others_cpu_cores"]["mean"] for _, m in measured if m["others_cpu_cores"]["mean"] is not None]
    if others and max(others) >= SHARED:
        lines.append(
            f"Other processes took up to {max(others):.2f} cores of the benchmark's CPUs (median per run): the "
            "machine was shared, so absolute numbers are noisy; compare servers within this run only."
        )
    return lines
