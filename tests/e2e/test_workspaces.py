"""A fleet on a git repository (issue: workspaces): each attempt in its own worktree on its
own branch, its result recorded, a review before it lands, and agent presets, all with real
git repositories, real workers and stand-in agent executables."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.test_worker import EXEC, Fleet, gone, wait_until
from tri24es import events as ev
from tri24es.names import RetryFrom

STANDIN = Path(__file__).parent / "agents" / "standin.py"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The operator's repository: one file, one commit on main."""
    path = tmp_path / "app"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "notes.txt").write_text("first line\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=op", "-c", "user.email=op@example", "commit", "-q", "-m", "init")
    return path


def results(fleet: Fleet, task_id: str) -> list[ev.TaskResultRecorded]:
    return [r for r in fleet.events(ev.TaskResultRecorded) if r.task_id == task_id]


def test_two_workers_on_one_file_each_get_their_own_branch(
        fleet: Fleet, repo: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    for name in ("left", "right"):
        fleet.submit(name, f"append notes.txt from {name}\nwait {go}\nsay done")
    workers = [fleet.worker("--id", f"w-{n}", "--repo", str(repo), "--max-tasks", "1")
               for n in (1, 2)]
    wait_until(lambda: len(fleet.events(ev.TaskStarted)) == 2, "both attempts started")
    # Both agents have written to notes.txt, each in its own worktree, at the same time.
    go.touch()
    for worker in workers:
        assert fleet.exit_code(worker) == 0, fleet.output(worker)
    for name, other in (("left", "right"), ("right", "left")):
        [result] = results(fleet, name)
        assert result.branch == f"tri24es/{name}"
        assert (result.files_changed, result.insertions, result.deletions) == (1, 1, 0)
        assert result.committed_leftovers  # the agent did not commit: tri24es did
        content = git(repo, "show", f"{result.head_commit}:notes.txt")
        assert content == f"first line\nfrom {name}"
        assert other not in content  # neither saw the other's change
        assert result.base_commit == git(repo, "rev-parse", "main")
    # The operator's checkout: untouched, and no worktree left behind.
    assert (repo / "notes.txt").read_text() == "first line\n"
    assert git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    diff = fleet.run("tasks", "diff", "left")
    assert diff.returncode == 0, diff.stderr
    assert "+from left" in diff.stdout
    show = json.loads(fleet.run("tasks", "show", "left", "--json").stdout)
    [attempt] = show["attempts"]
    assert attempt["result"]["branch"] == "tri24es/left"
    assert attempt["log"].endswith("logs/tasks/left/1.log")
    logs = fleet.run("tasks", "logs", "left")
    assert logs.stdout == "done\n"


def test_a_killed_workers_worktree_is_cleaned_by_the_rescuer_and_nothing_is_lost(
        fleet: Fleet, repo: Path) -> None:
    fleet.submit("crash", "append notes.txt half done\nhang-on 1\nappend notes.txt finished")
    first = fleet.worker("--id", "w-first", "--repo", str(repo))
    wait_until(lambda: (fleet.root / "workspaces" / "crash-1" / "notes.txt").exists()
               and "half done" in (fleet.root / "workspaces" / "crash-1" / "notes.txt")
               .read_text(), "the first attempt's edit")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = fleet.worker("--id", "w-second", "--repo", str(repo), "--max-tasks", "1")
    assert fleet.exit_code(second) == 0, fleet.output(second)
    assert "cleaned the workspace of crash attempt 1" in fleet.output(second)
    assert not (fleet.root / "workspaces" / "crash-1").exists()
    # The first attempt's uncommitted edit was committed to the branch; the second went on
    # from there (retry_from: branch, the default).
    [result] = results(fleet, "crash")
    assert result.attempt == 2
    final = git(repo, "show", f"{result.head_commit}:notes.txt")
    assert final == "first line\nhalf done\nhalf done\nfinished"
    assert "left by a lost worker" in git(repo, "log", "--format=%s", "tri24es/crash")


def test_a_retry_from_base_starts_over_and_keeps_the_old_head(fleet: Fleet, repo: Path) -> None:
    fleet.services.submit(_spec("over", "append notes.txt attempt\nexit 1",
                                retry_from=RetryFrom.BASE, max_retries=1))
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    first, second = results(fleet, "over")
    assert git(repo, "show", f"{second.head_commit}:notes.txt") == "first line\nattempt"
    assert git(repo, "rev-parse", "refs/tri24es/over/attempt-1") == first.head_commit


def test_review_approve_merge_conflict_and_reject_with_feedback(
        fleet: Fleet, repo: Path, tmp_path: Path) -> None:
    given = tmp_path / "given.json"
    fleet.services.submit(_spec("a", "append notes.txt change a", review=True))
    fleet.services.submit(_spec("b", f"record {given}\nappend notes.txt change b", review=True))
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    assert (fleet.state("a"), fleet.state("b")) == ("review", "review")
    status = json.loads(fleet.run("status", "--json").stdout)
    assert status["queue"]["by_state"]["review"] == 2
    merged = fleet.run("tasks", "approve", "a", "--merge")
    assert merged.returncode == 0, merged.stderr
    assert "merged into main" in merged.stdout
    assert fleet.state("a") == "completed"
    assert (repo / "notes.txt").read_text() == "first line\nchange a\n"  # fast-forward
    # b was made from the same base: it conflicts with what just landed.
    conflict = fleet.run("tasks", "approve", "b", "--merge")
    assert conflict.returncode == 1
    assert "conflicts in notes.txt" in conflict.stderr
    assert fleet.state("b") == "review"
    [failed] = fleet.events(ev.TaskMergeFailed)
    assert "conflicts" in failed.reason
    assert git(repo, "status", "--porcelain") == ""  # the merge was undone
    assert (repo / "notes.txt").read_text() == "first line\nchange a\n"
    rejected = fleet.run("tasks", "reject", "b", "--reason", "rebase on the new notes")
    assert rejected.returncode == 0, rejected.stderr
    assert fleet.state("b") == "queued"
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    stdin = json.loads(given.read_text())["stdin"]
    assert "## Review of attempt 1" in stdin
    assert "rebase on the new notes" in stdin
    assert fleet.services.task("b").retries_used == 1  # a rejection counts as a retry


def test_an_attempt_that_changed_nothing_fails_when_changes_are_required(
        fleet: Fleet, repo: Path) -> None:
    fleet.services.submit(_spec("idle", "say nothing to do", require_changes=True,
                                max_retries=0))
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    [failed] = fleet.events(ev.TaskFailed)
    assert failed.error.startswith("no changes")
    [result] = results(fleet, "idle")
    assert result.files_changed == 0


def test_workspaces_list_and_prune(fleet: Fleet, repo: Path) -> None:
    leftover = fleet.root / "workspaces" / "gone-1"
    leftover.parent.mkdir()
    git(repo, "worktree", "add", "-q", "-b", "tri24es/gone", str(leftover))
    (leftover / "draft.txt").write_text("unsaved\n")
    listed = json.loads(fleet.run("workspaces", "list", "--repo", str(repo), "--json").stdout)
    assert [(e["branch"], e["in_use"]) for e in listed] == [("tri24es/gone", False)]
    pruned = fleet.run("workspaces", "prune", "--repo", str(repo))
    assert pruned.returncode == 0, pruned.stderr
    assert "committed to its branch" in pruned.stdout
    assert not leftover.exists()
    assert git(repo, "show", "tri24es/gone:draft.txt") == "unsaved"


def test_without_a_repository_nothing_changes(fleet: Fleet) -> None:
    fleet.submit("plain", "append made-here.txt hello")
    worker = fleet.worker("--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    assert (fleet.root / "made-here.txt").read_text() == "hello\n"  # the worker's folder
    assert fleet.events(ev.TaskResultRecorded) == []


# --- agent presets ---------------------------------------------------------------------------


def standins(tmp_path: Path) -> Path:
    """A folder of executables named claude, codex and gemini running the stand-in."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("claude", "codex", "gemini"):
        path = folder / name
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} {name} \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize(("agent", "first", "resumed"), [
    ("claude", ["claude", "-p", "--output-format", "stream-json", "--verbose",
                "--permission-mode", "bypassPermissions", "--max-budget-usd", "1"],
     ["--resume", "claude-session-1"]),
    ("codex", ["codex", "exec", "--json", "--full-auto", "-"],
     ["resume", "codex-thread-1", "-"]),
    ("gemini", ["gemini", "--output-format", "stream-json", "--yolo"],
     ["--resume", "gemini-session-1"]),
])
def test_a_preset_builds_the_agents_command_line_and_a_retry_resumes_its_session(
        fleet: Fleet, repo: Path, tmp_path: Path, agent: str, first: list[str],
        resumed: list[str]) -> None:
    record = tmp_path / "record"
    env = {"PATH": f"{standins(tmp_path)}{os.pathsep}{os.environ['PATH']}",
           "STANDIN_RECORD": str(record)}
    fleet.services.submit(_spec("pre", "append notes.txt by the agent\nfail-on 1",
                                agent=agent, resume=True, max_budget_usd=Decimal("1")))
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle", exec_=None, env=env)
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    one, two = (json.loads((record / f"{n}.json").read_text()) for n in (1, 2))
    assert [agent, *one["argv"]] == first
    assert two["argv"][-len(resumed):] == resumed
    assert Path(one["cwd"]).name == "pre-1"  # in its worktree
    sessions = [(s.attempt, s.agent, s.session_id) for s in fleet.events(ev.AgentSessionStarted)]
    stem = resumed[-2] if agent == "codex" else resumed[1]
    assert sessions == [(1, agent, stem), (2, agent, stem[:-1] + "2")]
    assert fleet.state("pre") == "completed"
    spent = sum(e.amount for e in fleet.events(ev.SpendRecorded))
    assert spent == Decimal("0.02")  # each attempt's usage line, read in the agent's format


def _spec(task_id: str, body: str, **fields: object) -> object:
    from tri24es.services import TaskSpec

    if "agent" not in fields:
        fields["command"] = EXEC.split()
    return TaskSpec(task_id, f"task {task_id}", body=body, **fields)  # type: ignore[arg-type]


def test_a_keeper_recorded_with_a_claim_whose_agent_never_started_is_let_go(
        fleet: Fleet, repo: Path) -> None:
    """The keeper an idle worker's claim records (TaskStarted, before the agent runs) is
    that attempt's or no one's: an attempt ended before its agent started (its workspace
    could not be made) lets it go, and the next attempt runs under another."""
    from tri24es.names import Priority

    fleet.services.submit(_spec("nobase", "say never", base="no-such-ref", max_retries=0,
                                priority=Priority.HIGH))
    fleet.services.submit(_spec("fine", "say done"))
    worker = fleet.worker("--repo", str(repo), "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    [failed] = fleet.events(ev.TaskFailed)
    assert (failed.task_id, failed.error.startswith("cannot make the workspace")) == (
        "nobase", True)
    [never] = fleet.events(ev.TaskStarted, "task-nobase")
    [ran] = fleet.events(ev.TaskStarted, "task-fine")
    assert never.pid != ran.pid
    assert never.pid_start_time is not None
    assert gone(never.pid, never.pid_start_time)
    assert fleet.state("fine") == "completed"
