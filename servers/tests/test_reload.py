"""Tilt's live update: files synced into src/ reach the running server through `--reload`.

Each runner is started the way the image starts it (the Dockerfile's ENTRYPOINT) plus the
`--reload` the Tiltfile passes as container args, in a copy of the server folder; then a source
file changes and the server must answer from the new code.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from servers import registry
from servers.process import running

ROOT = Path(__file__).resolve().parents[2]


def entrypoint(server: str) -> list[str]:
    dockerfile = (ROOT / "servers" / server / "Dockerfile").read_text()
    return json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))


def source_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hash", timeout=5) as response:
        return json.load(response)["source"]


@pytest.mark.parametrize("server", [name for name in registry.names() if registry.get(name).has("live_reload")])
def test_an_edited_source_file_is_served_without_a_restart(server, free_port, tmp_path):
    folder = tmp_path / server
    shutil.copytree(ROOT / "servers" / server, folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    settings = next(folder.glob("src/*/settings.py"))
    command = entrypoint(server) + ["--reload"]
    command[0] = str(Path(sys.executable).with_name(command[0]))
    env = {"PORT": str(free_port), "WORKERS": "1"}
    with running(command, free_port, tmp_path / "log", env=env, cwd=folder):
        assert source_of(free_port) == server
        edited = settings.read_text().replace(f'SERVER_NAME = "{server}"', 'SERVER_NAME = "edited"')
        # gunicorn's polling reloader takes the files' first mtimes in its own thread, which may
        # not have run yet when the server first answers; saving once a second, as a person
        # would again, lands an edit after that first look.
        deadline = time.monotonic() + 45
        while True:
            settings.write_text(edited)
            for _ in range(5):
                try:
                    if source_of(free_port) == "edited":
                        return
                except OSError:
                    pass  # the worker is restarting
                time.sleep(0.2)
            assert time.monotonic() < deadline, f"{server} still serves the old code 45 s after the edit"
