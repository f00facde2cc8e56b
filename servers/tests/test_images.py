"""Black-box: the real images, built by `make images`, run the way production runs them.

Every container runs with a read-only root filesystem, no capabilities, no privilege gain and one
CPU (--cpus 1), on the host network (this machine's Docker engine has no bridge). No tmpfs is
mounted: neither runner writes outside /dev/shm, which Docker provides.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from servers import registry
from servers.contract import SERVERS, check_contract, check_hash
from servers.process import requests_in_flight, running, scheduling_policies

ROOT = Path(__file__).resolve().parents[2]
# Its own tag, so a test run never replaces the stdlib-style:dev / async-style:dev a person is using.
IMAGE_TAG = "test"
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host", "--cpus", "1"]
APP_USER = 10001
# Kubernetes' terminationGracePeriodSeconds; docker stop waits this long before SIGKILL (exit 137).
GRACE = 30


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed: apt-get install docker.io (bash .ci/run does)")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("the Docker engine is not running: start it (bash .ci/run does, see its dockerd line)")
    built = subprocess.run(["make", "-s", "-C", str(ROOT), "images", f"IMAGE_TAG={IMAGE_TAG}"],
                           capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, "make images failed:\n" + "\n".join((built.stdout + built.stderr).splitlines()[-30:])
    return {server: f"{server}:{IMAGE_TAG}" for server in SERVERS}


def docker_run(image: str, name: str, env: dict[str, str]) -> list[str]:
    settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return ["docker", "run", "--rm", "--name", name, *HARDENED, *settings, image]


def container_processes(name: str) -> list[psutil.Process]:
    """The container's PID 1 (as the host sees it) and all its descendants."""
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True,
                             check=True).stdout)
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.docker
@pytest.mark.parametrize("server", SERVERS)
def test_image_serves_the_contract_as_non_root_and_drains_on_docker_stop(server, images, free_port, tmp_path):
    name = f"py-bench-test-{server}-{uuid.uuid4().hex[:8]}"
    # About a second of hashing per request, so docker stop lands while they are being served.
    env = {"PORT": str(free_port), "HASH_ITERATIONS": "3000000"}
    try:
        with running(docker_run(images[server], name, env), free_port, tmp_path / "log") as served:
            spec = registry.get(server)
            processes = container_processes(name)
            runner = processes[0]
            # Exec-form ENTRYPOINT: the runner itself is PID 1 and gets docker stop's SIGTERM, no shell
            # between: the ENTRYPOINT's program (server.yaml serve, which a test holds equal) is PID 1.
            program = Path(spec.serve[0]).name
            assert runner.name() == program or (program == "python" and runner.name().startswith("python")), runner.cmdline()
            for process in processes:
                assert process.uids().effective == APP_USER and process.gids().effective == APP_USER, process
                assert process.status() != psutil.STATUS_ZOMBIE, process
                if spec.has("sched_policy"):
                    # SCHED_POLICY's default holds without any capability (settings.apply_sched_policy).
                    assert scheduling_policies(process) == {os.SCHED_BATCH}, process
            if spec.has("worker_processes"):
                # WORKERS is unset: the runner sizes itself to the container's CPU quota, one here.
                assert len(runner.children()) == 1, [p.cmdline() for p in runner.children()]

            check_contract(free_port, source=server)

            # Sent together on connections the runner has accepted (not merely queued by the kernel).
            results, clients = requests_in_flight(free_port, runner.pid, 3)
            stopped = subprocess.run(["docker", "stop", "-t", str(GRACE), name], capture_output=True, text=True,
                                     timeout=GRACE + 30)
            assert stopped.returncode == 0, stopped.stderr
            exit_code = served.process.wait(30)
            for client in clients:
                client.join(60)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    # 0, not 137: the runner finished its requests and exited on SIGTERM inside the grace period.
    assert exit_code == 0, (tmp_path / "log").read_text(errors="replace")[-3000:]
    assert [r[0] if isinstance(r, tuple) else r for r in results] == [200] * 3
    for answer in results:
        check_hash(*answer, source=server)


@pytest.mark.docker
@pytest.mark.parametrize("server", SERVERS)
def test_a_bad_setting_stops_the_container_with_one_line(server, images):
    name = f"py-bench-test-{server}-{uuid.uuid4().hex[:8]}"
    try:
        result = subprocess.run(docker_run(images[server], name, {"WORKERS": "abc"}), capture_output=True, text=True,
                                timeout=120)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{server}: WORKERS must be "), lines


