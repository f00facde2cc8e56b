"""Settings from the environment, including CPU quotas read from cgroup files given as fixtures."""

import os
import subprocess
import sys
from pathlib import Path

import importlib

import pytest

from servers import registry

# The Python servers' settings.py, one copy each (the reference servers test theirs in go test and
# cargo test, with the same fixtures' logic).
PYTHON = [name for name in registry.names() if (registry.get(name).folder / "pyproject.toml").is_file()]
MODULES = [importlib.import_module(f"{name.replace('-', '_')}.settings") for name in PYTHON]
IDS = PYTHON
AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture(params=MODULES, ids=IDS)
def settings(request):
    return request.param


def test_defaults(settings):
    loaded = settings.load({})
    assert (loaded.port, loaded.hash_iterations, loaded.log_level, loaded.access_log) == (8080, 100, "info", False)
    assert loaded.sched_policy == "batch"
    assert loaded.host == "127.0.0.1"
    assert 1 <= loaded.workers <= AFFINITY
    assert loaded.source == settings.SERVER_NAME


def test_values_are_read(settings):
    loaded = settings.load(
        {"HOST": "0.0.0.0", "PORT": "9000", "WORKERS": "3", "HASH_ITERATIONS": "7", "LOG_LEVEL": "WARNING", "ACCESS_LOG": "on",
         "SCHED_POLICY": " Other "}
    )
    assert (loaded.host, loaded.port, loaded.workers, loaded.hash_iterations) == ("0.0.0.0", 9000, 3, 7)
    assert (loaded.log_level, loaded.access_log, loaded.sched_policy) == ("warning", True, "other")


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "http"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("WORKERS", "0"),
        ("WORKERS", "-2"),
        ("WORKERS", "2.5"),
        ("HASH_ITERATIONS", "0"),
        ("LOG_LEVEL", "loud"),
        ("ACCESS_LOG", "maybe"),
        ("SCHED_POLICY", "fifo"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(settings, name, value):
    with pytest.raises(settings.SettingsError) as error:
        settings.load({name: value})
    message = str(error.value)
    assert message.startswith(f"{name} must be ") and repr(value.strip().lower() if name in ("LOG_LEVEL", "ACCESS_LOG", "SCHED_POLICY") else value) in message
    assert "\n" not in message


# Run in a child interpreter: the policy would otherwise stay on pytest's own thread.
APPLY = """
import os, sys
sys.path.insert(0, {src!r})
from {package}.settings import apply_sched_policy
os.sched_setscheduler(0, {start}, os.sched_param(0))
print(apply_sched_policy({policy!r}), os.sched_getscheduler(0))
"""


@pytest.mark.parametrize("policy, start, expected", [("batch", os.SCHED_OTHER, os.SCHED_BATCH), ("other", os.SCHED_BATCH, os.SCHED_OTHER)])
def test_apply_sched_policy_sets_the_policy(settings, policy, start, expected):
    src = Path(settings.__file__).parents[1]
    code = APPLY.format(src=str(src), package=settings.__name__.split(".")[0], start=start, policy=policy)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split() == ["None", str(expected)]


def test_apply_sched_policy_reports_a_refusal_in_one_line(settings, monkeypatch):
    def refuse(pid, policy, param):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert settings.apply_sched_policy("batch") == (
        "SCHED_POLICY=batch was refused (Operation not permitted); running under the current policy."
    )
    monkeypatch.delattr(os, "sched_setscheduler")
    assert settings.apply_sched_policy("batch") == "SCHED_POLICY=batch needs Linux; running under the default policy."
    assert settings.apply_sched_policy("other") is None


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def cgroup_v2(tmp_path):
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/kubepods/pod1/ctr\n")
    return root, proc


@pytest.mark.parametrize(
    "cpu_max, expected",
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5)],
)
def test_cgroup_v2_quota(settings, cgroup_v2, cpu_max, expected):
    root, proc = cgroup_v2
    write(root / "kubepods/pod1/ctr/cpu.max", cpu_max)
    assert settings.cgroup_cpu_quota(root, proc) == expected


def test_cgroup_v2_takes_the_tightest_ancestor(settings, cgroup_v2):
    root, proc = cgroup_v2
    write(root / "kubepods/pod1/ctr/cpu.max", "max 100000\n")
    write(root / "kubepods/pod1/cpu.max", "300000 100000\n")
    write(root / "kubepods/cpu.max", "800000 100000\n")
    assert settings.cgroup_cpu_quota(root, proc) == 3.0


def test_cgroup_v2_namespaced_mount_reads_the_root(settings, tmp_path):
    # With a private cgroup namespace the container sees its own cgroup as "/" at the mount root.
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "0::/\n")
    write(root / "cpu.max", "250000 100000\n")
    assert settings.cgroup_cpu_quota(root, proc) == 2.5


def test_cgroup_v1_quota(settings, tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "400000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert settings.cgroup_cpu_quota(root, proc) == 4.0


def test_cgroup_v1_unlimited(settings, tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "3:cpu,cpuacct:/\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert settings.cgroup_cpu_quota(root, proc) is None


def test_no_cgroup_files_means_no_quota(settings, tmp_path):
    assert settings.cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "missing") is None


def test_workers_default_rounds_a_quota_up_and_never_exceeds_affinity(settings, tmp_path, monkeypatch):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "0::/\n")
    write(root / "cpu.max", "50000 100000\n")
    assert settings.available_cpus(str(root), str(proc)) == 1
    write(root / "cpu.max", f"{(AFFINITY + 7) * 100000} 100000\n")
    assert settings.available_cpus(str(root), str(proc)) == AFFINITY
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    write(root / "cpu.max", "150000 100000\n")
    assert settings.available_cpus(str(root), str(proc)) == 2, "a 64-core host with a 1.5-CPU quota gets 2"


def test_the_copies_differ_only_in_the_server_name():
    texts = {name: next(registry.get(name).folder.glob("src/*/settings.py")).read_text() for name in PYTHON}
    normalized = {text.replace(f'SERVER_NAME = "{name}"', 'SERVER_NAME = "<name>"') for name, text in texts.items()}
    assert len(PYTHON) >= 2 and len(normalized) == 1
