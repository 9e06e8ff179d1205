"""The README's first screen, walked as a new user walks it: its commands, as written, in a
fresh copy of the project (a new virtual environment, a real install, the demo fleet, Ctrl-C
once the demo's tasks are done, then the commands it suggests next, in the same shell)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_TASKS = 6


def first_screen_commands() -> list[str]:
    """The shell blocks before the README's "Test it" paragraph."""
    text = (ROOT / "README.md").read_text()
    head = text[:text.index("**Test it**")]
    return re.findall(r"```sh\n(.*?)```", head, flags=re.S)


def fresh_copy(into: Path) -> Path:
    """The files git tracks (a clone's contents, without this checkout's venv or state)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


@pytest.mark.slow
def test_the_first_screen_runs_as_written(tmp_path: Path) -> None:
    blocks = first_screen_commands()
    assert len(blocks) == 2
    run_it, then = blocks
    assert ". .venv/bin/activate" in run_it  # the next steps find `tri24es` on PATH
    assert "tri24es up --demo" in run_it
    assert "DESIGN.md" not in (ROOT / "README.md").read_text()[:3000]
    project = fresh_copy(tmp_path / "tri24es")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRI24ES_", "BUDGET_", "VIRTUAL_ENV"))}
    log = tmp_path / "shell.log"
    with log.open("wb") as out:
        shell = subprocess.Popen(["bash", "-c", run_it + then], cwd=project, env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            completed = project / "tasks" / "completed"
            deadline = time.monotonic() + 600  # a real install on a busy machine
            while not (completed.is_dir() and len(list(completed.glob("*.md"))) == DEMO_TASKS):
                assert shell.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            os.killpg(shell.pid, signal.SIGINT)  # Ctrl-C, as the README says
            assert shell.wait(timeout=120) == 0, log.read_text()
        finally:
            if shell.poll() is None:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
    said = log.read_text()
    assert "up: stopped" in said
    assert "tasks:        6 (completed 6)" in said  # tri24es status, found on PATH
    assert said.count("TaskCompleted") == DEMO_TASKS
    assert not list((project / "tasks" / "queue").glob("*.md"))  # no false backlog
