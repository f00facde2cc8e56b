"""`make compare A=<run> B=<run>`: per server, P50, P99 and successful requests in two runs, and the change.

A run is a run id under results/ or a path to a run folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from bench.model import Summary, SummaryError, load
from bench.report import count, ms, table

ROOT = Path(__file__).resolve().parents[1]


def resolve(name: str, which: str, results: Path = ROOT / "results") -> Path:
    if not name:
        raise SummaryError(f"{which} is not set: name two runs, e.g. make compare A=<run-id> B=<run-id> (runs are in results/).")
    path = Path(name)
    run_dir = path if path.is_dir() else results / name
    if not (run_dir / "summary.json").is_file():
        raise SummaryError(f"{which}={name}: no run there ({run_dir}/summary.json is missing): pick a run id from `ls results/`.")
    return run_dir


def change(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    if a == 0:
        return "–" if b == 0 else "new"
    return f"{100 * (b - a) / a:+.1f} %"


def comparison(a: Summary, b: Summary) -> str:
    """The table, with a warning line first when the two runs were not set up alike."""
    ida, idb = a["run_id"], b["run_id"]
    if ida == idb:
        ida, idb = f"A ({ida})", f"B ({idb})"
    rows = []
    for server in [s for s in a["servers"] if s in b["servers"]]:
        ma, mb = a["servers"][server]["aggregate"], b["servers"][server]["aggregate"]
        if not ma or not mb:
            rows.append([server, "(not measured in both runs)", "–", "–", "–"])
            continue
        for label, key in (("P50", "p50"), ("P99", "p99")):
            va, vb = ma["latency_ms"][key], mb["latency_ms"][key]
            rows.append([server, label, ms(va), ms(vb), change(va, vb)])
        sa, sb = ma["requests"]["successful"], mb["requests"]["successful"]
        rows.append([server, "Successful requests", count(sa), count(sb), change(sa, sb)])
        fa, fb = ma["requests"]["failed"], mb["requests"]["failed"]
        if fa or fb:
            rows.append([server, "Failed requests", count(fa), count(fb), change(fa, fb)])
    differences = [f"{key} {a['settings'][key]!r} vs {b['settings'][key]!r}"
                   for key in ("profile", "rounds", "workers") if a["settings"][key] != b["settings"][key]]
    notes = ["the runs differ in " + ", ".join(differences)] if differences else []
    notes += [f"{which} is incomplete ({run['incomplete']})" for which, run in (("A", a), ("B", b)) if run.get("incomplete")]
    only = sorted(set(a["servers"]) ^ set(b["servers"]))
    out = [table(["Server", "Metric", ida, idb, "Change"], rows)]
    if notes:
        out.insert(0, "Note: " + "; ".join(notes) + "; request totals are not like for like.\n")
    if only:
        out.append(f"\nIn one run only: {', '.join(only)}.")
    return "\n".join(out)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.compare <run A> <run B>", file=sys.stderr)
        return 2
    try:
        a = load(resolve(argv[0], "A"))
        b = load(resolve(argv[1], "B"))
    except SummaryError as error:
        print(error, file=sys.stderr)
        return 2
    print(comparison(a, b))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
