"""Controls that agree, used together as an operator runs a fleet (issue: controls): the kill
switch stops attempts without spending their retries, a pause of either kind ends with a
resume of either kind, ``up`` honours stop requests and the kill switch, says why tasks
wait, and a task's budget covers all of its attempts. (The reset without a flap is tested
with the watchdog in test_budget_reset.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, clean_env
from tests.e2e.test_worker import EXEC, Fleet, wait_until
from tri24es import events as ev
from tri24es.names import RequeueReason
from tri24es.timeutil import from_us, now_us


def activate(fleet: Fleet, reason: str = "test trip") -> None:
    assert fleet.services.activate_killswitch(ev.KillSwitchActivated(
        reason=reason, rate=Decimal(0), daily=Decimal(0), rate_limit=Decimal(1),
        daily_limit=Decimal(1)))


def test_a_kill_switch_stop_costs_no_retry_and_the_task_runs_after_the_reset(
        fleet: Fleet, tmp_path: Path) -> None:
    go = tmp_path / "go"
    fleet.submit("once", f"wait {go}\nsay done", max_retries=0)
    worker = fleet.worker("--id", "w-ks")
    fleet.started("once")
    activate(fleet)
    wait_until(lambda: fleet.state("once") == "queued", "the task back in the queue")
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.KILL_SWITCH
    assert not fleet.events(ev.TaskFailed)
    assert fleet.services.task("once").retries_used == 0
    go.touch()
    assert fleet.services.reset_killswitch(by="test", reason="reviewed")
    wait_until(lambda: fleet.state("once") == "completed", "the task run after the reset")
    [done] = fleet.events(ev.TaskCompleted)
    assert done.attempt == 2
    worker.send_signal(signal.SIGTERM)
    assert fleet.exit_code(worker) == 0


@pytest.mark.parametrize(("pause", "resume"), [("signal", "request"), ("request", "signal")])
def test_either_kind_of_resume_ends_either_kind_of_pause(
        fleet: Fleet, pause: str, resume: str) -> None:
    worker = fleet.worker("--id", "w-pr")
    wait_until(lambda: fleet.worker_state("w-pr") == "idle", "the worker idle")
    if pause == "signal":
        worker.send_signal(signal.SIGUSR1)
    else:
        assert fleet.run("workers", "pause", "w-pr").returncode == 0
    wait_until(lambda: fleet.worker_state("w-pr") == "paused", "the worker paused")
    fleet.submit("later", "say hello")
    if resume == "signal":
        worker.send_signal(signal.SIGUSR2)
    else:
        resumed = fleet.run("workers", "resume", "w-pr")
        assert resumed.returncode == 0, resumed.stderr
        assert "resume requested" in resumed.stdout
    wait_until(lambda: fleet.state("later") == "completed", "the task run after the resume")
    worker.send_signal(signal.SIGTERM)
    assert fleet.exit_code(worker) == 0


def test_a_worker_without_exec_takes_only_tasks_with_their_own_command(fleet: Fleet) -> None:
    fleet.submit("bare", "say nothing to run me with")
    own = fleet.run("submit", "Has its own", "--id", "own", "--command", EXEC)
    assert own.returncode == 0, own.stderr
    worker = fleet.worker("--id", "w-bare", "--exit-when-idle", exec_=None)
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    assert "no --exec" in fleet.output(worker)
    assert fleet.state("own") == "completed"
    assert fleet.state("bare") == "queued"  # not dead-lettered with "no command"
    status = json.loads(fleet.run("status", "--json").stdout)
    assert [w.split(":")[0] for w in status["waiting"]] == ["1 waiting for any worker"]


def test_status_and_tasks_list_say_why_queued_tasks_wait(fleet: Fleet) -> None:
    fleet.submit("for-claude", "say hi", model="claude")
    worker = fleet.worker("--id", "w-codex", "--model", "codex")
    wait_until(lambda: fleet.worker_state("w-codex") == "idle", "the worker idle")
    status = fleet.run("status")
    assert "waiting:      1 waiting for model=claude: no live worker has it" in status.stdout
    listed = fleet.run("tasks", "list")
    assert "1 waiting for model=claude: no live worker has it" in listed.stderr
    worker.send_signal(signal.SIGTERM)
    assert fleet.exit_code(worker) == 0


def test_a_tasks_budget_covers_all_its_attempts(fleet: Fleet, tmp_path: Path) -> None:
    given = tmp_path / "given.json"
    fleet.submit("capped", f"record {given}\nspend 0.6\nhang-on 2\nexit 1",
                 max_budget_usd=Decimal("1.00"), max_retries=3)
    worker = fleet.worker("--id", "w-cap", "--exit-when-idle")
    assert fleet.exit_code(worker) == 0, fleet.output(worker)
    # Attempt 1 spent $0.60 and failed; attempt 2 was told $0.40 was left, spent $0.60 more
    # and was stopped: the task is dead-lettered, its retries notwithstanding.
    assert json.loads(given.read_text())["env"]["TRI24ES_BUDGET_REMAINING_USD"] == "0.4"
    failed = fleet.events(ev.TaskFailed)
    assert [f.error for f in failed][-1] == "budget_exhausted"
    assert fleet.state("capped") == "failed"
    assert fleet.services.task("capped").spent_units == 12 * 10**9
    low = fleet.run("tasks", "retry", "capped", "--budget", "1.10")
    assert low.returncode == 2
    assert "leaves nothing to spend" in low.stderr
    plain = fleet.run("tasks", "retry", "capped")
    assert plain.returncode == 2
    assert "--budget" in plain.stderr
    assert fleet.run("tasks", "retry", "capped", "--budget", "3").returncode == 0
    row = fleet.services.task("capped")
    assert (row.state, row.budget_left()) == ("queued", 18 * 10**9)


def test_spend_on_a_task_counts_against_its_budget_in_the_view(fleet: Fleet) -> None:
    fleet.submit("t", "say hi", max_budget_usd=Decimal("1"))
    fleet.services.record_spend(ev.SpendRecorded(amount=Decimal("0.25"), task="t",
                                                 occurred_at=from_us(now_us())))
    assert fleet.services.task("t").spent_units == 25 * 10**8


# --- up ------------------------------------------------------------------------------------


class Up:
    def __init__(self, project: Path, *args: str) -> None:
        self.out = project / "up.out"
        with self.out.open("wb") as log:
            self.proc = subprocess.Popen([*CLI, "up", "--no-watcher", *args], cwd=project,
                                         env=clean_env(project) | {
                                             "TRI24ES_LEASE_SECONDS": "3",
                                             "BUDGET_CHECK_INTERVAL": "0.5"},
                                         stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out.read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def test_up_does_not_restart_workers_stopped_by_request(fleet: Fleet, project: Path) -> None:
    fleet.submit("long", "hang")
    up = Up(project, "--workers", "1", "--exec", EXEC)
    try:
        fleet.started("long")
        stopped = fleet.run("workers", "stop", "--all")
        assert stopped.returncode == 0, stopped.stderr
        wait_until(lambda: "not restarted: stopped by request" in up.output(),
                   "up to leave the stopped worker down")
        assert fleet.state("long") == "queued"
        [requeued] = fleet.events(ev.TaskRequeued)
        assert requeued.reason == RequeueReason.WORKER_STOPPED
        assert len(fleet.events(ev.TaskStarted)) == 1  # not run again by a restarted worker
        assert len(fleet.events(ev.WorkerStarted)) == 1
        assert up.proc.poll() is None
    finally:
        assert up.stop() == 0, up.output()


def test_up_keeps_workers_down_while_the_kill_switch_is_on(fleet: Fleet, project: Path) -> None:
    up = Up(project, "--workers", "1", "--exec", EXEC)
    try:
        wait_until(lambda: len(fleet.events(ev.WorkerStarted)) == 1, "the worker up")
        worker_id = fleet.events(ev.WorkerStarted)[0].worker
        wait_until(lambda: fleet.worker_state(worker_id) == "idle", "the worker idle")
        activate(fleet, "test trip")
        # The watchdog under up escalates (pause, SIGTERM, SIGKILL); up must not bring the
        # worker back while the switch is on...
        wait_until(lambda: "not restarted: the kill switch is on" in up.output(),
                   "up to hold the worker down")
        assert len(fleet.events(ev.WorkerStarted)) == 1
        assert fleet.services.reset_killswitch(by="test", reason="reviewed")
        # ...and brings it back once the switch is reset.
        wait_until(lambda: len(fleet.events(ev.WorkerStarted)) == 2, "the worker back")
        fleet.submit("after", "say after the reset")
        wait_until(lambda: fleet.state("after") == "completed", "a task run after the reset")
    finally:
        assert up.stop() == 0, up.output()


def test_up_gives_its_workers_a_model(fleet: Fleet, project: Path) -> None:
    fleet.submit("for-claude", "say hi", model="claude")
    up = Up(project, "--workers", "1", "--exec", EXEC, "--model", "claude")
    try:
        wait_until(lambda: fleet.state("for-claude") == "completed", "the claude task run")
    finally:
        assert up.stop() == 0, up.output()
