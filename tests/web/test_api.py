"""The JSON API against a real server: the CLI's shapes, filters, pages, a task's output."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from eventlog import open_store
from tests.web.conftest import Server
from tri24es.events import SpendRecorded
from tri24es.services import Services

# One server per module, kept in one test process where xdist can (pytest 9.2 loses the group:
# then each process starts its own server, and no test relies on another's tasks).
pytestmark = pytest.mark.xdist_group("web-api")


def _cli_json(server: Server, *args: str) -> object:
    done = server.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_and_tasks_have_the_cli_shapes(server: Server) -> None:
    for n in range(3):
        assert server.cli("submit", f"Shape task {n}", "--id", f"shape-{n}",
                          "--model", "claude").returncode == 0
    status = server.get("/api/status").json()
    cli = _cli_json(server, "status")
    assert status == cli
    listed = {t["task_id"]: t for t in server.get("/api/tasks?model=claude").json()}
    assert {t["task_id"]: t for t in _cli_json(server, "tasks", "list")  # type: ignore[union-attr]
            if t["model"] == "claude"} == listed
    shown = server.get("/api/tasks/shape-1").json()
    from_cli = _cli_json(server, "tasks", "show", "shape-1")
    assert {k: shown[k] for k in ("task", "no_progress", "attempts", "history",
                                  "estimate")} == from_cli
    assert server.get("/api/workers").json() == _cli_json(server, "workers", "list")
    assert server.cli("spend", "record", "--usd", "0.25", "--model", "m1", "--task",
                      "shape-1").returncode == 0
    spend = server.get("/api/spend?window=1d&by=task").json()
    assert spend == _cli_json(server, "spend", "--window", "1d", "--by", "task")
    assert spend["task"] == {"shape-1": "0.25"}
    page = server.get("/spend?window=1d").text
    assert "shape-1" in page
    assert "$0.25" in page
    assert server.get("/api/spend?window=soon").status == 400
    assert server.get("/api/spend?by=colour").status == 400


def test_filters_and_pages(server: Server) -> None:
    for n in range(7):
        priority = "HIGH" if n % 2 else "LOW"
        assert server.cli("submit", f"Page {n} {'needle' if n in (2, 5) else 'hay'}",
                          "--id", f"page-{n}", "--priority", priority).returncode == 0
    found = server.get("/api/tasks?q=NEEDLE").json()
    assert [t["task_id"] for t in found] == ["page-5", "page-2"]  # newest first
    assert [t["task_id"] for t in server.get("/api/tasks?q=page-&priority=high").json()] == [
        "page-5", "page-3", "page-1"]
    seen, path = [], "/api/tasks?q=page-&limit=3"
    while path:
        answer = server.get(path)
        seen += [t["task_id"] for t in answer.json()]
        link = answer.headers.get("link")
        path = re.match(r"<([^>]+)>", link).group(1) if link else ""  # type: ignore[union-attr]
    assert seen == [f"page-{n}" for n in reversed(range(7))]
    bad = server.get("/api/tasks?state=sleeping")
    assert bad.status == 400
    assert "bad state 'sleeping'" in bad.json()["error"]
    assert server.get("/api/tasks?limit=-1").status == 400
    assert server.get("/api/tasks/no-such-task").status == 404


def test_a_task_page_shows_its_output_and_history(server: Server) -> None:
    # CRITICAL: claimed before the other tests' tasks in this project
    assert server.cli("submit", "Say hello", "--id", "hello",
                      "--priority", "CRITICAL").returncode == 0
    worker = server.cli("worker", "--id", "api-worker", "--exec", "echo hello-from-the-agent",
                        "--max-tasks", "1")
    assert worker.returncode == 0, worker.stderr
    assert server.get("/api/tasks/hello/log").text == "hello-from-the-agent\n"
    shown = server.get("/api/tasks/hello").json()
    assert shown["task"]["state"] == "completed"
    assert shown["log"]["text"] == "hello-from-the-agent\n"
    assert [h["type"] for h in shown["history"]][:2] == ["TaskSubmitted", "TaskClaimed"]
    page = server.get("/tasks/hello").text
    assert "hello-from-the-agent" in page
    assert "TaskCompleted" in page


def test_events_filter(server: Server) -> None:
    assert server.cli("submit", "Event filter first", "--id", "evf-0").returncode == 0
    assert server.cli("submit", "Event filter", "--id", "evf").returncode == 0
    found = server.get("/api/events?after=0&type=TaskSubmitted").json()
    assert found
    assert {e["type"] for e in found} == {"TaskSubmitted"}
    stream = server.get("/api/events?after=0&stream=task-evf").json()
    assert [e["type"] for e in stream] == ["TaskSubmitted"]
    assert stream[0]["data"]["title"] == "Event filter"

    # Without a position: the last matching events, however far back they are.
    with open_store(str(server.root / "state" / "tri24es.db")) as store:
        Services(store, actor="test").record_spends([
            SpendRecorded(amount=Decimal("0.001"), task=f"spend-{n}", source="test",
                          occurred_at=datetime.now(UTC)) for n in range(300)])
    last = server.get("/api/events?type=TaskSubmitted&limit=2").json()
    assert [e["data"]["task_id"] for e in last] == ["evf-0", "evf"]
    assert len(server.get("/api/events").json()) == 200
    page = server.get("/events?type=TaskSubmitted,TaskCancelled").text
    assert "followed live" in page
    assert "task-evf" in page


def test_review_retry_and_the_fleet_through_the_api(server: Server) -> None:
    bearer = {"authorization": f"Bearer {server.token}"}
    for task_id in ("reviewed", "rejected"):
        assert server.cli("submit", f"Look at {task_id}", "--id", task_id, "--review",
                          "--priority", "CRITICAL").returncode == 0
    assert server.cli("submit", "Fails", "--id", "fails", "--max-retries", "0", "--priority",
                      "CRITICAL", "--command", "false").returncode == 0
    worker = server.cli("worker", "--id", "review-worker", "--exec", "echo looked",
                        "--max-tasks", "2")  # the two CRITICAL ones first submitted
    assert worker.returncode == 0, worker.stderr
    worker = server.cli("worker", "--id", "command-worker", "--max-tasks", "1")  # its own command
    assert worker.returncode == 0, worker.stderr
    states = {t: server.get(f"/api/tasks/{t}").json()["task"]["state"]
              for t in ("reviewed", "rejected", "fails")}
    assert states == {"reviewed": "review", "rejected": "review", "fails": "failed"}

    assert server.post_json("/api/tasks/reviewed/approve", {}, **bearer).json() == {
        "task_id": "reviewed", "state": "completed", "merged_into": None, "merge_commit": None}
    no_reason = server.post_json("/api/tasks/rejected/reject", {"reason": " "}, **bearer)
    assert no_reason.status == 400
    assert server.post_json("/api/tasks/rejected/reject", {"reason": "say more"},
                            **bearer).json() == {"task_id": "rejected", "state": "queued"}
    assert server.post_json("/api/tasks/fails/retry", {"budget": "lots"}, **bearer).status == 400
    assert server.post_json("/api/tasks/fails/retry", {}, **bearer).json() == {
        "task_id": "fails", "state": "queued"}
    assert server.post_json("/api/tasks/fails/retry", {}, **bearer).status == 409  # queued now
    assert server.post_json("/api/tasks/fails/launch", {}, **bearer).status == 404
    assert [server.get(f"/api/tasks/{t}").json()["task"]["state"]
            for t in ("reviewed", "rejected", "fails")] == ["completed", "queued", "queued"]
    feedback = server.get("/api/events?after=0&type=TaskReviewRejected").json()
    assert [(e["data"]["reason"], e["actor"]) for e in feedback] == [
        ("say more", "web:127.0.0.1")]

    # Reprioritise a waiting task: `tasks update --priority`, recorded with the actor.
    assert server.post_json("/api/tasks/fails/prioritise", {"priority": "urgent"},
                            **bearer).status == 400
    assert server.post_json("/api/tasks/fails/prioritise", {"priority": "low"},
                            **bearer).json()["priority"] == "LOW"
    assert server.post_json("/api/tasks/reviewed/prioritise", {"priority": "HIGH"},
                            **bearer).status == 409  # completed: only a queued task changes
    updated = server.get("/api/events?after=0&type=TaskUpdated").json()
    assert [(e["data"]["priority"], e["actor"]) for e in updated] == [("LOW", "web:127.0.0.1")]

    for task_id in ("rejected", "fails"):  # CRITICAL: they would go before later tests' tasks
        assert server.post_json(f"/api/tasks/{task_id}/cancel", {}, **bearer).status == 200
    # the worker above stopped (it ran its tasks): pausing the fleet reaches no one
    assert server.post_json("/api/fleet/pause", {}, **bearer).json() == {
        "action": "pause", "workers": []}
    assert server.post_json("/api/workers/review-worker/dance", {}, **bearer).status == 404
    assert server.post_json("/api/workers/nobody/pause", {}, **bearer).status == 404


def test_a_kill_switch_reset_is_refused_while_the_breach_holds(server: Server) -> None:
    """The switch is on while this runs, and off again at its end."""
    bearer = {"authorization": f"Bearer {server.token}"}
    assert server.cli("spend", "record", "--usd", "50").returncode == 0  # $10/min over 5 min
    check = server.cli("budget-watchdog", "--once")
    assert check.returncode == 1, check.stdout + check.stderr
    assert server.get("/api/status").json()["killswitch"]["active"] is True
    refused = server.post_json("/api/killswitch/reset", {"reason": "try"}, **bearer)
    assert refused.status == 409
    assert "rate" in refused.json()["error"]
    assert server.get("/api/status").json()["killswitch"]["active"] is True
    assert server.post_json("/api/killswitch/reset", {"reason": "x", "allow_today": "-3"},
                            **bearer).status == 400
    done = server.post_json("/api/killswitch/reset", {"reason": "agent fixed", "force": "1"},
                            **bearer)
    assert done.status == 200, done.text
    assert done.json()["reset"] is True
    assert done.json()["fresh_window"] is True
    assert server.get("/api/status").json()["killswitch"]["active"] is False
    (reset,) = server.get("/api/events?after=0&type=KillSwitchReset").json()
    assert (reset["actor"], reset["data"]["by"]) == ("web:127.0.0.1", "web:127.0.0.1")


def test_the_diff_of_a_result(server: Server, tmp_path: Path) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    for args in (("init", "-q", "-b", "main"), ("add", "-A"),
                 ("-c", "user.name=op", "-c", "user.email=op@example", "commit", "-q",
                  "--allow-empty", "-m", "init")):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    assert server.cli("submit", "Write <b>hello</b>", "--id", "differ",
                      "--priority", "CRITICAL").returncode == 0
    agent = "sh -c 'echo \"<b>hello</b>\" > hello.html'"
    worker = server.cli("worker", "--id", "diff-worker", "--exec", agent, "--repo", str(repo),
                        "--max-tasks", "1")
    assert worker.returncode == 0, worker.stderr
    text = server.get("/api/tasks/differ/diff").text
    assert "+<b>hello</b>" in text
    assert "hello.html" in text
    page = server.get("/tasks/differ").text
    assert "+&lt;b&gt;hello&lt;/b&gt;" in page  # shown, escaped
    assert "diff --git" not in server.get("/tasks/differ?fragment=1").text  # not per refresh
    assert server.get("/api/tasks/differ/diff?attempt=9").status == 404
    assert server.get("/api/tasks/hello/diff").status == 404  # ran without --repo


def test_a_task_page_shows_what_similar_tasks_cost_and_took(server: Server) -> None:
    """`submit` and `tasks show` print what similar tasks cost and took; the dashboard's task
    page did not (only /api/tasks/<id> had it, as JSON). Last in the module: its worker takes
    only tasks with a command of their own, and the earlier tests leave none queued."""
    import os

    from tri24es.names import Priority
    from tri24es.services import TaskSpec

    with open_store(str(server.root / "state" / "tri24es.db")) as store:
        services = Services(store, actor="test")
        services.start_worker("estimate-worker", pid=os.getpid(), pid_start_time=1, host="h",
                              model="est-model", type="est", has_exec=False)
        services.heartbeat("estimate-worker")
        for n, cost in enumerate(("0.10", "0.30", "0.20")):
            services.submit(TaskSpec(f"est-{n}", "Estimated", Priority.CRITICAL, type="est",
                                     model="est-model", command=["true"]))
            claim = services.claim("estimate-worker")
            assert claim is not None
            assert claim.task_id == f"est-{n}"
            services.record_spend(SpendRecorded(amount=Decimal(cost), task=f"est-{n}",
                                                source="test", occurred_at=datetime.now(UTC)))
            services.complete(f"est-{n}", "estimate-worker", claim.attempt)
        services.stopped("estimate-worker")
    submitted = server.cli("submit", "Estimate me", "--id", "est-new", "--type", "est",
                           "--model", "est-model")
    assert submitted.returncode == 0, submitted.stderr
    line = submitted.stdout.splitlines()[1]
    assert line.startswith("similar tasks (type=est, model=est-model): cost p50 $0.20, p90 "
                           "$0.30; time p50 ")
    assert line in server.cli("tasks", "show", "est-new").stdout.splitlines()
    assert f'<p id="estimate">{line}</p>' in server.get("/tasks/est-new").text
    assert line in server.get("/tasks/est-new?fragment=1").text  # and on each live refresh
    assert "estimate_line" not in server.get("/api/tasks/est-new").json()
    assert server.cli("submit", "Lone", "--id", "est-lone", "--type", "lone").returncode == 0
    assert 'id="estimate"' not in server.get("/tasks/est-lone").text  # none of its type yet
    assert server.cli("tasks", "cancel", "est-lone").returncode == 0
    assert server.cli("tasks", "cancel", "est-new").returncode == 0
