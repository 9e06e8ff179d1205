"""submit, tasks, workers, status and replay, run as a user runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventlog import open_store
from tests.e2e.conftest import Run
from tri24es.names import Priority
from tri24es.services import Services, TaskSpec


def db_of(project: Path) -> Path:
    return project / "state" / "tri24es.db"


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tri24es: error: ")
    return lines[0]


@pytest.fixture
def fleet(run: Run) -> Run:
    ok(run("init"))
    return run


def with_services(project: Path) -> Services:
    return Services(open_store(str(db_of(project))), actor="test")


def test_list_orders_by_priority_then_submission(fleet: Run) -> None:
    for title, task_id, priority in [
        ("low one", "l1", "LOW"), ("first medium", "m1", "MEDIUM"), ("urgent", "c1", "critical"),
        ("second medium", "m2", "MEDIUM"), ("urgent too", "c2", "CRITICAL"),
    ]:
        ok(fleet("submit", title, "--id", task_id, "--priority", priority))
    rows = ok(fleet("tasks", "list", "--json"))
    assert [r["task_id"] for r in rows] == ["c1", "c2", "m1", "m2", "l1"]
    assert [r["priority"] for r in rows] == ["CRITICAL", "CRITICAL", "MEDIUM", "MEDIUM", "LOW"]
    assert {r["state"] for r in rows} == {"queued"}
    assert ok(fleet("tasks", "list", "--state", "cancelled", "--json")) == []


def test_submit_is_idempotent_by_id(fleet: Run) -> None:
    first = ok(fleet("submit", "Fix login", "--id", "fix", "--priority", "HIGH", "--json"))
    again = ok(fleet("submit", "Something else", "--id", "fix", "--priority", "LOW", "--json"))
    assert first["new"] is True
    assert again["new"] is False
    assert (again["title"], again["priority"]) == ("Fix login", "HIGH")
    assert len(ok(fleet("tasks", "list", "--json"))) == 1


def test_submit_defaults_the_id_from_title_or_file(fleet: Run, project: Path) -> None:
    made = ok(fleet("submit", "Fix the Login page!", "--json"))
    assert made["task_id"].startswith("fix-the-login-page-")
    task_file = project / "refactor-db.md"
    task_file.write_text("# Refactor the DB layer\n\nSplit the module.\n")
    from_file = ok(fleet("submit", "--file", str(task_file), "--shard", "s1", "--json"))
    assert from_file["task_id"] == "refactor-db"
    assert (from_file["title"], from_file["shard"]) == ("Refactor the DB layer", "s1")
    shown = ok(fleet("tasks", "show", "refactor-db", "--json"))
    submitted = shown["history"][0]["fields"]
    assert len(submitted["body_sha256"]) == 64


def test_show_prints_the_full_history(fleet: Run) -> None:
    ok(fleet("submit", "Doomed", "--id", "d"))
    ok(fleet("tasks", "cancel", "d", "--reason", "duplicate"))
    shown = ok(fleet("tasks", "show", "d", "--json"))
    assert shown["task"]["state"] == "cancelled"
    history = shown["history"]
    assert [h["type"] for h in history] == ["TaskSubmitted", "TaskCancelled"]
    assert [h["position"] for h in history] == [1, 2]
    assert all(h["who"].startswith("cli:") for h in history)
    assert history[1]["fields"]["reason"] == "duplicate"
    text = fleet("tasks", "show", "d")
    assert "TaskCancelled" in text.stdout
    assert "reason=duplicate" in text.stdout


def test_cancel_twice_is_one_line_error(fleet: Run) -> None:
    ok(fleet("submit", "Once", "--id", "once"))
    assert ok(fleet("tasks", "cancel", "once", "--json")) == {"task_id": "once",
                                                               "state": "cancelled"}
    assert "cancel" in one_line_error(fleet("tasks", "cancel", "once"), 1)
    assert "no task 'ghost'" in one_line_error(fleet("tasks", "show", "ghost"), 1)


def test_retry_of_a_task_that_did_not_fail_is_refused(fleet: Run) -> None:
    ok(fleet("submit", "Fine", "--id", "fine"))
    line = one_line_error(fleet("tasks", "retry", "fine"), 1)
    assert "only failed tasks retry" in line


def test_retry_sends_a_dead_letter_back_to_the_queue(fleet: Run, project: Path) -> None:
    ok(fleet("submit", "Flaky", "--id", "flaky", "--max-retries", "0"))
    services = with_services(project)
    try:
        services.start_worker("w1", pid=os.getpid(), pid_start_time=1, host="here")
        claim = services.claim("w1")
        assert claim is not None
        services.fail("flaky", "w1", claim.attempt, "boom")
    finally:
        services.store.close()
    assert ok(fleet("tasks", "list", "--state", "failed", "--json"))[0]["last_error"] == "boom"
    ok(fleet("tasks", "retry", "flaky"))
    assert ok(fleet("tasks", "show", "flaky", "--json"))["task"]["state"] == "queued"


@pytest.mark.parametrize(
    "args",
    [
        ("submit", "x", "--priority", "URGENT"),
        ("submit", "x", "--max-retries", "-1"),
        ("submit",),
        ("tasks", "list", "--state", "sleeping"),
        ("workers", "pause"),
        ("replay", "--until", "yesterday"),
    ],
)
def test_usage_errors_exit_2_with_one_line(fleet: Run, args: tuple[str, ...]) -> None:
    one_line_error(fleet(*args), 2)


def test_bad_priority_names_the_choices(fleet: Run) -> None:
    line = one_line_error(fleet("submit", "x", "--priority", "URGENT"), 2)
    assert "expected one of CRITICAL, HIGH, MEDIUM, LOW" in line
    assert ok(fleet("tasks", "list", "--json")) == []


def test_workers_list_pause_resume_stop(fleet: Run, project: Path) -> None:
    services = with_services(project)
    try:
        services.start_worker("w1", pid=os.getpid(), pid_start_time=1, host="here", shard="s1")
        services.start_worker("w2", pid=os.getpid(), pid_start_time=1, host="here")
    finally:
        services.store.close()

    def workers() -> dict[str, Any]:
        return {w["worker_id"]: w for w in ok(fleet("workers", "list", "--json"))}

    listed = workers()
    assert sorted(listed) == ["w1", "w2"]
    assert (listed["w1"]["state"], listed["w1"]["shard"]) == ("idle", "s1")
    assert listed["w1"]["pause_requested"] is False

    paused = ok(fleet("workers", "pause", "w1", "--json"))
    assert paused == {"action": "pause", "workers": [{"worker_id": "w1", "changed": True}]}
    assert workers()["w1"]["pause_requested"] is True
    assert workers()["w2"]["pause_requested"] is False
    again = ok(fleet("workers", "pause", "w1", "--json"))
    assert again["workers"][0]["changed"] is False

    ok(fleet("workers", "resume", "--all"))
    assert not any(w["pause_requested"] for w in workers().values())

    ok(fleet("workers", "stop", "--all"))
    after = workers()
    assert {w["state"] for w in after.values()} == {"stopping"}
    assert all(w["stop_requested"] for w in after.values())
    assert "no worker 'w9'" in one_line_error(fleet("workers", "stop", "w9"), 1)
    assert one_line_error(fleet("workers", "stop", "w1", "--all"), 2)


def test_status_json(fleet: Run, project: Path) -> None:
    ok(fleet("submit", "a", "--id", "a", "--priority", "HIGH"))
    ok(fleet("submit", "b", "--id", "b"))
    ok(fleet("tasks", "cancel", "b"))
    status = ok(fleet("status", "--json"))
    assert set(status) == {"queue", "workers", "spend", "killswitch", "head", "waiting",
                           "limits", "budget_today", "ignored_in_queue"}
    assert status["budget_today"] == {"daily_limit_usd": "75", "spent_usd": "0",
                                      "reserved_usd": "0", "left_usd": "75"}
    assert status["limits"] == []
    assert status["head"] == 3
    assert status["queue"]["by_state"] == {"queued": 1, "running": 0, "review": 0,
                                           "completed": 0, "failed": 0, "cancelled": 1}
    assert status["waiting"] == ["1 waiting for any worker: no live worker"]
    assert status["queue"]["by_priority"]["HIGH"] == 1
    assert status["queue"]["by_state_and_priority"]["queued"]["HIGH"] == 1
    assert status["workers"]["total"] == 0
    assert status["spend"] == {"total_usd": "0", "events": 0, "lines_skipped": 0}
    assert status["killswitch"]["active"] is False
    assert "log head:     3" in ok_text(fleet("status"))


def ok_text(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_replay_rebuilds_and_verifies(fleet: Run) -> None:
    ok(fleet("submit", "a", "--id", "a"))
    ok(fleet("submit", "b", "--id", "b", "--priority", "LOW"))
    rebuilt = ok(fleet("replay", "--json"))
    assert (rebuilt["events"], rebuilt["tasks"]) == (2, 2)
    assert "rebuilt the views from 2 events" in ok_text(fleet("replay"))
    assert ok_text(fleet("replay", "--verify")).strip() == "verified: 2 events, views match"
    assert ok(fleet("tasks", "list", "--json"))[0]["task_id"] == "a"


def test_replay_verify_names_a_tampered_row(fleet: Run, project: Path) -> None:
    ok(fleet("submit", "a", "--id", "a"))
    with sqlite3.connect(db_of(project)) as conn:
        conn.execute("UPDATE queue SET state = 'completed' WHERE task_id = 'a'")
    conn.close()
    result = fleet("replay", "--verify")
    line = one_line_error(result, 1)
    assert "views differ" in line
    assert "queue: missing ('a', 'queued'" in result.stdout
    assert "queue: unexpected ('a', 'completed'" in result.stdout
    as_json = fleet("replay", "--verify", "--json")
    assert as_json.returncode == 1
    assert orjson.loads(as_json.stdout)["verified"] is False
    ok(fleet("replay"))
    ok(fleet("replay", "--verify"))
    assert ok(fleet("tasks", "show", "a", "--json"))["task"]["state"] == "queued"


def test_replay_until_shows_the_earlier_state(fleet: Run) -> None:
    ok(fleet("submit", "a", "--id", "a", "--priority", "CRITICAL"))
    ok(fleet("submit", "b", "--id", "b"))
    before_cancel = ok(fleet("tasks", "show", "b", "--json"))["task"]["submitted_at"]
    ok(fleet("tasks", "cancel", "a"))

    then = ok(fleet("replay", "--until", "2", "--json"))
    assert (then["until"], then["head"]) == (2, 2)
    assert then["queue"]["by_state"]["queued"] == 2
    assert then["queue"]["by_state"]["cancelled"] == 0
    assert then["queue"]["by_priority"]["CRITICAL"] == 1

    by_time = ok(fleet("replay", "--until", before_cancel, "--json"))
    assert by_time["until"] == 2
    assert ok(fleet("replay", "--until", "2000-01-01T00:00:00", "--json"))["head"] == 0
    assert ok(fleet("status", "--json"))["queue"]["by_state"]["cancelled"] == 1
    assert "as of position 1:" in ok_text(fleet("replay", "--until", "1"))
    ok(fleet("replay", "--verify"))  # --until touched no table


def test_a_listing_reads_only_what_it_shows_and_counts_come_from_the_counts(
        fleet: Run, project: Path) -> None:
    with open_store(str(db_of(project))) as store:
        services = Services(store, actor="test")
        services.submit_many([
            TaskSpec(f"t{n:02}", f"task {n}", Priority.HIGH if n % 3 == 0 else Priority.LOW)
            for n in range(30)])
        services.cancel("t01")
    shown = fleet("tasks", "list", "--limit", "5", "--json")
    assert [t["task_id"] for t in ok(shown)] == ["t00", "t03", "t06", "t09", "t12"]
    assert "25 more not shown" in shown.stderr
    assert len(ok(fleet("tasks", "list", "--limit", "0", "--json"))) == 30
    queued = fleet("tasks", "list", "--state", "queued", "--limit", "28", "--json")
    assert len(ok(queued)) == 28
    assert "1 more not shown" in queued.stderr
    status = ok(fleet("status", "--json"))
    assert status["queue"]["by_state"]["queued"] == 29
    assert status["queue"]["by_state"]["cancelled"] == 1
    assert status["queue"]["by_state_and_priority"]["queued"]["HIGH"] == 10
    # The counts are a view like the others: a replay rebuilds them exactly.
    assert fleet("replay", "--verify").returncode == 0
