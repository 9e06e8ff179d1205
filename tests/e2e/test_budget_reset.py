"""The kill switch's reset against a real fleet and the real watchdog daemon (issue: controls
that agree, item 1): three agents spend $2.75 each at once, the switch trips; a plain
``--reset`` is refused while the breach holds; ``--force`` (a rate breach) or
``--allow-today`` (a daily one) resets it, and fresh workers that were waiting claim at once.
The log must show no flap: no activation after the reset, no claim between a reset and a
re-trip."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tests.e2e.conftest import CLI, clean_env
from tests.e2e.test_worker import EXEC, Fleet, wait_until
from tri24es import events as ev
from tri24es.budget import usd

HOT = 3  # tasks whose first attempt spends $2.75 and then hangs until it is stopped


def zone_far_from_midnight() -> str:
    """A zone where it is around noon now: "today" stays today while the test runs."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. 12 hours
    return f"Etc/GMT{-offset:+d}"  # the Etc/ names have the sign reversed


class Watchdog:
    """``tri24es budget-watchdog`` as a daemon on the fleet's project."""

    def __init__(self, fleet: Fleet, env: dict[str, str]) -> None:
        self.out = open(fleet.root / "watchdog.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*CLI, "budget-watchdog"], cwd=fleet.root,
                                     env=clean_env(fleet.root) | env, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        wait_until((fleet.root / "state" / "budget-watchdog.pid").exists, "the watchdog")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(30) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        self.out.close()


def trip(fleet: Fleet, go: Path) -> None:
    """Three agents spend $2.75 each at once; the switch trips and stops their workers;
    their tasks go back to the queue (a stop costs no retry)."""
    workers = [fleet.worker("--id", f"w{n}") for n in range(HOT)]
    for n in range(HOT):
        fleet.submit(f"hot-{n}", f"wait {go}\nspend-on 1 2.75\nhang-on 1\nsay done",
                     max_retries=0)
    for n in range(HOT):
        fleet.started(f"hot-{n}")
    go.touch()
    wait_until(lambda: fleet.events(ev.KillSwitchActivated), "the kill switch")
    for proc in workers:
        fleet.exit_code(proc)
    wait_until(lambda: all(fleet.state(f"hot-{n}") == "queued" for n in range(HOT)),
               "the stopped tasks back in the queue")


def ready_workers(fleet: Fleet) -> list[subprocess.Popen[bytes]]:
    """Workers started while the switch is on: idle, and ready to claim the moment it is
    off (a flap would let them claim before it goes on again)."""
    fresh = [fleet.worker("--id", f"fresh-{n}") for n in range(2)]
    wait_until(lambda: all(fleet.worker_state(f"fresh-{n}") == "idle" for n in range(2)),
               "the fresh workers idle")
    return fresh


def looked_after_the_reset(fleet: Fleet) -> None:
    """Wait until the watchdog has evaluated the budget after the reset: only the watchdog
    records spend.jsonl, and it reads the budget right after it does."""
    line = {"timestamp_epoch": int(time.time()), "amount": 0.01, "model": "probe"}
    with (fleet.root / "state" / "budget" / "spend.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    wait_until(lambda: any(e.source == "spend.jsonl" for e in fleet.events(ev.SpendRecorded)),
               "the watchdog to look at the budget after the reset")


def assert_no_flap(fleet: Fleet) -> None:
    """Once the switch was reset, it stayed off: nothing recorded after the reset turned it
    on again (the spend before it was judged by the reset), and no task was claimed
    between the trip and the reset; the tasks stopped by the trip ran after it."""
    kinds = [ev.KillSwitchActivated, ev.KillSwitchReset, ev.TaskClaimed,
             ev.WorkerPauseRequested]
    log = [(r.position, ev.decode_event(r)) for r in fleet.services.store.read_all(
        types=[k.topic for k in kinds])]
    [tripped] = [p for p, e in log if isinstance(e, ev.KillSwitchActivated)]
    [reset] = [p for p, e in log if isinstance(e, ev.KillSwitchReset)]
    claims = [(p, e) for p, e in log if isinstance(e, ev.TaskClaimed)]
    assert tripped < reset
    assert not [p for p, _ in claims if tripped < p < reset]
    assert not [p for p, e in log if isinstance(e, ev.WorkerPauseRequested) and p > reset]
    after = {e.task_id for p, e in claims if p > reset}
    assert after == {f"hot-{n}" for n in range(HOT)}
    for n in range(HOT):
        task = fleet.services.task(f"hot-{n}")
        assert (task.state, task.retries_used) == ("completed", 0)


def spent(fleet: Fleet) -> Decimal:
    return sum((e.amount for e in fleet.events(ev.SpendRecorded)), Decimal(0))


def test_a_rate_trip_is_reset_with_force_and_does_not_flap(
        fleet: Fleet, tmp_path: Path) -> None:
    env = {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_WINDOW_SIZE": "300",
           "BUDGET_DAILY_LIMIT": "1000", "BUDGET_RATE_WARNING": "0.50",
           "BUDGET_TIMEZONE": zone_far_from_midnight(), "BUDGET_CHECK_INTERVAL": "1"}
    watchdog = Watchdog(fleet, env)
    try:
        trip(fleet, tmp_path / "go")
        [activated] = fleet.events(ev.KillSwitchActivated)
        assert activated.reason.startswith("Rate limit exceeded: $")
        fresh = ready_workers(fleet)
        refused = fleet.run("budget-watchdog", "--reset", "--reason", "reviewed", env=env)
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.splitlines()
        assert lines[0] == "Kill switch NOT reset: the breach that turned it on still holds"
        assert lines[1].startswith("  limits: those of the budget watchdog pid ")
        assert lines[1].endswith(": $1.00/min over 300 s, $1000.00 a day")
        assert "if nothing more is spent" in lines[2]
        assert " it clears at " in lines[2]
        assert lines[3].startswith(f"  today's total: ${usd(spent(fleet))} of $1000.00")
        assert "reset with --force to start a fresh rate window now" in lines[4]
        assert not fleet.events(ev.KillSwitchReset)

        forced = fleet.run("budget-watchdog", "--reset", "--force", "--reason", "reviewed",
                           env=env)
        assert forced.returncode == 0, forced.stderr
        assert forced.stdout.startswith("Kill switch reset\n  a fresh rate window starts now")
        status = fleet.run("budget-watchdog", "--status", env=env).stdout
        assert "Window Size: 300 s (counting from the forced reset at " in status
        as_json = json.loads(fleet.run("spend", "--json", env=env).stdout)
        assert as_json["window_after_reset"] is not None
        looked_after_the_reset(fleet)
        assert len(fleet.events(ev.KillSwitchActivated)) == 1, "the switch went on again"
        wait_until(lambda: all(fleet.state(f"hot-{n}") == "completed" for n in range(HOT)),
                   "the stopped tasks to run after the reset")
        looked_after_the_reset(fleet)  # and once more, with every claim made
        assert_no_flap(fleet)
        [reset] = fleet.events(ev.KillSwitchReset)
        assert (reset.reason, reset.allow_today) == ("reviewed", None)
        assert reset.rate_window_start is not None
        for proc in fresh:
            proc.send_signal(signal.SIGTERM)
            assert fleet.exit_code(proc) == 0
    finally:
        watchdog.stop()
    assert fleet.run("replay", "--verify").returncode == 0


def test_a_daily_trip_needs_an_allowance_and_does_not_flap(
        fleet: Fleet, tmp_path: Path) -> None:
    env = {"BUDGET_RATE_LIMIT": "100", "BUDGET_DAILY_LIMIT": "5.00",
           "BUDGET_TIMEZONE": zone_far_from_midnight(), "BUDGET_CHECK_INTERVAL": "1"}
    watchdog = Watchdog(fleet, env)
    try:
        trip(fleet, tmp_path / "go")
        [activated] = fleet.events(ev.KillSwitchActivated)
        assert activated.reason.startswith("Daily limit exceeded: $")
        fresh = ready_workers(fleet)
        today = spent(fleet)
        over = today - Decimal(5)
        for flags in ([], ["--force"], ["--allow-today", str(over)]):
            refused = fleet.run("budget-watchdog", "--reset", *flags, "--reason", "reviewed",
                                env=env)
            assert refused.returncode == 1, (flags, refused.stderr)
            assert f"today's total: ${usd(today)} of $" in refused.stderr
            assert f"--allow-today USD (more than ${usd(over)})" in refused.stderr
        # A shell without the watchdog's settings ($75 a day by default) is refused too:
        # the check uses the limits the watchdog recorded when it started.
        bare = fleet.run("budget-watchdog", "--reset", "--reason", "reviewed")
        assert bare.returncode == 1, bare.stderr
        assert "limits: those of the budget watchdog pid " in bare.stderr
        assert f"today's total: ${usd(today)} of $5.00" in bare.stderr
        assert not fleet.events(ev.KillSwitchReset)

        allowed = fleet.run("budget-watchdog", "--reset", "--allow-today", "10", "--reason",
                            "reviewed", env=env)
        assert allowed.returncode == 0, allowed.stderr
        assert "$10.00 allowed over the daily limit" in allowed.stdout
        looked_after_the_reset(fleet)
        assert len(fleet.events(ev.KillSwitchActivated)) == 1, "the switch went on again"
        wait_until(lambda: all(fleet.state(f"hot-{n}") == "completed" for n in range(HOT)),
                   "the stopped tasks to run after the reset")
        looked_after_the_reset(fleet)
        assert_no_flap(fleet)
        [reset] = fleet.events(ev.KillSwitchReset)
        assert (reset.allow_today, reset.rate_window_start) == (Decimal(10), None)
        status = json.loads(fleet.run("budget-watchdog", "--status", "--json", env=env).stdout)
        assert status["daily_limit_usd"] == "15"  # an exact plain decimal
        for proc in fresh:
            proc.send_signal(signal.SIGTERM)
            assert fleet.exit_code(proc) == 0
    finally:
        watchdog.stop()
    assert fleet.run("replay", "--verify").returncode == 0


def test_under_up_workers_come_back_after_a_forced_reset_and_nothing_flaps(
        fleet: Fleet, project: Path, tmp_path: Path) -> None:
    """The issue's own setting: ``up`` runs the workers and the watchdog; its workers are
    held down while the switch is on and restarted the moment it is reset."""
    env = {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_WINDOW_SIZE": "300",
           "BUDGET_DAILY_LIMIT": "1000", "BUDGET_TIMEZONE": zone_far_from_midnight(),
           "BUDGET_CHECK_INTERVAL": "0.5", "TRI24ES_LEASE_SECONDS": "3"}
    go = tmp_path / "go"
    for n in range(HOT):
        fleet.submit(f"hot-{n}", f"wait {go}\nspend-on 1 2.75\nhang-on 1\nsay done",
                     max_retries=0)
    out = project / "up.out"
    with out.open("wb") as log:
        up = subprocess.Popen([*CLI, "up", "--no-watcher", "--workers", str(HOT), "--exec",
                               EXEC], cwd=project, env=clean_env(project) | env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        for n in range(HOT):
            fleet.started(f"hot-{n}")
        go.touch()
        wait_until(lambda: fleet.events(ev.KillSwitchActivated), "the kill switch")
        wait_until(lambda: out.read_text().count("not restarted: the kill switch is on") >= HOT,
                   "up to hold its workers down")
        wait_until(lambda: "] KILL SWITCH: Rate limit exceeded: $" in out.read_text(),
                   "up's summary line to start with the kill switch")  # one each 5 s at most
        refused = fleet.run("budget-watchdog", "--reset", "--reason", "reviewed", env=env)
        assert refused.returncode == 1, refused.stderr
        assert "it clears at" in refused.stderr
        forced = fleet.run("budget-watchdog", "--reset", "--force", "--reason", "reviewed",
                           env=env)
        assert forced.returncode == 0, forced.stderr
        wait_until(lambda: len(fleet.events(ev.KillSwitchActivated)) > 1 or all(
            fleet.state(f"hot-{n}") == "completed" for n in range(HOT)),
                   "the stopped tasks to run after the reset")
        assert len(fleet.events(ev.KillSwitchActivated)) == 1, "the switch went on again"
        looked_after_the_reset(fleet)
        assert_no_flap(fleet)
        wait_until(lambda: len(fleet.events(ev.WorkerStarted)) == 2 * HOT,
                   "every worker up came back once")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, out.read_text()
