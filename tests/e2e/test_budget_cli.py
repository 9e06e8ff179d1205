"""``tri24es spend`` and ``tri24es budget-watchdog`` as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from eventlog import open_store
from tests.e2e.conftest import CLI, Run, clean_env
from tests.e2e.test_worker import wait_until
from tri24es import events as ev

LOW_LIMITS = {"BUDGET_DAILY_LIMIT": "10", "BUDGET_RATE_LIMIT": "100",
              "BUDGET_TIMEZONE": "UTC"}


@pytest.fixture
def project_ready(project: Path, run: Run) -> Path:
    assert run("init").returncode == 0
    return project


def count(project: Path, kind: type[ev.Event]) -> int:
    store = open_store(str(project / "state" / "tri24es.db"))
    try:
        return sum(1 for _ in store.read_all(types=[kind.topic]))
    finally:
        store.close()


@pytest.mark.usefixtures("project_ready")
@pytest.mark.parametrize(("args", "message"), [
    (("--usd", "-1"), "is negative"), (("--usd", "nan"), "not a finite number"),
    (("--usd", "lots"), "not a number"), (("--usd", "1000.5"), "more than the $1000"),
    ((), "give --usd X"), (("--usd", "1", "--input-tokens", "5"), "not both"),
])
def test_bad_amounts_are_refused_and_nothing_recorded(
    project: Path, run: Run, args: tuple[str, ...], message: str,
) -> None:
    result = run("spend", "record", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert count(project, ev.SpendRecorded) == 0


@pytest.mark.usefixtures("project_ready")
def test_spend_report_json_and_breakdown(run: Run) -> None:
    assert run("spend", "record", "--usd", "1.50", "--model", "m", "--task", "t1").returncode == 0
    unpriced = run("spend", "record", "--model", "no-such-model", "--input-tokens", "1000",
                   "--task", "t2")
    assert "estimate: unpriced model no-such-model" in unpriced.stdout
    out = json.loads(run("spend", "--window", "1h", "--json").stdout)
    assert out["window_seconds"] == 3600
    assert Decimal(out["window_total_usd"]) == Decimal("1.575")
    assert Decimal(out["rate_per_min_usd"]) == Decimal("0.02625")
    assert Decimal(out["daily_total_usd"]) == Decimal("1.575")
    assert (out["daily_limit_usd"], out["rate_limit_usd"]) == ("75", "1")  # exact, plain
    assert out["kill_switch_active"] is False
    by_task = run("spend", "--by", "task").stdout
    assert "t1" in by_task
    assert "$1.5" in by_task
    assert "t2" in by_task
    assert run("spend", "--window", "5 minutes").returncode == 2
    assert run("spend", "--by", "color").returncode == 2


def test_spend_file_is_bridged_once_and_bad_lines_reported(project_ready: Path,
                                                           run: Run) -> None:
    path = project_ready / "state" / "budget" / "spend.jsonl"
    path.parent.mkdir()
    now = int(time.time())
    path.write_text(f'{{"timestamp_epoch": {now}, "amount": 9.0, "model": "x"}}\n'
                    'oops\n'
                    f'{{"timestamp":"2026-01-01T00:00:00Z","timestamp_epoch":{now},'
                    '"amount":0.1}\n')
    looked = run("spend", "--json")  # a read command: it records nothing
    assert json.loads(looked.stdout)["window_total_usd"] == "0"
    assert "2 lines of" in looked.stderr
    assert "not recorded yet" in looked.stderr
    assert count(project_ready, ev.SpendRecorded) == 0
    first = run("spend", "import")
    second = run("spend", "import", "--json")
    assert "recorded 2 lines, 0 already recorded, 1 bad" in first.stdout
    assert "spend.jsonl:2: skipped: not JSON" in first.stderr
    assert json.loads(second.stdout) == {"recorded": 0, "known": 2, "bad": 1}
    assert second.stderr == ""  # told once, by whichever process read it first
    with path.open("a") as more:
        more.write("again oops\n")
    third = run("spend", "import")
    assert third.stderr.splitlines() == [f"{path}:4: skipped: not JSON: Expecting value: line 1 "
                                         "column 1 (char 0)"]
    after = run("spend", "--json")
    assert json.loads(after.stdout)["window_total_usd"] == "9.1"
    assert "not recorded yet" not in after.stderr
    assert count(project_ready, ev.SpendRecorded) == 2


def test_a_spend_line_naming_a_lone_surrogate_is_recorded_and_blocks_nothing(
        project_ready: Path, run: Run) -> None:
    """JSON may escape half of a surrogate pair ("\\ud800"); no JSON can be written with it.
    Such a model name was a traceback in every bridge, the lines after it never recorded."""
    path = project_ready / "state" / "budget" / "spend.jsonl"
    path.parent.mkdir()
    now = int(time.time())
    path.write_text(f'{{"timestamp_epoch": {now}, "amount": 0.5, "model": "m\\ud800"}}\n'
                    f'{{"timestamp_epoch": {now}, "amount": 0.25, "model": "ok"}}\n')
    imported = run("spend", "import")
    assert imported.returncode == 0, imported.stderr
    assert "recorded 2 lines, 0 already recorded, 0 bad" in imported.stdout
    reading = json.loads(run("spend", "--json", "--by", "model").stdout)
    assert reading["model"] == {"m?": "0.5", "ok": "0.25"}


def test_once_status_and_reset(project_ready: Path, run: Run) -> None:
    status = run("budget-watchdog", "--status", env=LOW_LIMITS)
    lines = status.stdout.splitlines()
    assert lines[0] == "Kill Switch: INACTIVE"
    assert "Daily Spend: $0.00 / $10.00 (0.0%)" in lines
    assert "Limits:" in lines
    assert "  Daily Limit: $10.00" in lines
    assert "  Rate Limit: $100.00/min" in lines
    assert run("budget-watchdog", "--once", env=LOW_LIMITS).returncode == 0
    run("spend", "record", "--usd", "10")
    once = run("budget-watchdog", "--once", env=LOW_LIMITS)
    assert once.returncode == 1
    assert "KILL SWITCH: Daily limit exceeded: $10.00 >= $10.00" in once.stderr
    switch = project_ready / "state" / "budget" / "kill_switch.active"
    info = json.loads(switch.read_text())
    assert info["reason"] == "Daily limit exceeded: $10.00 >= $10.00"
    assert (info["daily_spend"], info["current_rate"]) == ("10.00", "2.00")
    assert set(info) == {"activated_at", "reason", "daily_spend", "current_rate", "trace_id"}
    assert run("budget-watchdog", "--once", env=LOW_LIMITS).returncode == 1
    assert run("budget-watchdog", "--status").stdout.startswith("Kill Switch: ACTIVE")
    assert run("budget-watchdog", "--reset").returncode == 2
    for flags in (["--force"], ["--allow-today", "5"]):
        alone = run("budget-watchdog", *flags)
        assert alone.returncode == 2
        assert alone.stderr == f"tri24es: error: {flags[0]} goes with --reset\n"
    for bad in ("0", "-1", "lots"):
        wrong = run("budget-watchdog", "--reset", "--reason", "r", "--allow-today", bad)
        assert wrong.returncode == 2
        assert wrong.stderr.startswith("tri24es: error: bad --allow-today: ")
        assert wrong.stderr.count("\n") == 1
    refused = run("budget-watchdog", "--reset", "--reason", "reviewed", env=LOW_LIMITS)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.splitlines()[:2] == [
        "Kill switch NOT reset: the breach that turned it on still holds",
        "  today's total: $10.00 of $10.00; the day ends at 00:00:00 UTC"]
    assert "--allow-today USD (more than $0.00)" in refused.stderr
    as_json = json.loads(run("budget-watchdog", "--reset", "--reason", "reviewed", "--json",
                             env=LOW_LIMITS).stdout)
    assert (as_json["reset"], as_json["daily_holds"], as_json["rate_holds"]) == (
        False, True, False)
    assert switch.exists()
    raised = LOW_LIMITS | {"BUDGET_DAILY_LIMIT": "20"}
    reset = run("budget-watchdog", "--reset", "--reason", "raised the limit", env=raised)
    assert reset.returncode == 0, reset.stderr
    assert "Kill switch reset" in reset.stdout
    assert not switch.exists()
    assert len(list(switch.parent.glob("kill_switch.active.*"))) == 1
    assert run("budget-watchdog", "--status").stdout.startswith("Kill Switch: INACTIVE")
    assert run("budget-watchdog", "--once", env=raised).returncode == 0
    assert count(project_ready, ev.KillSwitchActivated) == 1
    assert count(project_ready, ev.KillSwitchReset) == 1


def test_concurrent_evaluations_activate_once(project_ready: Path, run: Run) -> None:
    run("spend", "record", "--usd", "10")
    env = clean_env(project_ready) | LOW_LIMITS
    procs = [subprocess.Popen([*CLI, "budget-watchdog", "--once"], cwd=project_ready, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(4)]
    assert [p.wait(60) for p in procs] == [1, 1, 1, 1]
    assert count(project_ready, ev.KillSwitchActivated) == 1


def test_one_daemon_per_store(project_ready: Path, run: Run) -> None:
    env = clean_env(project_ready)
    pid_file = project_ready / "state" / "budget-watchdog.pid"
    daemon = subprocess.Popen([*CLI, "budget-watchdog"], cwd=project_ready, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(pid_file.exists, "the pid file")
        assert pid_file.read_text().strip() == str(daemon.pid)
        second = run("budget-watchdog")
        assert second.returncode == 1
        assert f"already running on this store (pid {daemon.pid})" in second.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        assert not pid_file.exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        assert daemon.stderr is not None
        daemon.stderr.close()


def test_an_unpriced_model_is_charged_the_configured_fallback(
    project_ready: Path, run: Run
) -> None:
    result = run(
        "spend", "record", "--model", "no-such-model-anywhere", "--input-tokens", "1000000",
        "--output-tokens", "0", env={"TRI24ES_FALLBACK_USD_PER_MTOK": "12.5"},
    )
    assert result.returncode == 0, result.stderr
    with open_store(str(project_ready / "state" / "tri24es.db")) as store:
        spends = [ev.decode_event(e) for e in store.read_all(types=["SpendRecorded"])]
    assert len(spends) == 1
    spend = spends[0]
    assert isinstance(spend, ev.SpendRecorded)
    assert spend.amount == Decimal("12.5")
    assert spend.flagged is not None


def test_a_spend_file_that_is_a_fifo_hangs_no_command(project_ready: Path, run: Run) -> None:
    """`tri24es spend` and `spend import` hung for ever with a FIFO for spend.jsonl (its
    open waits for a writer). Now one line on stderr and exit 1: `spend` still shows what is
    recorded, as `ls` lists what it can, but spend waiting in the file may be missing."""
    import os

    path = project_ready / "state" / "budget" / "spend.jsonl"
    path.parent.mkdir()
    os.mkfifo(path)
    shown = run("spend", timeout=30)
    assert "Kill switch:" in shown.stdout
    as_json = run("spend", "--json", timeout=30)
    assert json.loads(as_json.stdout)["window_total_usd"] == "0"
    imported = run("spend", "import", timeout=30)
    assert imported.stdout == ""
    for result in (shown, as_json, imported):
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            f"tri24es: error: {path}: not a regular file (a FIFO): its spend is not counted "
            "until it can be read"]


def test_the_watchdog_says_once_that_its_spend_file_is_a_fifo_and_keeps_watching(
        project_ready: Path, run: Run) -> None:
    import os

    path = project_ready / "state" / "budget" / "spend.jsonl"
    path.parent.mkdir()
    os.mkfifo(path)
    env = clean_env(project_ready) | LOW_LIMITS | {"BUDGET_CHECK_INTERVAL": "0.2"}
    daemon = subprocess.Popen([*CLI, "budget-watchdog"], cwd=project_ready, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert daemon.stderr is not None
        said = [daemon.stderr.readline() for _ in range(2)]  # running, then the file
        assert "not a regular file (a FIFO)" in said[1], said
        assert run("spend", "record", "--usd", "11").returncode == 0  # over the daily limit
        wait_until(lambda: count(project_ready, ev.KillSwitchActivated) == 1,
                   "the kill switch, the spend file notwithstanding")
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        rest = daemon.stderr.read()
        assert "FIFO" not in rest  # said once
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        assert daemon.stderr is not None
        daemon.stderr.close()


def test_a_fifo_for_the_pid_file_hangs_neither_a_second_daemon_nor_doctor(
        project_ready: Path, run: Run) -> None:
    """Both read state/budget-watchdog.pid while the daemon runs: a FIFO put in its place
    made them wait for a writer for ever. Now the pid is '?'."""
    import os

    env = clean_env(project_ready)
    pid_file = project_ready / "state" / "budget-watchdog.pid"
    daemon = subprocess.Popen([*CLI, "budget-watchdog"], cwd=project_ready, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(pid_file.exists, "the pid file")
        pid_file.unlink()
        os.mkfifo(pid_file)
        second = run("budget-watchdog", timeout=30)
        assert second.returncode == 1
        assert "already running on this store (pid ?)" in second.stderr
        checked = run("doctor", timeout=30)
        assert "budget watchdog: running (pid ?)" in checked.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