@pytest.mark.docker
@pytest.mark.parametrize("server", [name for name in SERVERS if registry.get(name).has("live_reload")])
def test_live_update_can_sync_into_src_only_when_the_root_is_writable(server, images):
    """Tilt copies edits in as a tar stream unpacked by `tar` as the container's user (10001)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        edit = tarfile.TarInfo("edited.py")
        edit.size = len(b"# edited\n")
        tar.addfile(edit, io.BytesIO(b"# edited\n"))
    unpack = ["--network", "host", "--entrypoint", "tar", images[server], "-x", "-C", "/app/src", "-f", "-"]
    writable = subprocess.run(["docker", "run", "--rm", "-i", *unpack], input=archive.getvalue(), capture_output=True,
                              timeout=120)
    assert writable.returncode == 0, writable.stderr
    read_only = subprocess.run(["docker", "run", "--rm", "-i", "--read-only", *unpack], input=archive.getvalue(),
                               capture_output=True, timeout=120)
    assert read_only.returncode != 0 and b"Read-only file system" in read_only.stderr, read_only.stderr


@pytest.mark.parametrize("server", SERVERS)
def test_dockerfile_default_base_is_the_pinned_one(server):
    base = registry.get(server).image_base.upper()
    pinned = re.search(rf"^{base}_BASE=(\S+)$", (ROOT / "versions.env").read_text(), re.MULTILINE).group(1)
    dockerfile = (ROOT / "servers" / server / "Dockerfile").read_text()
    assert re.findall(r"^ARG BASE=(\S+)$", dockerfile, re.MULTILINE) == [pinned]


# --- servers/base/base-image.sh, with a stand-in docker ------------------------------------------

BASE_SCRIPT = ROOT / "servers" / "base" / "base-image.sh"
PUBLIC = "python:3.11.0-slim-bookworm"
STANDIN_DOCKER = """#!/bin/bash
echo "$*" >> "$CALLS"
case "$1 $2" in
  "info "*) exit "${INFO_EXIT:-0}" ;;
  "image inspect") [[ " $HAVE " == *" $3 "* || ( "$3" == py-serving-bench/*-base:* && -n "$HAVE_OFFLINE" ) ]] ;;
  "pull "*) echo 'Error response from daemon: dial tcp: lookup registry-1.docker.io: no such host' >&2; exit 1 ;;
esac
"""


def python_base(tmp_path: Path, docker: bool = True, kind: str = "python", **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the script with PATH holding only what it may use besides debootstrap, and docker if asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "env", "cat", "cut", "sed", "grep", "sha256sum", "id", "mktemp", "tail"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if docker:
        (bin_dir / "docker").write_text(STANDIN_DOCKER)
        (bin_dir / "docker").chmod(0o755)
    calls = tmp_path / "calls"
    result = subprocess.run([str(BASE_SCRIPT), kind, PUBLIC], capture_output=True, text=True, timeout=60,
                            env={"PATH": str(bin_dir), "CALLS": str(calls), **env})
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_base_is_the_public_image_when_it_is_there(tmp_path):
    result, calls = python_base(tmp_path, HAVE=PUBLIC)
    assert result.returncode == 0 and result.stdout == PUBLIC + "\n", result.stderr
    assert not any(call.startswith("pull") for call in calls)


def test_base_is_the_cached_offline_one_when_no_registry_answers(tmp_path):
    result, calls = python_base(tmp_path, HAVE_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"py-serving-bench/python-base:bookworm-[0-9a-f]{12}\n", result.stdout)
    debian, _ = python_base(tmp_path, kind="debian", HAVE_OFFLINE="1")
    assert re.fullmatch(r"py-serving-bench/debian-base:bookworm-[0-9a-f]{12}\n", debian.stdout), debian.stderr
    assert f"pull -q {PUBLIC}" in calls
    assert "no such host" in result.stderr  # why the public image was not used


@pytest.mark.parametrize("case, env, fix", [
    ("no docker", {}, "install Docker"),
    ("engine down", {"INFO_EXIT": "1"}, "start it"),
    ("no registry, no debootstrap", {}, "apt-get install debootstrap"),
])
def test_base_script_errors_are_one_line_naming_the_fix(tmp_path, case, env, fix):
    result, _ = python_base(tmp_path, docker=case != "no docker", **env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "base-image: " in line and fix in line]
    assert len(errors) == 1, result.stderr
