"""The watchdog's evaluations on a real SQLite store, with a clock the test controls and
stand-in worker processes that record the signals they get."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

import eventlog
from tests.conftest import wait_until
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.paths import ProjectPaths
from tri24es.procinfo import host_id, is_same_process, start_time
from tri24es.runtime.budget_watchdog import BudgetWatchdog
from tri24es.services import Services
from tri24es.timeutil import from_us, to_us

E = TypeVar("E", bound=ev.Event)
T = TypeVar("T")
NOON = to_us(datetime(2026, 11, 24, 12, tzinfo=UTC))
SECOND = 1_000_000
LIMITS = BudgetLimits(daily_limit=Decimal("75.00"), rate_limit=Decimal("1.00"),
                      rate_warning=Decimal("0.50"), daily_pause_pct=Decimal("0.90"),
                      window_seconds=300, timezone=UTC)

STAND_IN = """
import signal, sys, pathlib
out = pathlib.Path(sys.argv[1])
def note(signum, frame):
    with out.open("a") as f:
        f.write(signal.Signals(signum).name + "\\n")
for s in (signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, note)
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, note)
out.with_suffix(".ready").write_text("ready")
while True:
    signal.pause()
"""


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> int:
        return self.now


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "state").mkdir(mode=0o700)
        self.store = eventlog.open_store(str(root / "state" / "tri24es.db"))
        self.services = Services(self.store, actor="budget-watchdog")
        self.clock = Clock()
        self.reports: list[str] = []
        self.watchdog = self.new_watchdog(self.services)
        self.procs: list[subprocess.Popen[bytes]] = []

    def new_watchdog(self, services: Services) -> BudgetWatchdog:
        return BudgetWatchdog(services, LIMITS, ProjectPaths(self.root), clock=self.clock,
                              report=self.reports.append, grace=(0.2, 0.5, 0.5))

    def spend(self, amount: str, seconds_ago: float = 0) -> None:
        self.services.record_spend(ev.SpendRecorded(
            amount=Decimal(amount), occurred_at=from_us(self.clock.now - int(seconds_ago * SECOND)),
            source="test"))

    def events(self, kind: type[E]) -> list[E]:
        found = [ev.decode_event(r) for r in self.store.read_all(types=[kind.topic])]
        return [e for e in found if isinstance(e, kind)]

    def stand_in(self, name: str, mode: str = "plain") -> tuple[subprocess.Popen[bytes], Path]:
        out = self.root / f"{name}.signals"
        proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(out), mode])
        self.procs.append(proc)
        wait_until(out.with_suffix(".ready").exists, f"{name} to be ready")
        return proc, out

    def register(self, worker_id: str, pid: int, *, started: int | None = None,
                 host: str | None = None) -> None:
        self.services.start_worker(worker_id, pid=pid, host=host or host_id(),
                                   pid_start_time=start_time(pid) if started is None
                                   else started)
        self.services.heartbeat(worker_id)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.store.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize(("amount", "kills"), [("5.00", True), ("4.9999999999", False)])
def test_rate_limit_at_the_boundary(setup: Setup, amount: str, kills: bool) -> None:
    setup.spend(amount, seconds_ago=300)  # the window's oldest instant still counts
    result = setup.watchdog.evaluate()
    assert result.activated is kills
    activated = setup.events(ev.KillSwitchActivated)
    if kills:
        assert [e.reason for e in activated] == ["Rate limit exceeded: $1.00/min >= $1.00/min"]
        assert ProjectPaths(setup.root).kill_switch_file.stat().st_mode & 0o777 == 0o600
    else:
        assert activated == []


def test_spend_that_left_the_window_no_longer_counts(setup: Setup) -> None:
    setup.spend("5.00", seconds_ago=300.000001)
    assert not setup.watchdog.evaluate().exceeded


@pytest.mark.parametrize(("amount", "kills", "pauses"), [
    ("75.00", True, False), ("74.9999999999", False, True), ("67.50", False, True),
    ("67.4999999999", False, False),
])
def test_daily_limit_and_pause_at_the_boundary(setup: Setup, amount: str, kills: bool,
                                               pauses: bool) -> None:
    setup.spend(amount, seconds_ago=3 * 3600)  # today, long out of the rate window
    setup.register("w1", os.getpid(), host="elsewhere")
    result = setup.watchdog.evaluate()
    assert result.activated is kills
    if kills:
        assert setup.events(ev.KillSwitchActivated)[0].reason == \
            "Daily limit exceeded: $75.00 >= $75.00"
    assert result.paused == (["w1"] if pauses else [])


def test_warning_once_per_crossing(setup: Setup) -> None:
    setup.spend("2.50")  # $0.50/min
    setup.watchdog.evaluate()
    setup.watchdog.evaluate()
    assert len(setup.events(ev.BudgetWarningRaised)) == 1
    setup.clock.now += 301 * SECOND  # the spend left the window: re-armed
    assert not setup.watchdog.evaluate().warned
    setup.spend("2.50")
    assert setup.watchdog.evaluate().warned
    assert [e.rate for e in setup.events(ev.BudgetWarningRaised)] == [Decimal("0.5")] * 2


def test_pause_then_resume_next_day_only_whom_it_paused(setup: Setup) -> None:
    proc, out = setup.stand_in("w1")
    setup.register("w1", proc.pid)
    setup.register("w2", os.getpid(), host="elsewhere")
    setup.services.request_pause("w2", by="cli:someone")
    setup.spend("70", seconds_ago=3600)
    assert setup.watchdog.evaluate().paused == ["w1"]
    wait_until(lambda: out.exists() and "SIGUSR1" in out.read_text(), "SIGUSR1")
    assert setup.watchdog.evaluate().paused == []  # asked once
    setup.clock.now += 12 * 3600 * SECOND  # tomorrow: today's spend is 0
    assert setup.watchdog.evaluate().resumed == ["w1"]
    wait_until(lambda: "SIGUSR2" in out.read_text(), "SIGUSR2")
    resumes = setup.events(ev.WorkerResumeRequested)
    assert [(e.worker, e.by) for e in resumes] == [("w1", "budget-watchdog")]
    signalled = [(e.worker, e.signal) for e in setup.events(ev.WorkerSignalled)]
    assert signalled == [("w1", "SIGUSR1"), ("w1", "SIGUSR2")]


def test_kill_switch_escalates_only_to_verified_processes(setup: Setup) -> None:
    polite, _ = setup.stand_in("polite")
    stubborn, stubborn_out = setup.stand_in("stubborn", "stubborn")
    recycled, _ = setup.stand_in("recycled")
    setup.register("polite", polite.pid)
    setup.register("stubborn", stubborn.pid)
    setup.register("recycled", recycled.pid, started=start_time(recycled.pid) + 1)
    setup.register("remote", os.getpid(), host="elsewhere")
    setup.spend("10")
    assert setup.watchdog.evaluate().activated
    assert polite.wait(5) == -signal.SIGTERM
    assert stubborn.wait(5) == -signal.SIGKILL
    assert "SIGTERM" in stubborn_out.read_text()
    assert recycled.poll() is None
    assert is_same_process(recycled.pid, start_time(recycled.pid))
    signalled = [(e.worker, e.signal, e.target, e.by) for e in setup.events(ev.WorkerSignalled)]
    assert signalled == [
        ("polite", "SIGUSR1", "worker", "budget-watchdog"),
        ("stubborn", "SIGUSR1", "worker", "budget-watchdog"),
        ("polite", "SIGTERM", "worker", "budget-watchdog"),
        ("stubborn", "SIGTERM", "worker", "budget-watchdog"),
        ("stubborn", "SIGKILL", "worker", "budget-watchdog"),
    ]
    states = {w: setup.services.worker(w).state for w in ("stubborn", "recycled", "remote")}
    assert states == {"stubborn": "killed", "recycled": "lost", "remote": "stopping"}
    paused = {e.worker for e in setup.events(ev.WorkerPauseRequested)}
    assert paused == {"polite", "stubborn", "recycled", "remote"}


def test_a_switch_turned_on_on_another_host_is_enforced_by_this_hosts_watchdog(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each host's watchdog signals its own workers: host-b's turns the switch on and only
    asks host-a's worker to stop; host-a's escalates on it once (a worker that does not
    follow the log still stops), and leaves a worker started after the switch alone."""
    watchdogs = {}
    for host in ("host-a", "host-b"):
        monkeypatch.setenv("TRI24ES_HOST_ID", host)
        watchdogs[host] = setup.new_watchdog(setup.services)
    deaf, deaf_out = setup.stand_in("deaf")
    setup.register("deaf", deaf.pid, host="host-a")
    setup.spend("10")
    assert watchdogs["host-b"].evaluate().activated
    assert setup.events(ev.WorkerSignalled) == []
    assert (deaf.poll(), setup.services.worker("deaf").stop_requested) == (None, True)
    late, _ = setup.stand_in("late")
    setup.register("late", late.pid, host="host-a")
    result = watchdogs["host-a"].evaluate()
    assert (result.activated, result.exceeded) == (False, True)
    assert deaf.wait(5) == -signal.SIGTERM
    assert "SIGUSR1" in deaf_out.read_text()
    signalled = [(e.worker, e.signal) for e in setup.events(ev.WorkerSignalled)]
    assert signalled == [("deaf", "SIGUSR1"), ("deaf", "SIGTERM")]
    assert watchdogs["host-a"].evaluate().exceeded  # once per activation
    assert len(setup.events(ev.WorkerSignalled)) == 2
    assert late.poll() is None
    assert setup.services.worker("late").state == "idle"
    assert len(setup.events(ev.KillSwitchActivated)) == 1


