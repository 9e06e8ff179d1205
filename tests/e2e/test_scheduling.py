"""Scheduling with real processes: a real worker waits out a backoff, a delay, a dependency."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, Run, clean_env
from tests.e2e.test_worker import AGENT, Fleet, wait_until
from tri24es import events as ev
from tri24es.names import RequeueReason, task_stream
from tri24es.scheduling import slot_task_id
from tri24es.timeutil import to_us

SECOND = 1_000_000


def claims_of(fleet: Fleet, task_id: str) -> list[tuple[int, int]]:
    """(attempt, recorded_at) of each claim of the task."""
    return [(ev.decode_event(r).attempt, r.recorded_at)  # type: ignore[attr-defined]
            for r in fleet.services.store.read_stream(task_stream(task_id))
            if r.type == ev.TaskClaimed.topic]


def test_a_worker_retries_a_failed_task_after_its_backoff_and_wakes_for_it(
    fleet: Fleet,
) -> None:
    fleet.submit("flaky", "fail-on 1\nsay fine")
    # Beats every 10 s and polls every 60 s: only waking at the task's time claims it soon.
    proc = fleet.worker("--id", "w1", lease=30.0,
                        env={"TRI24ES_RETRY_BACKOFF": "2s..2s", "POLL_INTERVAL": "60"})
    wait_until(lambda: fleet.state("flaky") == "completed", "the retry completed")
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.RETRY
    assert requeued.not_before is not None
    [failed] = [r for r in fleet.services.store.read_stream("task-flaky")
                if r.type == ev.TaskRequeued.topic]
    due = to_us(requeued.not_before)
    assert 1 * SECOND <= due - failed.recorded_at <= 2 * SECOND  # half the step to all of it
    (_, _first), (_, second) = claims_of(fleet, "flaky")
    assert second >= due  # never before its time
    assert second - due < 5 * SECOND, "the idle worker did not wake at the task's time"
    assert proc.poll() is None


def test_submit_takes_a_retry_backoff_and_refuses_a_bad_one(run: Run) -> None:
    assert run("init").returncode == 0
    done = run("submit", "Flaky", "--id", "f", "--retry-backoff", "30s..1h", "--json")
    assert done.returncode == 0, done.stderr
    shown = run("tasks", "show", "f", "--json")
    assert '"retry_backoff": "30s..3600s"' in shown.stdout
    bad = run("submit", "Flaky", "--id", "g", "--retry-backoff", "soon")
    assert (bad.returncode, bad.stderr) == (
        2, "tri24es: error: bad retry backoff 'soon': expected e.g. 5s..10m, 30s or 0: "
        "nothing submitted\n")
    assert run("tasks", "show", "g").returncode != 0  # nothing written
    env_bad = run("submit", "x", env={"TRI24ES_RETRY_BACKOFF": "soon"})
    assert env_bad.returncode == 2
    assert env_bad.stderr.count("\n") == 1
    assert "TRI24ES_RETRY_BACKOFF" in env_bad.stderr


def test_submit_in_and_at_delay_a_task_and_a_queue_file_may_too(fleet: Fleet) -> None:
    # Long enough to still wait when `tasks list` looks, on a loaded machine.
    done = fleet.run("submit", "Later", "--id", "later", "--in", "15s", "--command",
                     f"{sys.executable} {AGENT} say later")
    assert done.returncode == 0, done.stderr
    queue = fleet.root / "tasks" / "queue"
    (queue / "filed.md").write_text("# Filed\nnot_before: 15s\ncommand: true\n")
    assert fleet.run("queue-watcher", "--once").returncode == 0
    looked_from = time.time()
    listed = fleet.run("tasks", "list")
    looked_until = time.time()
    submitted = {e.task_id: e for e in fleet.events(ev.TaskSubmitted)}
    dues = [e.not_before.timestamp() for e in submitted.values() if e.not_before]
    assert len(dues) == 2
    assert "not before" in listed.stdout
    # Both are still waiting unless the machine took 15 s to get here; the count is of the
    # moment `tasks list` looked, somewhere between the two clocks read around it.
    waiting = re.search(r"(\d+) waiting for their time", listed.stderr)
    assert (int(waiting[1]) if waiting else 0) in range(
        sum(due > looked_until for due in dues), sum(due > looked_from for due in dues) + 1), (
        listed.stderr)
    proc = fleet.worker("--id", "w1", exec_=None, env={"POLL_INTERVAL": "60"}, lease=30.0)
    wait_until(lambda: fleet.state("later") == fleet.state("filed") == "completed",
               "the delayed tasks completed", timeout=60)
    for task_id in ("later", "filed"):
        due = submitted[task_id].not_before
        assert due is not None
        [(_, claimed)] = claims_of(fleet, task_id)
        assert claimed >= to_us(due)
    assert proc.poll() is None


@pytest.mark.parametrize(("args", "error"), [
    (["--in", "soon"], "bad --in 'soon': expected a delay such as 10m or 1h30m"),
    (["--at", "tomorrow"], "bad time 'tomorrow': expected an ISO-8601 time (e.g. "
     "2026-12-01T03:00Z), a delay such as 10m or 'in 1h30m', or now"),
    (["--at", "2027-01-01T00:00Z", "--in", "5m"], "give --at or --in, not both"),
])
def test_submit_refuses_a_bad_time(run: Run, args: list[str], error: str) -> None:
    assert run("init").returncode == 0
    done = run("submit", "x", "--id", "x", *args)
    assert (done.returncode, done.stderr) == (2, f"tri24es: error: {error}: nothing submitted\n")
    assert run("tasks", "show", "x").returncode == 1


def test_a_chain_of_queue_files_runs_in_dependency_order(fleet: Fleet) -> None:
    queue = fleet.root / "tasks" / "queue"
    (queue / "CRITICAL").mkdir()
    (queue / "CRITICAL" / "deploy.md").write_text("# Deploy\nafter: test\n")
    (queue / "test.md").write_text("# Test\nafter: build\n")
    (queue / "build.md").write_text("# Build\n")
    (queue / "typo.md").write_text("# Typo\nafter: biuld\n")
    scanned = fleet.run("queue-watcher", "--once")
    assert "submitted 3, already known 0, rejected 1" in scanned.stdout, scanned.stdout
    assert (fleet.root / "tasks/rejected/typo.md.reason").read_text().startswith(
        "unknown dependency 'biuld'")
    proc = fleet.worker("--id", "w1", "--exit-when-idle", exec_="true")
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert [e.task_id for e in fleet.events(ev.TaskCompleted)] == ["build", "test", "deploy"]


def test_submit_after_refuses_an_unknown_dependency_in_one_line(run: Run) -> None:
    assert run("init").returncode == 0
    assert run("submit", "Build", "--id", "build").returncode == 0
    done = run("submit", "Deploy", "--id", "deploy", "--after", "build", "--after", "nope")
    assert (done.returncode, done.stderr) == (
        2, "tri24es: error: task 'deploy': unknown dependency 'nope': nothing submitted\n")
    assert run("submit", "Deploy", "--id", "deploy", "--after", "build").returncode == 0
    listed = run("tasks", "list")
    assert "after build" in listed.stdout
    assert "1 waiting for their dependencies: not completed yet" in listed.stderr
    shown = run("tasks", "show", "deploy", "--json")
    assert json.loads(shown.stdout)["task"]["after"] == ["build"]


def test_tasks_update_changes_a_queued_task_and_refuses_the_rest(run: Run) -> None:
    assert run("init").returncode == 0
    assert run("submit", "Later", "--id", "t", "--in", "1h").returncode == 0
    done = run("tasks", "update", "t", "--priority", "critical", "--at", "now", "--model",
               "claude", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["priority"], row["model"]) == ("CRITICAL", "claude")
    assert "TaskUpdated" in run("tasks", "show", "t").stdout
    nothing = run("tasks", "update", "t")
    assert (nothing.returncode, nothing.stderr) == (
        2, "tri24es: error: say what to change (e.g. --priority HIGH): nothing changed\n")
    bad = run("tasks", "update", "t", "--priority", "urgent")
    assert (bad.returncode, bad.stderr) == (
        2, "tri24es: error: bad priority 'urgent': expected one of CRITICAL, HIGH, MEDIUM, LOW\n")
    assert run("tasks", "cancel", "t").returncode == 0
    late = run("tasks", "update", "t", "--priority", "LOW")
    assert (late.returncode, late.stderr) == (
        1, "tri24es: error: task 't' is cancelled: only a queued task can be changed\n")


def test_limits_set_list_unset_and_status_shows_them_in_use(run: Run) -> None:
    assert run("init").returncode == 0
    done = run("limits", "set", "model=claude", "3")
    assert (done.returncode, done.stdout) == (0, "model=claude: at most 3 running\n")
    assert run("limits", "set", "shard=gpu", "0").returncode == 0
    listed = run("limits", "list", "--json")
    assert json.loads(listed.stdout) == [
        {"key": "model", "value": "claude", "cap": 3, "running": 0},
        {"key": "shard", "value": "gpu", "cap": 0, "running": 0}]
    assert run("submit", "Train", "--shard", "gpu").returncode == 0
    status = run("status")
    assert "limit:        model=claude: 0 of 3 running" in status.stdout
    assert "waiting:      1 waiting for shard=gpu: its fleet-wide cap of 0 is in use " \
        "(0 running)" in status.stdout
    assert json.loads(run("status", "--json").stdout)["limits"][1]["value"] == "gpu"
    assert run("limits", "unset", "shard=gpu").stdout == "shard=gpu: no cap\n"
    gone = run("limits", "unset", "shard=gpu")
    assert (gone.returncode, gone.stderr) == (2, "tri24es: error: no limit on shard=gpu\n")
    for bad in (["set", "colour=red", "1"], ["set", "model=", "1"], ["unset", "claude"]):
        refused = run("limits", *bad)
        assert refused.returncode == 2, bad
        assert refused.stderr.count("\n") == 1, refused.stderr
    events = run("events", "--stream", "limits").stdout
    assert events.count("LimitSet") == 2
    assert events.count("LimitRemoved") == 1


def test_two_queue_watchers_fire_a_schedules_slot_once(fleet: Fleet) -> None:
    added = fleet.run("schedule", "add", "tick", "--cron", "* * * * *", "--title", "Tick",
                      "--command", "true")
    assert (added.returncode, added.stdout) == (0, "schedule tick: * * * * * (UTC)\n")
    # Both watchers' clocks 2 s before a minute: they fire that minute's slot at once.
    real = time.time()
    ahead = 60 - real % 60 - 2
    offset = int((ahead if ahead > 0 else ahead + 60) * SECOND)
    env = clean_env(fleet.root) | {"TRI24ES_CLOCK_OFFSET_US": str(offset), "POLL_INTERVAL": "60"}
    watchers = [subprocess.Popen([*CLI, "queue-watcher"], cwd=fleet.root, env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        wait_until(lambda: fleet.events(ev.TaskSubmitted), "the slot's task submitted")
        slot = (real * SECOND + offset) // (60 * SECOND) * 60 * SECOND + 60 * SECOND
        # That minute's slot; or the one before, when the schedule was added in the same
        # minute of the watchers' clock as that slot (a loaded machine, a minute's edge).
        slots = {slot_task_id("tick", slot), slot_task_id("tick", slot - 60 * SECOND)}
        [submitted] = fleet.events(ev.TaskSubmitted)
        task_id = submitted.task_id
        assert (task_id in slots, submitted.source) == (True, "schedule:tick"), (task_id, slots)
        listed = json.loads(fleet.run("schedule", "list", "--json").stdout)
        assert [(s["name"], s["cron"]) for s in listed] == [("tick", "* * * * *")]
    finally:
        for proc in watchers:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30)[0] for proc in watchers]
    assert sum(f"submitted {task_id} (MEDIUM) from schedule:tick" in out
               for out in outputs) == 1, outputs
    assert len(fleet.services.store.read_stream(task_stream(task_id))) == 1
    assert fleet.run("schedule", "remove", "tick").stdout == "schedule tick: removed\n"
    assert fleet.run("schedule", "list").stdout == "no schedules\n"


@pytest.mark.parametrize(("args", "error"), [
    (["--cron", "0 25 * * *"], "bad cron expression '0 25 * * *': expected 5 fields such as "
     "'0 3 * * *' (minute hour day month weekday) or @daily: nothing added"),
    (["--cron", "@daily", "--tz", "Mars/Olympus"],
     "unknown time zone 'Mars/Olympus': expected e.g. UTC or Europe/Paris: nothing added"),
])
def test_schedule_add_refuses_bad_input_in_one_line(run: Run, args: list[str],
                                                    error: str) -> None:
    assert run("init").returncode == 0
    done = run("schedule", "add", "n", "--title", "T", *args)
    assert (done.returncode, done.stderr) == (2, f"tri24es: error: {error}\n")
    assert run("schedule", "list").stdout == "no schedules\n"


def test_models_pause_list_and_resume(run: Run) -> None:
    assert run("init").returncode == 0
    paused = run("models", "pause", "claude", "--until", "2h", "--reason", "usage limit")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("model claude: paused until ")
    listed = json.loads(run("models", "list", "--json").stdout)
    assert [(m["model"], m["reason"]) for m in listed] == [("claude", "usage limit")]
    assert run("submit", "Fix", "--model", "claude").returncode == 0
    assert "1 waiting for model=claude: the model is paused until" in run("status").stdout
    bad = run("models", "pause", "claude", "--until", "someday")
    assert bad.returncode == 2
    assert bad.stderr.startswith("tri24es: error: bad --until: bad time 'someday'")
    assert run("models", "resume", "claude").stdout == "model claude: resumed\n"
    assert run("models", "list").stdout == "no paused models\n"
    again = run("models", "resume", "claude")
    assert (again.returncode, again.stderr) == (
        1, "tri24es: error: model 'claude' is not paused\n")


def test_pausing_a_model_stops_its_running_attempt_at_no_retry_cost(fleet: Fleet) -> None:
    fleet.submit("long", "hang-on 1\nsay done", model="claude", max_retries=0)
    proc = fleet.worker("--id", "w1", "--model", "claude")
    fleet.started("long")
    assert fleet.run("models", "pause", "claude", "--reason", "usage limit").returncode == 0
    wait_until(lambda: fleet.events(ev.TaskRequeued), "the attempt stopped and requeued")
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.MODEL_PAUSED
    row = fleet.services.task("long")
    assert (row.state, row.retries_used) == ("queued", 0)  # max_retries=0, still it may run
    assert len(claims_of(fleet, "long")) == 1  # not claimed again while paused
    assert fleet.run("models", "resume", "claude").returncode == 0
    wait_until(lambda: fleet.state("long") == "completed", "the task completed after resume")
    assert [attempt for attempt, _ in claims_of(fleet, "long")] == [1, 2]
    assert proc.poll() is None


def test_replay_rebuilds_every_scheduling_view_exactly(run: Run) -> None:
    assert run("init").returncode == 0
    for args in (["submit", "Build", "--id", "build", "--retry-backoff", "10s..1m"],
                 ["submit", "Deploy", "--id", "deploy", "--after", "build", "--in", "1h"],
                 ["tasks", "update", "deploy", "--priority", "HIGH"],
                 ["tasks", "cancel", "build"],  # blocks deploy
                 ["limits", "set", "model=claude", "2"],
                 ["models", "pause", "codex", "--until", "2h"],
                 ["schedule", "add", "nightly", "--cron", "@daily", "--title", "Nightly"]):
        done = run(*args)
        assert done.returncode == 0, (args, done.stderr)
    before = run("tasks", "list", "--json").stdout
    tasks = {t["task_id"]: t for t in json.loads(before)}
    assert tasks["deploy"]["blocked"] == "dependency build was cancelled"
    assert run("replay", "--verify").returncode == 0
    assert run("replay").returncode == 0
    assert run("tasks", "list", "--json").stdout == before
    assert run("replay", "--verify").returncode == 0


def test_an_idle_worker_wakes_when_its_tasks_dependency_completes(fleet: Fleet) -> None:
    fleet.submit("build", "say built", model="a")
    fleet.submit("deploy", "say deployed", model="b", after=("build",))
    slow = {"POLL_INTERVAL": "60"}  # and a 30 s lease: a beat every 10 s
    waiting = fleet.worker("--id", "wb", "--model", "b", lease=30.0, env=slow)
    wait_until(lambda: fleet.worker_state("wb") == "idle", "the deploy worker idle")
    builder = fleet.worker("--id", "wa", "--model", "a", lease=30.0, env=slow)
    wait_until(lambda: fleet.state("deploy") == "completed", "deploy completed")
    [built] = [r for r in fleet.services.store.read_stream("task-build")
               if r.type == ev.TaskCompleted.topic]
    [(_, claimed)] = claims_of(fleet, "deploy")
    assert claimed - built.recorded_at < 5 * SECOND, "the idle worker was not woken"
    assert waiting.poll() is None
    assert builder.poll() is None


def test_a_task_whose_reservation_does_not_fit_waits_and_runs_once_the_limit_is_raised(
    fleet: Fleet, run: Run,
) -> None:
    limit = {"BUDGET_DAILY_LIMIT": "2"}
    assert run("submit", "Costly", "--id", "costly", "--max-budget", "1", "--command",
               f"{sys.executable} {AGENT}").returncode == 0
    assert run("spend", "record", "--usd", "1.60").returncode == 0
    # The worker finds nothing it may reserve for, and so is idle.
    proc = fleet.worker("--id", "w1", "--exit-when-idle", env=limit, exec_=None)
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert fleet.state("costly") == "queued"
    assert fleet.events(ev.TaskClaimed) == []
    status = run("status", env=limit).stdout
    assert ("waiting:      1 waiting for today's budget: today's budget left $0.40 cannot "
            "cover its reservation $1.00") in status
    assert ("budget today: $1.60 spent, $0.00 reserved by running attempts, of $2.00 "
            "($0.40 left)") in status
    listed = run("tasks", "list", env=limit)
    assert "today's budget left $0.40 cannot cover its reservation $1.00" in listed.stderr

    # The daily limit raised (in tri24es.toml this time): the next worker claims it.
    (fleet.root / "tri24es.toml").write_text("budget_daily_limit = 3\n")
    proc = fleet.worker("--id", "w2", "--exit-when-idle", exec_=None)
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert fleet.state("costly") == "completed"
    [claimed] = fleet.events(ev.TaskClaimed)
    assert claimed.reserved_usd == 1
    today = json.loads(run("status", "--json").stdout)["budget_today"]
    assert today == {"daily_limit_usd": "3", "spent_usd": "1.6", "reserved_usd": "0",
                     "left_usd": "1.4"}
    assert "waiting" not in run("status").stdout


def test_a_running_attempts_reservation_is_in_status_and_its_spend_settles_it(
    fleet: Fleet, run: Run,
) -> None:
    fleet.submit("slow", "spend 0.5\nhang", max_budget_usd=Decimal("2.5"))
    fleet.worker("--id", "w1", env={"BUDGET_DEFAULT_RESERVATION": "0.5"})

    def reserved() -> str:
        return str(json.loads(run("status", "--json").stdout)["budget_today"]["reserved_usd"])

    fleet.started("slow")
    wait_until(lambda: reserved() == "2", "the spend settled $0.50 of the $2.50 reserved")
    assert run("tasks", "cancel", "slow").returncode == 0
    wait_until(lambda: reserved() == "0", "the attempt's end released its reservation")
    bad = run("status", env={"BUDGET_DEFAULT_RESERVATION": "-1"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "tri24es: error: BUDGET_DEFAULT_RESERVATION='-1': must be a finite amount of 0 or more")


def test_submit_and_tasks_show_say_what_similar_tasks_cost_and_took(
    fleet: Fleet, run: Run,
) -> None:
    command = f"{sys.executable} {AGENT}"
    for n, cost in enumerate(["0.10", "0.30", "0.20"]):
        fleet.submit(f"fix{n}", f"spend {cost}", type="fix", model="m",
                     command=command.split())
        if n == 1:  # two samples: too few to say anything
            proc = fleet.worker("--id", "w0", "--model", "m", "--type", "fix",
                                "--exit-when-idle", exec_=None)
            assert fleet.exit_code(proc) == 0, fleet.output(proc)
            said = run("submit", "Another", "--id", "early", "--type", "fix", "--model", "m")
            assert said.stdout == "submitted early\n"
            assert run("tasks", "cancel", "early").returncode == 0
    proc = fleet.worker("--id", "w1", "--model", "m", "--type", "fix", "--exit-when-idle",
                        exec_=None)
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    said = run("submit", "Fix it again", "--id", "again", "--type", "fix", "--model", "m")
    first, line = said.stdout.splitlines()
    assert first == "submitted again"
    assert line.startswith("similar tasks (type=fix, model=m): cost p50 $0.20, p90 $0.30; "
                           "time p50 ")
    assert line.endswith(" (3 completed)")
    assert line in run("tasks", "show", "fix1").stdout.splitlines()
    shown = json.loads(run("tasks", "show", "again", "--json").stdout)["estimate"]
    assert (shown["samples"], shown["cost_p50_usd"], shown["cost_p90_usd"]) == (3, "0.2", "0.3")
    assert 0 < shown["seconds_p50"] <= shown["seconds_p90"]
    other = json.loads(run("submit", "Docs", "--type", "docs", "--json").stdout)
    assert other["estimate"] is None


def test_a_schedule_that_names_no_date_is_refused_and_one_in_the_log_is_listed(
        fleet: Fleet) -> None:
    """`schedule add --cron '0 3 31 2 *'` was taken, and `schedule list` and the queue
    watcher then ended in croniter's traceback (the daemon exited)."""
    from tri24es.names import schedule_stream
    from tri24es.projections import connection_of

    refused = fleet.run("schedule", "add", "feb31", "--cron", "0 3 31 2 *", "--title", "x")
    assert (refused.returncode, refused.stderr) == (
        2, "tri24es: error: bad cron expression '0 3 31 2 *': it names no date to come (such "
           "as 31 February): nothing added\n")
    never = ev.ScheduleAdded(name="feb31", cron="0 3 31 2 *", title="x", by="test")
    stream = schedule_stream(never.name)
    with fleet.services.store.transaction() as tx:  # as an older version recorded it
        fleet.services._append(connection_of(tx), tx, stream, [never], 0)
    listed = fleet.run("schedule", "list")
    assert listed.returncode == 0, listed.stderr
    assert "next never  last task -" in listed.stdout
    assert json.loads(fleet.run("schedule", "list", "--json").stdout)[0]["next_at"] is None
    watched = fleet.run("queue-watcher", "--once")
    assert watched.returncode == 0, watched.stderr


