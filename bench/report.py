"""`results/<run-id>/report.md` and its plots, from `summary.json` alone (local and cluster runs).

    python -m bench.report results/<run-id>     # (re)write report.md and the PNGs, print the tables
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

from bench.model import K6_SATURATED, Metrics, Summary, SummaryError, load
from bench.observations import observations


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def number(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{unit}"


def percent(fraction: float | None, digits: int = 3) -> str:
    return "–" if fraction is None else f"{100 * fraction:.{digits}f} %"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded into columns, so it reads the same in a terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def measured(summary: Summary) -> list[tuple[str, Metrics]]:
    return [(name, s["aggregate"]) for name, s in summary["servers"].items() if s["aggregate"] is not None]


def k6_peak_share(summary: Summary, server: str) -> float | None:
    """k6's CPU share in the server's busiest round: one saturated round is enough to doubt it."""
    shares = [r["metrics"]["k6_cpu_share"] for r in summary["servers"][server]["rounds"] if r["metrics"]["k6_cpu_share"] is not None]
    return max(shares) if shares else None


def k6_bound(summary: Summary) -> list[str]:
    """The servers with a round in which k6 used K6_SATURATED of its CPUs or more."""
    return [n for n, _ in measured(summary) if (k6_peak_share(summary, n) or 0) >= K6_SATURATED]


def throttled(m: Metrics) -> str:
    t = m.get("throttling")
    if not t or not t["periods"]:
        return "–"
    return f"{100 * t['throttled_periods'] / t['periods']:.0f} % of periods, {t['throttled_s']:.1f} s"


def tables(summary: Summary) -> list[tuple[str, str]]:
    """(title, Markdown table) for every table of the report, in order."""
    rows = measured(summary)
    out = [
        (
            "Latency (successful requests only)",
            table(
                ["Server", "P50", "P90", "P95", "P99", "Avg"],
                [[n, *(ms(m["latency_ms"][k]) for k in ("p50", "p90", "p95", "p99", "avg"))] for n, m in rows],
            ),
        ),
        (
            "Request statistics",
            table(
                ["Server", "Successful", "Failed", "Error Rate", "Failed checks", "Dropped iterations"],
                [
                    [
                        n,
                        count(m["requests"]["successful"]),
                        count(m["requests"]["failed"]),
                        percent(m["requests"]["error_rate"]),
                        count(m["requests"]["checks_failed"]),
                        count(m["requests"]["dropped_iterations"]),
                    ]
                    for n, m in rows
                ],
            ),
        ),
        (
            "Throughput",
            table(
                ["Server", "req/s (whole run)", "req/s (at full load)", "Rounds (req/s each)"],
                [
                    [
                        n,
                        count(m["rps"]),
                        count(m["rps_steady"]),
                        ", ".join(count(r["metrics"]["rps"]) for r in summary["servers"][n]["rounds"]),
                    ]
                    for n, m in rows
                ],
            ),
        ),
        (
            "Who limited the run",
            table(
                ["Server", "CPU limit", "Server CPU avg", "Throttled (whole run)", "k6 CPU, busiest round", "Limited by"],
                [
                    [
                        n,
                        number(m.get("cpu_limit_cores"), unit=" cores") if m.get("cpu_limit_cores") else "none",
                        number(m["server_cpu_cores"]["mean"], unit=" cores"),
                        throttled(m),
                        percent(k6_peak_share(summary, n), 0),
                        "k6 (its throughput is a floor)" if n in k6_bound(summary) else "the server"
                        if k6_peak_share(summary, n) is not None else "–",
                    ]
                    for n, m in rows
                ],
            ),
        ),
        (
            "CPU and memory",
            table(
                ["Server", "CPU avg", "CPU peak", "RSS avg", "RSS peak", "k6 CPU avg", "Others on these CPUs"],
                [
                    [
                        n,
                        number(m["server_cpu_cores"]["mean"], unit=" cores"),
                        number(m["server_cpu_cores"]["peak"], unit=" cores"),
                        number(m["server_rss_mb"]["mean"], 0, " MB"),
                        number(m["server_rss_mb"]["peak"], 0, " MB"),
                        number(m["k6_cpu_cores"]["mean"], unit=" cores")
                        + ("" if m["k6_cpu_share"] is None else f" ({percent(m['k6_cpu_share'], 0)} of its CPUs)"),
                        number(m["others_cpu_cores"]["mean"], unit=" cores"),
                    ]
                    for n, m in rows
                ],
            ),
        ),
    ]
    opened = [(n, s["open"]) for n, s in summary["servers"].items() if s.get("open")]
    if opened:
        open_rows = []
        for n, o in opened:
            levels = {level["fraction"]: level for level in o["levels"]}
            row = [n, count(o["max_rate"]) + (" req/s" if o["max_rate"] else ""), o["limited_by"]]
            for fraction in (0.5, 0.9):
                level = levels.get(fraction)
                lat = level["aggregate"]["latency_ms"] if level else {}
                row += [count(level["rate"]) if level else "–", ms(lat.get("p50")), ms(lat.get("p99"))]
            open_rows.append(row)
        out.append(
            (
                "Open model: highest sustainable arrival rate",
                table(
                    ["Server", "Max rate", "Limited by", "50 % rate", "P50", "P99", "90 % rate", "P50", "P99"],
                    open_rows,
                ),
            )
        )
    return out


def default_workers(server_cpus: list[int] | None, limit: float | None = None) -> str:
    # The servers default WORKERS to the CPUs they may use: taskset narrows them, a quota caps them (rounded up).
    if limit:
        return f"the servers' default, the CPU limit rounded up: {min(len(server_cpus or [1]), math.ceil(limit))}"
    return f"the servers' default, one per pinned CPU: {len(server_cpus)}" if server_cpus else "the servers' default"


def methodology(summary: Summary) -> str:
    s, machine, v = summary["settings"], summary["machine"], summary["versions"]
    cpus = lambda c: "not pinned to CPUs" if not c else f"pinned to CPU {','.join(map(str, c))} ({len(c)})"  # noqa: E731
    lines = [
        f"- Run `{summary['run_id']}`, {summary['created']}, {s['where']}: {machine['description']}",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores, kernel {machine['kernel']}",
        f"- Servers {cpus(s['server_cpus'])}, k6 {cpus(s['k6_cpus'])}",
        "- CPU limit per server: " + (f"{s['server_cpu_limit']:g} cores, the same for every server ({s.get('server_cpu_limit_how', '')}); "
                                      "the ratios under a limit are not the full-core ratios of `make perf` (docs/bench-local.md)"
                                      if s.get("server_cpu_limit") else f"none ({s.get('server_cpu_limit_how') or 'not set'})"),
        f"- Workers per server: {s['workers'] or default_workers(s['server_cpus'], s.get('server_cpu_limit'))}",
        f"- Profile `{s['profile']}`, {s['rounds']} round(s), servers alternating each round: {', '.join(s['servers'])}",
        "- Versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v)),
        "- Latency is of successful requests only; aggregates are medians over rounds, request counts are "
        "summed, peaks are the maximum. CPU is summed over every process of the server (or k6).",
        f"- Command: `{s['command']}`",
    ]
    return "\n".join(lines)


def verification_lines(summary: Summary) -> list[str]:
    return [
        f"- {name}: {'verified' if s['verification']['ok'] else 'REFUSED'}: {s['verification']['reason']}"
        for name, s in summary["servers"].items()
    ]


def render(summary: Summary, plots: Sequence[str]) -> str:
    parts = [f"# Benchmark {summary['run_id']}", ""]
    if saturated := k6_bound(summary):
        parts += [
            f"> **The load generator was the limit** for {', '.join(saturated)}: in at least one round k6 used "
            f"{K6_SATURATED:.0%} or more of its CPUs, so the throughput figures are a floor, not the server's ceiling, "
            "and latency includes k6's own queueing.",
            "",
        ]
    if summary.get("incomplete"):
        parts += [
            f"> **This run is incomplete**: {summary['incomplete']}. The tables hold the rounds that finished; "
            "a server with no finished round is missing from them.",
            "",
        ]
    if summary["settings"]["profile"] == "open":
        parts += [
            "> Open model: the tables below are the runs at 90 % of each server's highest sustainable "
            "arrival rate; the last table has the search's result and the latency at 50 % and 90 %.",
            "",
        ]
    for title, text in tables(summary):
        parts += [f"## {title}", "", text, ""]
    parts += ["## Key observations", "", *(f"- {line}" for line in observations(summary)), ""]
    parts += ["## Verification", "", *verification_lines(summary), ""]
    if plots:
        parts += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    parts += ["## Methodology", "", methodology(summary), ""]
    return "\n".join(parts)


def terminal_text(summary: Summary) -> str:
    """The tables and observations, for the end of a run."""
    parts = [f"This run is incomplete: {summary['incomplete']}.", ""] if summary.get("incomplete") else []
    for title, text in tables(summary):
        parts += [title, text, ""]
    parts += ["Key observations", *(f"- {line}" for line in observations(summary))]
    return "\n".join(parts)


def write_report(run_dir: Path | str) -> Path:
    """Write report.md and the PNG plots beside `run_dir`/summary.json; return report.md's path."""
    from bench.plots import write_plots  # matplotlib loads only when plots are drawn

    run_dir = Path(run_dir)
    summary = load(run_dir)
    plots = write_plots(summary, run_dir)
    path = run_dir / "report.md"
    path.write_text(render(summary, [p.name for p in plots]))
    return path


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.report results/<run-id>", file=sys.stderr)
        return 2
    try:
        path = write_report(argv[0])
    except SummaryError as error:
        print(error, file=sys.stderr)
        return 1
    print(terminal_text(load(path.parent)))
    print(f"\nReport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
