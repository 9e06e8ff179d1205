"""An auditor opens a read-only copy of a store: every read command works on it, and a write
fails with one line, writing nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, Run, clean_env

# root writes anywhere: the copy is read as nobody then, so that the kernel really says no
AS_READER = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
             if os.geteuid() == 0 else [])


def read_only_copy(project: Path, shared: Path) -> Path:
    copy = shared / "copy"
    shutil.copytree(project, copy)
    for path in (copy, *copy.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)
    return copy


@pytest.mark.parametrize(("args", "shown"), [
    (["status"], "log head:     2"), (["tasks", "list"], "fix-login"),
    (["events"], "SpendRecorded"), (["audit", "verify"], "verified 2 events"),
    (["top", "--once"], "log head 2"), (["spend"], "Today:        $0.25"),
    (["workers", "list"], "WORKER"), (["tasks", "show", "fix-login"], "TaskSubmitted"),
])
def test_read_commands_work_on_a_read_only_copy(run: Run, project: Path, shared_tmp: Path,
                                                args: list[str], shown: str) -> None:
    run("init")
    assert run("submit", "Fix login", "--id", "fix-login").returncode == 0
    assert run("spend", "record", "--usd", "0.25", "--task", "fix-login").returncode == 0
    copy = read_only_copy(project, shared_tmp)
    result = subprocess.run([*AS_READER, *CLI, *args], cwd=copy, env=clean_env(copy),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert shown in result.stdout


def test_a_write_to_a_read_only_copy_is_one_line(run: Run, project: Path,
                                                 shared_tmp: Path) -> None:
    run("init")
    copy = read_only_copy(project, shared_tmp)
    result = subprocess.run([*AS_READER, *CLI, "submit", "x"], cwd=copy, env=clean_env(copy),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "readonly database" in result.stderr


def test_a_read_only_copy_whose_views_are_behind_says_so_in_one_line(
        run: Run, project: Path, shared_tmp: Path) -> None:
    """Views made by another version (here: their checkpoints set back) cannot be rebuilt in
    a store this user may not write: the read says why and what to do, and writes nothing."""
    import sqlite3

    run("init")
    assert run("submit", "Fix login", "--id", "fix-login").returncode == 0
    with sqlite3.connect(project / "state" / "tri24es.db") as conn:
        conn.execute("UPDATE checkpoints SET position = 0")
    conn.close()
    copy = read_only_copy(project, shared_tmp)
    before = sorted(p.name for p in (copy / "state").iterdir())
    result = subprocess.run([*AS_READER, *CLI, "status"], cwd=copy, env=clean_env(copy),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "views of this read-only store are behind its log" in result.stderr
    assert sorted(p.name for p in (copy / "state").iterdir()) == before
