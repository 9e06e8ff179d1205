"""``tri24es queue-watcher`` as real processes on a real project folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import PATIENCE
from tests.e2e.conftest import CLI, Run, clean_env

DEADLINE = PATIENCE


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def tasks(run: Run) -> dict[str, Any]:
    return {t["task_id"]: t for t in orjson.loads(ok(run("tasks", "list", "--json")))}


def events(run: Run, type_: str) -> list[Any]:
    out = ok(run("events", "--type", type_, "--json"))
    return [orjson.loads(line) for line in out.splitlines()]


def await_condition(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # the polling step (a CLI call takes longer than this anyway)


@pytest.fixture
def fleet(run: Run, project: Path) -> Path:
    ok(run("init"))
    return project / "tasks"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path


def test_once_submits_the_queue_and_a_second_scan_submits_nothing(run: Run, fleet: Path) -> None:
    write(fleet / "queue" / "plain.md", "# Plain task\nmodel: claude\nlane: web\n")
    write(fleet / "queue" / "HIGH" / "urgent.md", "# Urgent\n")
    write(fleet / "queue" / "low" / "CRITICAL-x.md", "text without a heading\n")
    write(fleet / "queue" / "notes.md~", "# editor backup\n")
    out = ok(run("queue-watcher", "--once"))
    assert out.splitlines()[-1] == "submitted 3, already known 0, rejected 0"
    rows = tasks(run)
    assert list(rows) == ["CRITICAL-x", "urgent", "plain"]
    assert rows["plain"]["title"] == "Plain task"
    assert (rows["plain"]["model"], rows["plain"]["shard"]) == ("claude", "web")
    assert rows["CRITICAL-x"]["title"] == "CRITICAL-x"
    assert sorted(p.name for p in (fleet / "queue").rglob("*.md")) == [
        "CRITICAL-x.md", "plain.md", "urgent.md"
    ]  # accepted files stay for the worker
    again = ok(run("queue-watcher", "--once"))
    assert again.splitlines()[-1] == "submitted 0, already known 3, rejected 0"
    assert len(events(run, "TaskSubmitted")) == 3


BAD_FILES: dict[str, bytes] = {
    "empty.md": b"",
    "blank.md": b"  \n\n",
    "latin1.md": "# caf\u00e9\n".encode("latin-1"),
    "huge.md": b"# big\n" + b"x" * 2000,
    "bad budget.md": b"# spaces in the id\n",
    "budget.md": b"# T\nmax_budget_usd: lots\n",
    "retries.md": b"# T\nmax_retries: -2\n",
}


def test_bad_files_are_rejected_moved_aside_and_recorded(
    run: Run, fleet: Path, tmp_path: Path
) -> None:
    for name, data in BAD_FILES.items():
        write(fleet / "queue" / name, data)
    (tmp_path / "outside.md").write_text("# secret\n")
    (fleet / "queue" / "leak.md").symlink_to(tmp_path / "outside.md")
    write(fleet / "rejected" / "empty.md", b"an earlier rejection")
    write(fleet / "queue" / "good.md", "# Good\n")

    result = run("queue-watcher", "--once", env={"TRI24ES_MAX_TASK_BYTES": "1000"})
    out = ok(result)
    assert out.splitlines()[-1] == "submitted 1, already known 0, rejected 8"
    assert list(tasks(run)) == ["good"]
    assert sorted(p.name for p in (fleet / "queue").iterdir()) == ["good.md"]

    expected = {
        "empty": ("empty.1.md", "empty file"),
        "blank": ("blank.md", "empty file"),
        "latin1": ("latin1.md", "not UTF-8 text"),
        "huge": ("huge.md", "file is larger than 1000 bytes"),
        "bad budget": ("bad budget.md", "task id 'bad budget' is not safe"),
        "budget": ("budget.md", "bad max_budget_usd 'lots'"),
        "retries": ("retries.md", "bad max_retries '-2'"),
        "leak": ("leak.md", "symlink leading outside the queue folder"),
    }
    rejected = {e["data"]["task_id"]: e["data"] for e in events(run, "TaskRejected")}
    assert set(rejected) == set(expected)
    for task_id, (moved_name, reason) in expected.items():
        assert rejected[task_id]["reason"].startswith(reason)
        assert rejected[task_id]["source"].startswith("tasks/queue/")
        moved = fleet / "rejected" / moved_name
        assert moved.is_symlink() or moved.is_file()
        first_line = (moved.parent / f"{moved_name}.reason").read_text().splitlines()[0]
        assert first_line == rejected[task_id]["reason"]
    assert (fleet / "rejected" / "empty.md").read_bytes() == b"an earlier rejection"
    assert (fleet / "rejected" / "leak.md").is_symlink()

    # A fixed file with a rejected id is a new submission.
    write(fleet / "queue" / "empty.md", "# Now with content\n")
    assert ok(run("queue-watcher", "--once")).splitlines()[-1] == (
        "submitted 1, already known 1, rejected 0"
    )
    assert tasks(run)["empty"]["title"] == "Now with content"


def show(run: Run, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = orjson.loads(ok(run("tasks", "show", task_id, "--json")))
    return shown


def test_an_edit_before_the_claim_updates_the_task_once(run: Run, fleet: Path) -> None:
    path = write(fleet / "queue" / "fix.md", "# Fix it\nmodel: claude\n\nThe old prompt.\n")
    ok(run("queue-watcher", "--once"))
    # Edited and moved to the HIGH folder (the same id: the same task, a new priority).
    edited = "# Fix it differently\nmodel: gpt\nmax_retries: 5\n\nThe new prompt.\n"
    write(fleet / "queue" / "HIGH" / "fix.md", edited)
    path.unlink()
    result = run("queue-watcher", "--once")
    assert ok(result).splitlines() == [
        "updated fix from tasks/queue/HIGH/fix.md (body, priority, title, model, max_retries)",
        "submitted 0, already known 1, rejected 0, updated 1",
    ]
    assert result.stderr == ""
    shown = show(run, "fix")
    task = shown["task"]
    assert (task["state"], task["priority"], task["title"], task["model"],
            task["max_retries"]) == ("queued", "HIGH", "Fix it differently", "gpt", 5)
    [update] = [h for h in shown["history"] if h["type"] == "TaskUpdated"]
    assert update["fields"]["body"] == edited
    assert update["fields"]["source"] == "tasks/queue/HIGH/fix.md"
    text = ok(run("tasks", "show", "fix"))
    assert "    The new prompt." in text.splitlines()
    assert "The old prompt." not in text.split("history:")[0]

    # Another process (a restart), then a touch: the file is what was recorded, so nothing.
    assert ok(run("queue-watcher", "--once")).splitlines() == [
        "submitted 0, already known 1, rejected 0"]
    os.utime(fleet / "queue" / "HIGH" / "fix.md")
    assert ok(run("queue-watcher", "--once")).splitlines() == [
        "submitted 0, already known 1, rejected 0"]
    assert len(events(run, "TaskUpdated")) == 1
    assert len(events(run, "TaskSubmitted")) == 1
    ok(run("replay", "--verify"))  # the views are the fold of the log


def test_an_invalid_edit_is_refused_and_the_task_keeps_its_last_version(
    run: Run, fleet: Path
) -> None:
    path = write(fleet / "queue" / "fix.md", "# Fix it\nmax_retries: 2\n")
    ok(run("queue-watcher", "--once"))
    write(path, "# Fix it\nmax_retries: lots\n")
    result = run("queue-watcher", "--once")
    assert ok(result).splitlines() == [
        "rejected edit of tasks/queue/fix.md: bad max_retries 'lots': an integer from 0 to 100 "
        "(task fix keeps its last version)",
        "submitted 0, already known 1, rejected 0, edits rejected 1",
    ]
    task = show(run, "fix")["task"]
    assert (task["state"], task["max_retries"]) == ("queued", 2)
    assert path.is_file()  # left to be fixed in place: the next edit is applied
    assert events(run, "TaskUpdated") == []
    assert events(run, "TaskRejected") == []
    write(path, "# Fix it\nmax_retries: 4\n")
    out = ok(run("queue-watcher", "--once", "--json"))
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines[0] == {"action": "updated", "task_id": "fix", "source": "tasks/queue/fix.md",
                        "changed": ["body", "max_retries"]}
    assert (lines[1]["updated"], lines[1]["edits_rejected"]) == (1, 0)
    assert show(run, "fix")["task"]["max_retries"] == 4


def test_an_edit_after_the_claim_is_only_reported(run: Run, fleet: Path) -> None:
    path = write(fleet / "queue" / "fix.md", "# Fix it\n")
    ok(run("queue-watcher", "--once"))
    ok(run("worker", "--id", "w1", "--exec", "true", "--max-tasks", "1"))  # claimed, run, done
    write(path, "# Fix it differently\n")
    result = run("queue-watcher", "--once")
    assert ok(result).splitlines()[-1] == "submitted 0, already known 1, rejected 0"
    assert result.stderr.splitlines() == [
        "tri24es: warning: tasks/queue/fix.md: changed, but task fix is completed: the edit is "
        "not applied (only a task not yet claimed takes its file's changes)"]
    task = show(run, "fix")["task"]
    assert (task["state"], task["title"]) == ("completed", "Fix it")
    assert events(run, "TaskUpdated") == []


@pytest.mark.slow
def test_an_edit_while_the_task_runs_is_only_reported(
    run: Run, fleet: Path, project: Path, tmp_path: Path
) -> None:
    path = write(fleet / "queue" / "fix.md", "# Fix it\n")
    ok(run("queue-watcher", "--once"))
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [*CLI, "worker", "--id", "w1", "--exec", "sleep 600", "--max-tasks", "1"],
            cwd=project, env=clean_env(project), stdout=log, stderr=subprocess.STDOUT)
    try:
        await_condition(lambda: tasks(run)["fix"]["state"] == "running", "the claim")
        write(path, "# Fix it differently\n")
        result = run("queue-watcher", "--once")
        assert ok(result).splitlines()[-1] == "submitted 0, already known 1, rejected 0"
        assert result.stderr.splitlines() == [
            "tri24es: warning: tasks/queue/fix.md: changed, but task fix is running: the edit "
            "is not applied (only a task not yet claimed takes its file's changes)"]
        assert tasks(run)["fix"]["title"] == "Fix it"
        assert events(run, "TaskUpdated") == []
    finally:
        worker.send_signal(signal.SIGTERM)  # the agent's tree is ended, the task requeued
        assert worker.wait(timeout=DEADLINE) == 0


def test_a_file_from_another_submission_is_reported_not_resubmitted(
    run: Run, fleet: Path
) -> None:
    ok(run("submit", "Fix it", "--id", "fix"))
    write(fleet / "queue" / "fix.md", "# Fix it differently\n")
    result = run("queue-watcher", "--once")
    assert ok(result).splitlines()[-1] == "submitted 0, already known 1, rejected 0"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("tri24es: warning: tasks/queue/fix.md: content differs")
    assert warnings[0].endswith("the task was not submitted from a queue file")
    assert tasks(run)["fix"]["title"] == "Fix it"
    assert events(run, "TaskUpdated") == []


class Daemon:
    def __init__(self, project: Path, log_dir: Path, name: str, *args: str) -> None:
        self.stdout = log_dir / f"{name}.out"
        self.stderr = log_dir / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [*CLI, "queue-watcher", *args], cwd=project, env=clean_env(project),
                stdout=out, stderr=err,
            )

    def said(self) -> list[str]:
        return self.stdout.read_text().splitlines()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def daemons(project: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str) -> Daemon:
        daemon = Daemon(project, tmp_path, f"watcher-{len(started)}", *args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.mark.slow
def test_three_watchers_submit_each_file_exactly_once(
    run: Run, fleet: Path, daemons: Callable[..., Daemon]
) -> None:
    (fleet / "queue" / "HIGH").mkdir()
    watchers = [daemons("--interval", "0.5") for _ in range(3)]
    ids = [f"task-{i:02d}" for i in range(20)]
    for i, task_id in enumerate(ids):
        folder = fleet / "queue" / ("HIGH" if i % 2 else "")
        (folder / f"{task_id}.md").write_text(f"# Task {i}\n")  # written in place, not renamed
    write(fleet / "queue" / "empty.md", b"")
    await_condition(lambda: set(tasks(run)) == set(ids), "all 20 tasks")
    await_condition(lambda: len(events(run, "TaskRejected")) == 1, "the rejection")
    assert [w.stop() for w in watchers] == [0, 0, 0]
    submitted = [e["data"]["task_id"] for e in events(run, "TaskSubmitted")]
    assert sorted(submitted) == ids
    logged = [line.split()[1] for w in watchers for line in w.stdout.read_text().splitlines()
              if line.startswith("submitted ")]
    assert sorted(logged) == ids  # one line per file, from whichever watcher submitted it
    assert sorted(p.name for p in (fleet / "rejected").iterdir()) == ["empty.md",
                                                                      "empty.md.reason"]


@pytest.mark.slow
def test_daemon_updates_an_edited_task_and_a_restart_records_nothing_more(
    run: Run, fleet: Path, daemons: Callable[..., Daemon]
) -> None:
    (fleet / "queue" / "LOW").mkdir()
    watcher = daemons("--interval", "60")  # inotify, not the rescan, must find the files
    write(fleet / "queue" / "first.md", "# First\n")
    await_condition(lambda: "first" in tasks(run), "the first file")
    (fleet / "queue" / "first.md").write_text("# First, edited\n")  # in place
    await_condition(lambda: any(line.startswith("updated first") for line in watcher.said()),
                    "the update")
    assert tasks(run)["first"]["title"] == "First, edited"
    write(fleet / "queue" / "LOW" / "second.md", "# Second\n")
    await_condition(lambda: "second" in tasks(run), "the second file")
    assert watcher.stop() == 0
    assert watcher.stderr.read_text() == ""
    assert watcher.said() == ["submitted first (MEDIUM) from tasks/queue/first.md",
                              "updated first from tasks/queue/first.md (body, title)",
                              "submitted second (LOW) from tasks/queue/LOW/second.md"]

    # A restarted watcher reads both files again and finds them as recorded. Its scan of the
    # folder is whole, so once the new file is submitted the old ones were looked at too.
    again = daemons("--interval", "60")
    write(fleet / "queue" / "third.md", "# Third\n")
    await_condition(lambda: "third" in tasks(run), "the third file")
    assert again.stop() == 0
    assert again.said() == ["submitted third (MEDIUM) from tasks/queue/third.md"]
    assert again.stderr.read_text() == ""
    assert len(events(run, "TaskUpdated")) == 1
    assert len(events(run, "TaskSubmitted")) == 3


@pytest.mark.slow
def test_a_file_written_in_two_bursts_a_second_apart_is_submitted_whole(
    run: Run, fleet: Path, daemons: Callable[..., Daemon]
) -> None:
    """A writer that pauses (an editor's save in parts, a script's two writes, a slow copy):
    the watcher, at its default settle time, waits for the file to be at rest. With 0.2 s it
    submitted the first burst alone; the second then only changed a submitted file."""
    watcher = daemons("--interval", "60")
    write(fleet / "queue" / "ready.md", "# Ready\n")  # the watcher is up and watching
    await_condition(lambda: "ready" in tasks(run), "the first file")
    path = fleet / "queue" / "slow.md"
    first, second = "# Slow task\nmodel: claude\n", "\nThe rest of the prompt.\n"
    with path.open("w") as f:
        f.write(first)
    first_at = path.stat().st_mtime_ns
    time.sleep(1.0)  # the pause between the bursts, not a wait for the watcher
    with path.open("a") as f:
        f.write(second)
    gap = (path.stat().st_mtime_ns - first_at) / 1e9
    if gap >= 2.0:  # the default settle time: then the first burst alone was a whole file
        pytest.skip(f"the machine held the writer {gap:.1f} s between the bursts, not 1 s")
    await_condition(lambda: "slow" in tasks(run), "the submission")
    assert watcher.stop() == 0
    [submitted] = [e for e in events(run, "TaskSubmitted") if e["data"]["task_id"] == "slow"]
    assert submitted["data"]["body"] == first + second
    assert events(run, "TaskUpdated") == []
    assert watcher.said() == ["submitted ready (MEDIUM) from tasks/queue/ready.md",
                              "submitted slow (MEDIUM) from tasks/queue/slow.md"]


def test_daemon_stops_cleanly_on_sigint(fleet: Path, daemons: Callable[..., Daemon]) -> None:
    watcher = daemons()
    write(fleet / "queue" / "a.md", "# A\n")
    await_condition(lambda: "submitted a" in watcher.stdout.read_text(), "the submission")
    watcher.process.send_signal(signal.SIGINT)
    assert watcher.process.wait(timeout=DEADLINE) == 0
    assert watcher.stderr.read_text() == ""


def test_what_the_watcher_ignores_is_said_once_and_shown_by_status(
    run: Run, fleet: Path, daemons: Callable[..., Daemon]
) -> None:
    queue = fleet / "queue"
    write(queue / "UPPER.MD", "# Upper\n")
    write(queue / "notes.txt", "notes\n")
    write(queue / "deep" / "er" / "d.md", "# Deep\n")
    write(queue / ".hidden.md", "# Hidden: expected, not listed\n")
    said = [
        "ignored tasks/queue/UPPER.MD: not a .md file: names end in .md, lower case",
        "ignored tasks/queue/deep/: a folder: only the CRITICAL, HIGH, MEDIUM and LOW folders "
        "are read",
        "ignored tasks/queue/notes.txt: not a .md file: only .md files are tasks",
    ]
    watcher = daemons("--interval", "0.2")  # many rescans: each one must stay quiet
    write(queue / "real.md", "# Real\n")
    await_condition(lambda: "submitted real" in watcher.stdout.read_text(), "the submission")
    write(queue / "later.txt", "x\n")
    await_condition(lambda: "later.txt" in watcher.stdout.read_text(), "the later file")
    write(queue / "after.md", "# After\n")  # a few more scans happen before this one
    await_condition(lambda: "submitted after" in watcher.stdout.read_text(), "the last file")
    assert watcher.stop() == 0
    lines = watcher.stdout.read_text().splitlines()
    assert sorted(line for line in lines if line.startswith("ignored")) == sorted([
        *said, "ignored tasks/queue/later.txt: not a .md file: only .md files are tasks"])
    status = ok(run("status")).splitlines()
    shown = [line.removeprefix("ignored:      ") for line in status if line.startswith("ignored:")]
    assert len(shown) == 4
    assert {f"ignored {line}" for line in shown} >= set(said)
    as_json = orjson.loads(ok(run("status", "--json")))["ignored_in_queue"]
    assert {"source": "tasks/queue/notes.txt",
            "reason": "not a .md file: only .md files are tasks"} in as_json
