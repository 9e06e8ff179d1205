"""The kill switch against a real fleet: worker processes whose agents spend fast, the
watchdog daemon, and nothing left running afterwards."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tests.e2e.conftest import CLI, Run, clean_env
from tests.e2e.test_worker import EXEC, Fleet, gone, wait_until
from tri24es import events as ev
from tri24es.names import RequeueReason
from tri24es.procinfo import host_id, is_same_process, start_time

SPENDER = """
import json, os, sys, time
from pathlib import Path
from tri24es.procinfo import start_time
Path(sys.argv[1], str(os.getpid())).write_text(str(start_time(os.getpid())))
sys.stdin.read()
while True:
    print(json.dumps({"cost_usd": 0.05}), flush=True)
    time.sleep(0.01)
"""
BUDGET_ENV = {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_WINDOW_SIZE": "60",
              "BUDGET_DAILY_LIMIT": "1000", "BUDGET_TIMEZONE": "UTC"}
#: SIGUSR1, 2 s, SIGTERM, 1 s, SIGKILL; plus the time to notice and some slack.
ESCALATION = 2.0 + 1.0 + 10.0 + 1.0 + 20.0  # generous: a ceiling, not a measure


def test_kill_switch_stops_every_worker_and_agent(fleet: Fleet, tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    script = tmp_path / "spender.py"
    script.write_text(SPENDER)
    # A registered worker whose pid now belongs to another process (start time differs).
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    fleet.services.start_worker("ghost", pid=stand_in.pid, host=host_id(),
                                pid_start_time=start_time(stand_in.pid) + 1)
    fleet.services.heartbeat("ghost")
    env = clean_env(fleet.root) | BUDGET_ENV
    watchdog = subprocess.Popen([*CLI, "budget-watchdog"], cwd=fleet.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until((fleet.root / "state" / "budget-watchdog.pid").exists, "the watchdog")
        workers = [fleet.worker("--id", f"w{n}", exec_=f"{sys.executable} {script} {agents}",
                                env=BUDGET_ENV) for n in range(3)]
        wait_until(lambda: len(fleet.events(ev.WorkerStarted)) == 4, "the workers to register")
        for n in range(6):  # only now: every worker is registered before the switch goes on
            fleet.submit(f"spend-{n}", "spend")
        wait_until(lambda: fleet.events(ev.KillSwitchActivated), "the kill switch")
        for proc in workers:
            fleet.exit_code(proc, timeout=ESCALATION)
        started = [(p.name, int(p.read_text())) for p in agents.iterdir()]
        assert started, "no agent ever ran"
        wait_until(lambda: all(gone(int(pid), st) for pid, st in started), "agents to end",
                   timeout=ESCALATION)
        (activated,) = fleet.events(ev.KillSwitchActivated)
        assert activated.reason.startswith("Rate limit exceeded: $")
        assert activated.reason.endswith(" >= $1.00/min")
        switch_at = next(r.position for r in fleet.services.store.read_all(
            types=[ev.KillSwitchActivated.topic]))
        claims = [r.position for r in fleet.services.store.read_all(
            types=[ev.TaskClaimed.topic])]
        assert claims
        assert max(claims) < switch_at
        assert stand_in.poll() is None
        assert is_same_process(stand_in.pid, start_time(stand_in.pid))
        signalled = fleet.events(ev.WorkerSignalled)
        assert "ghost" not in {e.worker for e in signalled}
        assert {e.worker for e in signalled if e.signal == "SIGUSR1"} == {"w0", "w1", "w2"}
        # Each agent was ended by its worker, which follows the switch in the log, or by the
        # watchdog's SIGTERM to its group; either way a stop, not a failure.
        assert not fleet.events(ev.TaskFailed)
        assert {r.reason for r in fleet.events(ev.TaskRequeued)} <= {
            RequeueReason.KILL_SWITCH, RequeueReason.WORKER_STOPPED}
        for n in range(3):
            assert fleet.services.worker(f"w{n}").state in ("killed", "stopped")
        assert fleet.services.worker("ghost").state == "lost"
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(10) == 0
    finally:
        for proc in (watchdog, stand_in):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if watchdog.stderr is not None:
            watchdog.stderr.close()


def test_a_task_over_its_own_budget_is_stopped_and_not_retried(fleet: Fleet) -> None:
    fleet.submit("capped", "spend 0.6\nspend 0.6\nhang", max_budget_usd=Decimal("1.00"),
                 max_retries=3)
    worker = fleet.worker("--exit-when-idle", exec_=EXEC)
    assert fleet.exit_code(worker) == 0
    (failed,) = fleet.events(ev.TaskFailed)
    assert (failed.error, failed.retryable) == ("budget_exhausted", False)
    assert fleet.services.task("capped").state == "failed"
    spent = sum(e.amount for e in fleet.events(ev.SpendRecorded))
    assert spent == Decimal("1.2")


def test_spend_that_should_stop_the_fleet_is_never_dropped(fleet: Fleet, run: Run) -> None:
    """An agent reporting more than the per-record cap, a cost as a numeric string, a cost
    that cannot be read; spend.jsonl lines stamped in 1970 and 2099: every dollar counts
    toward the limits now, and what could not be read is counted, not silently passed."""
    script = "\n".join([
        'say {"cost_usd": 5000}',  # over the $1000 cap: recorded, flagged
        'say {"cost_usd": "0.50"}',  # a numeric string: exact
        'say {"cost_usd": "lots"}',  # not a number: counted as skipped
    ])
    fleet.submit("spender", script)
    worker = fleet.worker("--exit-when-idle", exec_=EXEC, env=BUDGET_ENV)
    assert fleet.exit_code(worker) == 0
    spends = fleet.events(ev.SpendRecorded)
    assert sorted(s.amount for s in spends) == [Decimal("0.50"), Decimal("5000")]
    (over,) = [s for s in spends if s.amount == 5000]
    assert over.flagged is not None
    assert "over the per-record cap of $1000" in over.flagged
    (skipped,) = fleet.events(ev.SpendLinesSkipped)
    assert (skipped.count, skipped.task, skipped.source) == (1, "spender", "worker")
    assert skipped.sample == '{"cost_usd": "lots"}'
    spend_file = fleet.root / "state" / "budget" / "spend.jsonl"
    spend_file.parent.mkdir(parents=True, exist_ok=True)
    spend_file.write_text('{"timestamp_epoch": 0, "amount": 1}\n'
                          '{"timestamp_epoch": 4070908800, "amount": "2"}\n'
                          '{"timestamp_epoch": 1, "amount": [3]}\n')
    once = run("budget-watchdog", "--once", env=BUDGET_ENV)
    assert once.returncode == 1, once.stdout + once.stderr  # the switch tripped
    (switch,) = fleet.events(ev.KillSwitchActivated)
    assert switch.rate >= Decimal("5003.5") / 1  # everything counted in the window
    legacy = [s for s in fleet.events(ev.SpendRecorded) if s.source == "spend.jsonl"]
    assert sorted(s.amount for s in legacy) == [1, 2]
    assert all(s.flagged is not None and "counted at arrival" in s.flagged for s in legacy)
    status = run("status", "--json")
    assert '"lines_skipped": 2' in status.stdout
    spend = run("spend", env=BUDGET_ENV)
    assert "2 lines that reported spend could not be read" in spend.stderr
    assert run("replay", "--verify").returncode == 0
