"""History and time travel: ``tasks show`` timelines and ``status --at``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Run
from tests.e2e.test_top import populate


def test_status_at_a_time_shows_the_fleet_as_it_was_then(run: Run, project: Path) -> None:
    populate(project / "state" / "tri24es.db")
    events = [json.loads(line) for line in run("events", "--json").stdout.splitlines()]
    completed = next(e for e in events if e["type"] == "TaskCompleted")
    later = next(e for e in events if e["position"] == completed["position"] + 1)
    assert later["recorded_at"] > completed["recorded_at"]

    then = json.loads(run("status", "--at", completed["recorded_at"], "--json").stdout)
    assert then["until"] == completed["position"]
    assert then["queue"]["by_state"]["completed"] == 1
    assert then["queue"]["by_state"]["running"] == 1  # a; d was not claimed yet
    assert then["workers"]["by_state"]["idle"] == 1
    assert then["spend"]["total_usd"] == "0"
    assert then["killswitch"]["active"] is False
    assert then == json.loads(run("replay", "--until", str(completed["position"]),
                                  "--json").stdout)

    before = json.loads(run("status", "--at", "2020-01-01T00:00:00Z", "--json").stdout)
    assert before["until"] == 0
    assert before["queue"]["total"] == 0

    now = json.loads(run("status", "--json").stdout)
    at_end = json.loads(run("status", "--at", events[-1]["recorded_at"], "--json").stdout)
    assert at_end.pop("until") == now["head"]
    # About now, not the fold:
    for present_only in ("waiting", "limits", "budget_today", "ignored_in_queue"):
        now.pop(present_only)
    assert at_end == now

    text = run("status", "--at", completed["recorded_at"])
    assert text.stdout.startswith(f"as of {completed['recorded_at']} "
                                  f"(position {completed['position']}):")
    bad = run("status", "--at", "last tuesday")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "tri24es: error: bad --at 'last tuesday': expected a log position or an ISO-8601 time"
    )


def test_tasks_show_gives_every_event_with_who_when_and_why(run: Run, project: Path) -> None:
    populate(project / "state" / "tri24es.db")
    shown = json.loads(run("tasks", "show", "d", "--json").stdout)
    history = shown["history"]
    assert [h["type"] for h in history] == ["TaskSubmitted", "TaskClaimed", "TaskFailed",
                                           "TaskRequeued"]
    assert all(h["who"] == "test" and h["time"].endswith("Z") for h in history)
    assert history[2]["fields"]["error"] == "agent exited 3"
    assert history[3]["fields"]["reason"] == "retry"
    text = run("tasks", "show", "d").stdout
    assert "TaskFailed" in text
    assert "error=agent exited 3" in text
