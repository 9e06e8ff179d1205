"""tri24es init / events / --version, and how user mistakes are reported."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import orjson

from eventlog import NewEvent, open_store
from tests.e2e.conftest import CLI, Run, clean_env


def seed(db: Path) -> None:
    with open_store(str(db)) as store:
        store.append("task-a", [NewEvent("TaskSubmitted", b'{"task_id":"a","title":"A"}')], 0)
        store.append("task-b", [NewEvent("TaskSubmitted", b'{"task_id":"b","title":"B"}')], 0)
        store.append("task-a", [NewEvent("TaskCancelled", b'{"task_id":"a"}')], 1)


def test_init_creates_the_layout_privately_and_is_repeatable(run: Run, project: Path) -> None:
    first = run("init")
    assert first.returncode == 0, first.stderr
    for folder in ("queue", "running", "completed", "failed", "rejected"):
        assert (project / "tasks" / folder).is_dir()
    db = project / "state" / "tri24es.db"
    assert stat.S_IMODE(os.stat(project / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    again = run("init")
    assert again.returncode == 0
    assert "0 events" in again.stdout


def test_events_json_lines(run: Run, project: Path) -> None:
    run("init")
    seed(project / "state" / "tri24es.db")
    result = run("events", "--json")
    assert result.returncode == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["position"] for r in rows] == [1, 2, 3]
    first = rows[0]
    assert set(first) >= {"position", "stream", "version", "type", "data", "metadata",
                          "recorded_at"}
    assert first["data"] == {"task_id": "a", "title": "A"}
    assert datetime.fromisoformat(first["recorded_at"]).utcoffset() is not None


def test_events_filters(run: Run, project: Path) -> None:
    run("init")
    seed(project / "state" / "tri24es.db")
    by_stream = run("events", "--stream", "task-a", "--json").stdout.splitlines()
    assert [orjson.loads(x)["version"] for x in by_stream] == [1, 2]
    by_type = run("events", "--type", "TaskCancelled").stdout.splitlines()
    assert len(by_type) == 1
    assert "task-a v2  TaskCancelled" in by_type[0]


def test_events_follow_prints_new_commits_until_interrupted(run: Run, project: Path) -> None:
    run("init")
    db = project / "state" / "tri24es.db"
    proc = subprocess.Popen(
        [*CLI, "events", "--follow", "--json"], cwd=project, env=clean_env(project),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seed(db)
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert [orjson.loads(x)["position"] for x in lines] == [1, 2, 3]
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_missing_store_is_one_clear_line(run: Run) -> None:
    result = run("events")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "run `tri24es init` first" in result.stderr


def test_bad_setting_is_a_usage_error(run: Run) -> None:
    result = run("init", env={"BUDGET_DAILY_LIMIT": "lots"})
    assert result.returncode == 2
    assert re.fullmatch(r"tri24es: error: BUDGET_DAILY_LIMIT='lots': .*\n", result.stderr)


def test_symlinked_database_is_refused(run: Run, project: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    target.touch()
    (project / "state").mkdir(parents=True)
    (project / "state" / "tri24es.db").symlink_to(target)
    result = run("init")
    assert result.returncode == 1
    assert "symbolic link" in result.stderr
    assert "Traceback" not in result.stderr


def test_locked_database_fails_fast_with_a_clear_error(run: Run, project: Path) -> None:
    run("init")
    seed(project / "state" / "tri24es.db")
    holder = sqlite3.connect(project / "state" / "tri24es.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        writing = run("submit", "blocked", env={"TRI24ES_BUSY_TIMEOUT": "0.3"})
        assert time.monotonic() - started < 20
        reading = run("events", "--json", env={"TRI24ES_BUSY_TIMEOUT": "0.3"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert writing.returncode == 1
    assert "locked" in writing.stderr
    assert len(writing.stderr.strip().splitlines()) == 1
    # Reading the log does not wait for the writer's lock (WAL).
    assert reading.returncode == 0, reading.stderr
    assert len(reading.stdout.splitlines()) == 3


def test_db_option_and_version(run: Run, tmp_path: Path) -> None:
    other = tmp_path / "other" / "store.db"
    assert run("--db", f"sqlite:///{other}", "init").returncode == 0
    assert other.exists()
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("tri24es ")
