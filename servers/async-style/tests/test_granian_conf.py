"""granian_conf.py: what it accepts, and that server.yaml's numbers are the runner's."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from servers import registry

FOLDER = Path(__file__).resolve().parents[1]


def test_server_yaml_holds_the_runners_own_numbers():
    declared = registry.get("async-style")
    conf = runpy.run_path(str(FOLDER / "granian_conf.py"))
    assert declared.head_timeout_s == conf["HEADER_READ_TIMEOUT_MS"] / 1000
    assert declared.drain_timeout_s == conf["WORKERS_KILL_TIMEOUT"]


def test_granian_conf_refuses_other_arguments():
    result = subprocess.run([sys.executable, "granian_conf.py", "--workers", "3"], cwd=FOLDER,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "async-style: granian_conf.py takes only --reload, got '--workers 3'."
