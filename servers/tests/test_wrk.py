"""servers/wrk.py: wrk's output read once, from hand-made output; no server, no load."""

from __future__ import annotations

import pytest

from servers.wrk import parse_wrk, room_for_connections

WRK = """Running 8s test @ http://127.0.0.1:40123/hash
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.10ms    1.20ms  31.00ms   90.00%
    Req/Sec    12.31k   401.00    13.00k    70.00%
  Latency Distribution
     50%    3.95ms
     75%    4.40ms
     90%    5.10ms
     99%    1.20s
  98123 requests in 8.00s, 17.01MB read
Requests/sec:  12265.37
Transfer/sec:      2.13MB
"""


def test_parse_wrk_reads_rate_counts_and_latency_units():
    load = parse_wrk(WRK)
    assert load.rps == pytest.approx(12265.37)
    assert load.p50_ms == pytest.approx(3.95)
    assert load.p99_ms == pytest.approx(1200.0)
    assert load.max_ms == pytest.approx(31.0)
    assert load.requests == 98123
    assert load.errors == "" and load.clean


def test_parse_wrk_counts_each_kind_of_error():
    load = parse_wrk(WRK.replace("Requests/sec", "  Socket errors: connect 1, read 2, write 3, timeout 279\nRequests/sec"))
    assert (load.socket_errors, load.timeouts, load.non_2xx) == (6, 279, 0)
    assert not load.clean


def test_parse_wrk_keeps_error_lines():
    load = parse_wrk(WRK.replace("Requests/sec", "  Non-2xx or 3xx responses: 7\nRequests/sec"))
    assert "Non-2xx or 3xx responses: 7" in load.errors


def test_parse_wrk_without_a_rate_says_so():
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")




def test_room_for_connections_names_the_fix_when_ports_run_short(tmp_path):
    ports = tmp_path / "ip_local_port_range"
    ports.write_text("60000\t60999\n")
    problem = room_for_connections(2000, ports)
    assert problem.startswith("2000 client ports to one address are needed but net.ipv4.ip_local_port_range gives 1000")
    assert "sysctl -w" in problem and "\n" not in problem
    ports.write_text("1024\t65535\n")
    assert room_for_connections(2000, ports) is None