def test_an_empty_model_shard_or_type_at_submit_is_none(run: Run) -> None:
    """`submit --model ''` kept '' and no worker ever matched it ('waiting for model=: no live
    worker' for ever); '' is none, as `tasks update --model ''` says."""
    assert run("init").returncode == 0
    done = run("submit", "Any", "--id", "any", "--model", "", "--shard", "", "--type", "",
               "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(run("tasks", "show", "any", "--json").stdout)["task"]
    assert (row["model"], row["shard"], row["type"]) == (None, None, None)
    assert "model=" not in run("tasks", "list").stderr


def test_tasks_update_changes_how_a_queued_task_runs_and_a_worker_runs_it_so(
    run: Run, project: Path,
) -> None:
    assert run("init").returncode == 0
    assert run("submit", "Later", "--id", "t", "--agent", "claude").returncode == 0
    marker = project / "ran-the-new-command"
    script = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('yes')"
    done = run("tasks", "update", "t", "--command", shlex.join([sys.executable, "-c", script]),
               "--review", "--base", "main", "--retry-from", "base", "--require-changes",
               "--resume")
    assert done.returncode == 0, done.stderr
    history = json.loads(run("tasks", "show", "t", "--json").stdout)["history"]
    changed = history[-1]["fields"]
    assert changed["command"] == [sys.executable, "-c", script]
    assert changed["agent"] == "claude"  # not given: kept, as the two are recorded together
    assert (changed["review"], changed["base"], changed["retry_from"]) == (True, "main", "base")
    # Neither a command nor an agent: a worker without --exec leaves it alone.
    assert run("tasks", "update", "t", "--command", "", "--agent", "").returncode == 0
    assert json.loads(run("tasks", "show", "t", "--json").stdout)["task"]["has_command"] is False
    assert run("tasks", "update", "t", "--command", shlex.join([sys.executable, "-c", script]),
               "--no-review", "--no-require-changes").returncode == 0
    worked = run("worker", "--exit-when-idle", "--max-tasks", "1")
    assert worked.returncode == 0, worked.stderr
    assert marker.read_text() == "yes"  # the updated command ran
    assert json.loads(run("tasks", "show", "t", "--json").stdout)["task"]["state"] == "completed"
    for bad, said in ((["--agent", "bogus"], "unknown agent 'bogus'"),
                      (["--retry-from", "x"], "bad retry_from 'x'"),
                      (["--command", "'unclosed"], "bad command")):
        refused = run("tasks", "update", "t", *bad)
        assert refused.returncode == 2, bad
        assert said in refused.stderr


def test_tasks_update_changes_a_queued_tasks_retry_backoff(run: Run) -> None:
    assert run("init").returncode == 0
    failing = shlex.join([sys.executable, "-c", "raise SystemExit(3)"])
    assert run("submit", "Flaky", "--id", "f", "--command", failing, "--max-retries", "1",
               "--retry-backoff", "1h").returncode == 0
    done = run("tasks", "update", "f", "--retry-backoff", "0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retry_backoff"] == "0s..0s"
    # With the hour it had, the worker would find nothing to do after the first failure.
    worked = run("worker", "--exit-when-idle", env={"TRI24ES_RETRY_BACKOFF": "1h"})
    assert worked.returncode == 0, worked.stderr
    task = json.loads(run("tasks", "show", "f", "--json").stdout)["task"]
    assert (task["state"], task["attempt"]) == ("failed", 2)
    refused = run("tasks", "update", "f", "--retry-backoff", "soon")
    assert refused.returncode == 2
    assert "bad retry backoff 'soon'" in refused.stderr