def test_two_watchdogs_activate_the_switch_once(setup: Setup) -> None:
    other_store = eventlog.open_store(str(setup.root / "state" / "tri24es.db"))
    try:
        other = setup.new_watchdog(Services(other_store, actor="budget-watchdog"))
        setup.spend("10")
        results = [setup.watchdog.evaluate(), other.evaluate()]
    finally:
        other_store.close()
    assert [r.activated for r in results] == [True, False]
    assert all(r.exceeded for r in results)
    assert len(setup.events(ev.KillSwitchActivated)) == 1


def test_spend_file_bridged_twice_counts_once(setup: Setup) -> None:
    path = ProjectPaths(setup.root).spend_file
    path.parent.mkdir(parents=True)
    epoch = NOON // SECOND - 60
    good = f'{{"timestamp_epoch": {epoch}, "amount": 0.25, "model": "m", "task_id": "t"}}\n'
    path.write_text(good + "garbage\n" + good + '{"amount": -3, "timestamp_epoch": 1}\n')
    setup.watchdog.evaluate()
    setup.watchdog.evaluate()
    restarted = setup.new_watchdog(setup.services)  # no offset: the ids do the work
    restarted.evaluate()
    assert setup.watchdog.read().daily == Decimal("0.50")
    bad = [r for r in setup.reports if "skipped" in r]
    assert len(bad) == 2  # two bad lines, reported once: the restarted bridge says nothing
    assert f"{path}:2: skipped: not JSON" in bad[0]
    with path.open("a") as f:
        f.write(good.replace("0.25", "0.5"))
    setup.watchdog.evaluate()
    assert setup.watchdog.read().daily == Decimal("1.00")
    assert len(setup.events(ev.SpendRecorded)) == 3


