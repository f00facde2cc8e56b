"""PNG plots of a summary: latency percentiles, req/s over time, CPU and memory over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402

from bench.model import Summary  # noqa: E402

PERCENTILES = ("p50", "p90", "p95", "p99", "avg")
DPI = 110


def _colours(names: list[str]) -> dict[str, str]:
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def latency_plot(summary: Summary, path: Path) -> Path:
    measured = [(n, s["aggregate"]) for n, s in summary["servers"].items() if s["aggregate"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(measured), 1)
    colours = _colours([n for n, _ in measured])
    for i, (name, m) in enumerate(measured):
        values = [m["latency_ms"][k] or 0 for k in PERCENTILES]
        xs = [x + (i - (len(measured) - 1) / 2) * width for x in range(len(PERCENTILES))]
        bars = ax.bar(xs, values, width, label=name, color=colours[name])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(PERCENTILES)), [k.upper() if k != "avg" else "Avg" for k in PERCENTILES])
    ax.set_ylabel("latency (ms), successful requests")
    ax.set_title(f"Latency, median over rounds — {summary['run_id']} ({summary['settings']['profile']})")
    _legend(ax)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _legend(ax, **kwargs) -> None:
    # A run whose series are all empty (a refused server, a cluster without cAdvisor) has nothing
    # to label; matplotlib warns on an empty legend.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _series_lines(ax, summary: Summary, key: str, colours: dict[str, str], scale: float = 1.0) -> None:
    for name, server in summary["servers"].items():
        for i, rnd in enumerate(server["rounds"]):
            series = rnd["series"]
            points = [(t, v * scale) for t, v in zip(series["t_s"], series[key]) if v is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=colours[name], alpha=0.9 if i == 0 else 0.45, lw=1.3,
                        label=name if i == 0 else None)


def rps_plot(summary: Summary, path: Path) -> Path:
    colours = _colours(list(summary["servers"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _series_lines(ax, summary, "rps", colours)
    ax.set_xlabel("seconds since k6 started (one line per round, later rounds fainter)")
    ax.set_ylabel("requests per second")
    ax.set_title(f"Throughput over time — {summary['run_id']}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def resources_plot(summary: Summary, path: Path) -> Path:
    colours = _colours(list(summary["servers"]))
    fig, (cpu, mem) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    _series_lines(cpu, summary, "server_cpu_cores", colours)
    for name, server in summary["servers"].items():
        for i, rnd in enumerate(server["rounds"]):
            s = rnd["series"]
            points = [(t, v) for t, v in zip(s["t_s"], s["k6_cpu_cores"]) if v is not None]
            if points:
                xs, ys = zip(*points)
                cpu.plot(xs, ys, color=colours[name], ls="--", lw=1, alpha=0.6,
                         label=f"k6 → {name}" if i == 0 else None)
    first = True
    for server in summary["servers"].values():
        for rnd in server["rounds"]:
            s = rnd["series"]
            points = [(t, v) for t, v in zip(s["t_s"], s.get("others_cpu_cores", [])) if v is not None]
            if points:
                xs, ys = zip(*points)
                cpu.plot(xs, ys, color="grey", ls=":", lw=1, alpha=0.7, label="other processes" if first else None)
                first = False
    cpu.set_ylabel("CPU (cores)")
    cpu.set_title(f"Server CPU (solid), k6 CPU (dashed), others on the same CPUs (dotted) — {summary['run_id']}", fontsize=10)
    cpu.set_ylim(bottom=0)
    cpu.grid(alpha=0.3)
    _legend(cpu, fontsize=8)
    _series_lines(mem, summary, "server_rss_mb", colours)
    mem.set_ylabel("RSS, all processes (MB)")
    mem.set_xlabel("seconds since k6 started (one line per round, later rounds fainter)")
    mem.set_ylim(bottom=0)
    mem.grid(alpha=0.3)
    _legend(mem, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_plots(summary: Summary, run_dir: Path) -> list[Path]:
    if not any(s["aggregate"] for s in summary["servers"].values()):
        return []
    return [
        latency_plot(summary, run_dir / "latency.png"),
        rps_plot(summary, run_dir / "rps.png"),
        resources_plot(summary, run_dir / "resources.png"),
    ]
