"""wrk, the closed-loop load the reliability tests, `make memory` and `make perf` send: its output
read in one place, and what 15,000 connections need from this machine checked before they open.

wrk counts a timeout for an answer that arrives later than `--timeout`; a request that is never
answered before the run ends is not counted at all (checked here against a server that never
answers: 0 timeouts). So a run that answered too few requests says so through `requests`, not
`timeouts`, and the callers check both.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Load:
    """One wrk run: requests per second, the latency it saw (closed loop) and what went wrong."""

    rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: str = ""  # wrk's own error lines, joined
    requests: int = 0
    max_ms: float | None = None
    timeouts: int = 0
    socket_errors: int = 0  # connect, read and write errors
    non_2xx: int = 0

    @property
    def clean(self) -> bool:
        return not (self.timeouts or self.socket_errors or self.non_2xx)


def _duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> Load:
    """The numbers of one `wrk` run (with `--latency` for the percentiles)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise ValueError("wrk printed no Requests/sec line: " + output.strip()[-300:])
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.M))
    stats = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+(?:us|ms|s|m))", output, re.M)
    requests = re.search(r"(\d+) requests in", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    connect, read, write, timeouts = map(int, sockets.groups()) if sockets else (0, 0, 0, 0)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        rps=float(rps.group(1)),
        p50_ms=_duration_ms(latency["50"]) if "50" in latency else None,
        p99_ms=_duration_ms(latency["99"]) if "99" in latency else None,
        errors="; ".join(line.strip() for line in output.splitlines() if "Non-2xx" in line or "Socket errors" in line),
        requests=int(requests.group(1)) if requests else 0,
        max_ms=_duration_ms(stats.group(1)) if stats else None,
        timeouts=timeouts,
        socket_errors=connect + read + write,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def room_for_connections(needed: int, port_range: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> str | None:
    """Make room for `needed` connections to one address from this process and its children.

    Raises this process's open-file limit (inherited by the server and wrk) as far as the hard
    limit allows, and the hard limit too where it may (as root). Returns None when there is
    room, or the one sentence saying what to change.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
        except (ValueError, OSError):
            return (
                f"{needed} open files are needed but the hard limit is {hard}: raise it "
                f"(as root `ulimit -Hn {needed}`, or LimitNOFILE= / --ulimit nofile= for the CI runner)."
            )
    low, high = map(int, port_range.read_text().split())
    if high - low + 1 < needed:
        return (
            f"{needed} client ports to one address are needed but net.ipv4.ip_local_port_range "
            f"gives {high - low + 1}: widen it, e.g. sysctl -w net.ipv4.ip_local_port_range='15000 65000'."
        )
    return None