def test_spend_file_half_written_line_waits_and_a_rewrite_counts_nothing_twice(
    setup: Setup,
) -> None:
    path = ProjectPaths(setup.root).spend_file
    path.parent.mkdir(parents=True)
    epoch = NOON // SECOND - 60
    line = f'{{"timestamp_epoch": {epoch}, "amount": 1.25}}'
    path.write_text(line + "\n" + line[:12])  # the writer is still at the second line
    bridge = setup.watchdog.spend_file
    first = bridge.bridge(setup.services)
    assert (first.recorded, first.bad) == (1, 0)  # the half line is neither counted nor bad
    with path.open("a") as f:
        f.write(line[12:] + "\n")
    assert bridge.bridge(setup.services).recorded == 1
    rewritten = path.with_name("spend.jsonl.new")  # e.g. rotated by copying: a new inode
    rewritten.write_text(f"{line}\n{line}\n{line}\n")
    rewritten.replace(path)
    again = bridge.bridge(setup.services)
    assert (again.recorded, again.known) == (1, 2)
    assert setup.watchdog.read().daily == Decimal("3.75")


def _not_a_file(path: Path, kind: str) -> None:
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    else:  # a link to a device that never ends
        path.symlink_to("/dev/zero")


def _in_time(call: Callable[[], T]) -> T:
    """``call()``, failing the test (not hanging it) if it has not returned in 30 s."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=30)
    finally:
        pool.shutdown(wait=False)


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket", "device"])
def test_a_spend_file_that_is_no_file_is_said_once_and_the_budget_still_watched(
    setup: Setup, kind: str,
) -> None:
    """A FIFO for spend.jsonl hung the watchdog in its open (for ever: no writer came), a
    device never ended, and a folder raised out of the daemon. Now: said once, the rest
    watched, and the file's lines read once it is a file again."""
    path = ProjectPaths(setup.root).spend_file
    _not_a_file(path, kind)
    assert _in_time(setup.watchdog.evaluate).activated is False
    _in_time(setup.watchdog.evaluate)
    said = [r for r in setup.reports if str(path) in r]
    assert len(said) == 1, setup.reports
    assert "not a regular file" in said[0]
    assert "not counted until it can be read" in said[0]
    setup.spend("5.00")  # over the rate limit: the watchdog still acts on it
    assert _in_time(setup.watchdog.evaluate).activated is True
    if kind == "folder":
        path.rmdir()
    else:
        path.unlink()
    path.write_text(f'{{"timestamp_epoch": {NOON // SECOND}, "amount": 0.25}}\n')
    _in_time(setup.watchdog.evaluate)
    assert setup.reports[-1] == f"budget watchdog: {path}: read again"
    assert setup.watchdog.read().daily == Decimal("5.25")


def test_a_fifo_where_bad_lines_are_noted_hangs_nothing(setup: Setup) -> None:
    """spend.jsonl.reported (the bad lines told of) as a FIFO hung the first bad line's
    report; now it is told, and not noted."""
    path = ProjectPaths(setup.root).spend_file
    path.parent.mkdir(parents=True)
    os.mkfifo(path.with_name("spend.jsonl.reported"))
    path.write_text("garbage\n")
    assert _in_time(lambda: setup.watchdog.spend_file.bridge(setup.services)).bad == 1
    assert any("skipped: not JSON" in r for r in setup.reports)
