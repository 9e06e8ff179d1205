"""The budget watchdog (DESIGN.md §7): follow the log, read the spend, act on it.

Each evaluation bridges ``state/budget/spend.jsonl``, reads the rolling-window rate and
today's total in one snapshot, and responds in steps:

- rate >= BUDGET_RATE_WARNING: BudgetWarningRaised, once per crossing (re-armed below it);
- today >= BUDGET_DAILY_PAUSE_PCT x limit: pause every live worker (request + SIGUSR1), and
  resume those it paused (request + SIGUSR2) once the cause clears;
- rate >= BUDGET_RATE_LIMIT or today >= BUDGET_DAILY_LIMIT: the kill switch. One watchdog
  wins the activation (exactly one KillSwitchActivated, however many run); it writes
  ``state/budget/kill_switch.active`` and stops the fleet: pause request + SIGUSR1, 2 s,
  SIGTERM, 1 s, SIGKILL, each signal recorded as WorkerSignalled.

Signals go only to processes whose identity is verified: a worker's pid, start time and
host as it registered them; an agent only while it is the child (and group leader) of its
verified worker, and afterwards under the start time seen then. Never by name, never to a
recycled pid. Workers on other hosts are stopped through the log (pause and stop requests);
a watchdog that finds the switch turned on by another (on another host) runs the same
escalation once on the workers of its own host, so each host's watchdog signals its own.

The daemon waits on the log (``wait_for_change``) and re-evaluates whenever it moves, when
the spend file changes, and every BUDGET_CHECK_INTERVAL seconds for windows that expire.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from eventlog import TransientStoreError
from tri24es import events as ev
from tri24es.budget import BudgetLimits, Reading, usd
from tri24es.errors import AlreadyRunning, Tri24esError
from tri24es.files import pid_in, private_fd, write_private
from tri24es.inputs.spendfile import SpendFileBridge, SpendFileUnreadable
from tri24es.machines.base import IllegalTransition
from tri24es.paths import ProjectPaths
from tri24es.pricing import to_money
from tri24es.procinfo import PROC, host_id, is_same_process, parse_stat
from tri24es.projections import connection_of, reads
from tri24es.projections.queue import QUEUE
from tri24es.projections.tables.workers import WorkerRow
from tri24es.runtime.resilience import Outage
from tri24es.runtime.signals import SignalInbox
from tri24es.services import Services
from tri24es.timeutil import iso_time, now_us

if TYPE_CHECKING:
    from tri24es.witness import Witness

log = logging.getLogger("tri24es.budget")

BY = "budget-watchdog"
PAUSE_GRACE = 2.0
TERM_GRACE = 1.0  # for an agent's process group, after SIGTERM, before SIGKILL
#: For a worker, after SIGTERM, before SIGKILL: it ends its agent (within its own grace),
#: puts the task back and records its stop, which a loaded machine may take seconds to do;
#: killed, its task would wait for its lease to run out.
WORKER_TERM_GRACE = 10.0
SLICE = 0.2


@contextlib.contextmanager
def single_daemon(paths: ProjectPaths) -> Iterator[None]:
    """Hold ``state/budget-watchdog.lock`` (fcntl) and write ``state/budget-watchdog.pid``
    for the daemon's life; a second daemon raises AlreadyRunning."""
    fd = private_fd(paths.watchdog_lock, os.O_RDWR | os.O_CREAT, paths.root)
    pid_file = paths.watchdog_pid
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = pid_in(pid_file)
            raise AlreadyRunning(
                f"a budget watchdog is already running on this store (pid {holder})") from None
        write_private(pid_file, f"{os.getpid()}\n".encode(), paths.root)
        try:
            yield
        finally:
            pid_file.unlink(missing_ok=True)
    finally:
        os.close(fd)


def agent_start_time(agent_pid: int, worker_pid: int) -> int | None:
    """The agent's start time if ``agent_pid`` is alive, a child of ``worker_pid`` and the
    leader of its own process group (as the worker starts agents); else None."""
    try:
        fields = parse_stat((PROC / str(agent_pid) / "stat").read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    state, ppid, pgrp = fields[2], int(fields[3]), int(fields[4])
    if state == "Z" or ppid != worker_pid or pgrp != agent_pid:
        return None
    return int(fields[21])


@dataclass
class Target:
    """A local worker whose identity was verified, and its agent if it runs one."""

    row: WorkerRow
    agent: tuple[int, int] | None = None  # (pid = pgid, start time)

    def worker_alive(self) -> bool:
        return is_same_process(self.row.pid, self.row.pid_start_time)

    def agent_alive(self) -> bool:
        return self.agent is not None and is_same_process(*self.agent)


@dataclass
class Evaluation:
    reading: Reading
    exceeded: bool  # a limit is reached or the kill switch is on
    activated: bool = False  # this evaluation turned the kill switch on
    warned: bool = False
    paused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


class BudgetWatchdog:
    def __init__(
        self, services: Services, limits: BudgetLimits, paths: ProjectPaths, *,
        clock: Callable[[], int] = now_us, report: Callable[[str], None] = log.info,
        grace: tuple[float, float, float] = (PAUSE_GRACE, TERM_GRACE, WORKER_TERM_GRACE),
        witness: Witness | None = None, witness_interval: float = 60.0,
    ) -> None:
        self.services = services
        self.witness = witness
        self.witness_interval = witness_interval
        self._next_checkpoint = 0.0
        self._troubles: dict[str, str | None] = {}  # what is wrong now, by part: said once
        self.limits = limits
        self.paths = paths
        self.clock = clock
        self.report = report
        self.grace = grace
        self.host = host_id()
        self.spend_file = SpendFileBridge(paths.spend_file, limits.max_record_usd, report,
                                          limits.window_seconds, clock)
        self.warning_armed = True
        self.paused_by_me: set[str] = set()
        self.enforced: int | None = None  # the activation (its position) this one acted on
        self.activated: int | None = None  # the activation this one made

    # --- one evaluation -----------------------------------------------------------------

    def _bridge(self) -> None:
        """Record the spend file's new lines. One that cannot be read (a FIFO, a folder, no
        permission) is said once, and the rest is watched all the same: its lines are read
        when it can be read again (the budget is never left unwatched for a file)."""
        try:
            self.spend_file.bridge(self.services)
        except SpendFileUnreadable as e:
            self._say_once("spend file", str(e), "")
            return
        self._say_once("spend file", None, f"{self.spend_file.path}: read again")

    def read(self) -> Reading:
        with self.services.store.snapshot() as tx:
            return reads.read_budget(connection_of(tx), self.limits, self.clock())

    def evaluate(self) -> Evaluation:
        """Bridge the spend file, read the budget and respond to it."""
        self._bridge()
        reading = self.read()
        result = Evaluation(reading, exceeded=reading.killswitch.active)
        if reading.killswitch.active:
            self._enforce(reading)
            return result
        self._warn(reading, result)
        reason = reading.kill_reason(self.limits)
        if reason is not None:
            result.exceeded = True
            result.activated = self.activate(reading, reason)
            if not result.activated:  # another watchdog won meanwhile
                self._enforce(self.read())
            return result
        if reading.should_pause(self.limits):
            result.paused = self.pause_fleet(reading)
        elif self.paused_by_me:
            result.resumed = self.resume_fleet()
        return result

    def _warn(self, reading: Reading, result: Evaluation) -> None:
        if not reading.should_warn(self.limits):
            self.warning_armed = True
            return
        if self.warning_armed:
            self.warning_armed = False
            result.warned = True
            self.services.raise_budget_warning(ev.BudgetWarningRaised(
                rate=to_money(reading.rate), rate_warning=self.limits.rate_warning,
                window_seconds=reading.window_seconds, daily=reading.daily))
            self.report(f"budget warning: ${usd(reading.rate)}/min >= "
                        f"${usd(self.limits.rate_warning)}/min")

    def _enforce(self, reading: Reading) -> None:
        """Once per activation, until it is done: stop the fleet. The watchdog that turned
        the switch on stops every worker (through the log on other hosts); one that found it
        on (turned on on another host, or before it started or restarted) stops the workers
        of its own host that were running then, which only this host's watchdog may signal.
        (Workers started since cannot claim; they are left alone.) An escalation cut short
        by a store fault is done again at the next evaluation."""
        switch = reading.killswitch
        if switch.active and switch.position != self.enforced:
            mine = switch.position == self.activated
            self.stop_fleet(remote=mine, started_before=None if mine else switch.changed_at)
            self.enforced = switch.position

    def activate(self, reading: Reading, reason: str) -> bool:
        """Turn the kill switch on; if this call won, write the file and stop the fleet."""
        event = ev.KillSwitchActivated(
            reason=reason, rate=to_money(reading.rate), daily=reading.daily,
            rate_limit=self.limits.rate_limit, daily_limit=reading.daily_limit(self.limits),
            trace_id=self.services.metadata.trace_id)
        if not self.services.activate_killswitch(event):
            return False
        self.report(f"KILL SWITCH: {reason}")
        now = self.read()
        self.activated = now.killswitch.position
        self.write_killswitch_file(reading, reason)
        self._enforce(now)
        return True

    def write_killswitch_file(self, reading: Reading, reason: str) -> None:
        """``state/budget/kill_switch.active``, as TRI-24 wrote it: temp file + rename, 0600."""
        path = self.paths.kill_switch_file
        body = orjson.dumps({
            "activated_at": iso_time(self.clock()), "reason": reason,
            "daily_spend": usd(reading.daily), "current_rate": usd(reading.rate),
            "trace_id": self.services.metadata.trace_id,
        }, option=orjson.OPT_INDENT_2)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_private(temp, body + b"\n", self.paths.root)
        os.replace(temp, path)

    # --- pause and resume ---------------------------------------------------------------

    def _live_workers(self) -> list[WorkerRow]:
        with self.services.store.snapshot() as tx:
            return reads.live_workers(connection_of(tx))

    def _verified(self, row: WorkerRow) -> bool:
        return row.host == self.host and is_same_process(row.pid, row.pid_start_time)

    def _signal(self, row: WorkerRow, pid: int, signum: signal.Signals, target: str,
                *, group: bool = False) -> None:
        try:
            (os.killpg if group else os.kill)(pid, signum)
        except ProcessLookupError:
            return
        with contextlib.suppress(IllegalTransition):  # it stopped meanwhile
            self.services.signalled(row.worker_id, signum.name, pid, target=target, by=BY)

    def pause_fleet(self, reading: Reading) -> list[str]:
        reason = (f"daily spend ${usd(reading.daily)} >= {self.limits.daily_pause_pct:.0%} of "
                  f"${usd(reading.daily_limit(self.limits))}")
        paused = []
        for row in self._live_workers():
            if row.pause_requested or not self.services.request_pause(
                    row.worker_id, by=BY, reason=reason):
                continue
            self.paused_by_me.add(row.worker_id)
            paused.append(row.worker_id)
            if self._verified(row):
                self._signal(row, row.pid, signal.SIGUSR1, "worker")
        if paused:
            self.report(f"paused {', '.join(paused)}: {reason}")
        return paused

    def resume_fleet(self) -> list[str]:
        resumed = []
        for row in self._live_workers():
            if row.worker_id not in self.paused_by_me:
                continue
            if self.services.request_resume(row.worker_id, by=BY):
                resumed.append(row.worker_id)
                if self._verified(row):
                    self._signal(row, row.pid, signal.SIGUSR2, "worker")
        self.paused_by_me.clear()
        if resumed:
            self.report(f"resumed {', '.join(resumed)}: the budget allows it again")
        return resumed

    # --- the kill switch's escalation ---------------------------------------------------

    def _agent_of(self, target: Target) -> None:
        """Find (or keep) the agent the worker runs, while the worker is verified."""
        if target.agent is not None or not target.worker_alive():
            return
        task = target.row.current_task
        with self.services.store.snapshot() as tx:
            row = None if task is None else QUEUE.load_by_id(connection_of(tx), task)
        if row is None or row.pid is None or row.worker != target.row.worker_id:
            return
        started = agent_start_time(row.pid, target.row.pid)
        if started is not None:
            target.agent = (row.pid, started)

    def stop_fleet(self, *, remote: bool = True, started_before: int | None = None) -> None:
        """Pause request + SIGUSR1, grace, SIGTERM, grace, SIGKILL: to every verified local
        worker and its agent's process group (a worker has longer after its SIGTERM than an
        agent: it is ending its agent and putting its task back); requests only for workers
        elsewhere (none with ``remote=False``: their own host's watchdog, or the winner's
        requests, stop them).
        ``started_before``: only workers registered before that time (microseconds)."""
        targets, elsewhere = [], []
        for row in self._live_workers():
            if (row.host != self.host and not remote) or (
                    started_before is not None and row.started_at >= started_before):
                continue
            self.services.request_pause(row.worker_id, by=BY, reason="kill switch")
            if row.host != self.host:
                elsewhere.append(row)
            elif not is_same_process(row.pid, row.pid_start_time):
                self.report(f"{row.worker_id}: pid {row.pid} is not the registered process: "
                            "not signalled; declared lost")
                self.services.mark_lost(row.worker_id, by=BY,
                                        process=(row.pid, row.pid_start_time))
            else:
                targets.append(Target(row))
        for target in targets:
            self._agent_of(target)
            self._signal(target.row, target.row.pid, signal.SIGUSR1, "worker")
        self._await_exit(targets, self.grace[0], agents_only=False)
        for target in targets:
            self._agent_of(target)
            if target.agent_alive():
                assert target.agent is not None
                self._signal(target.row, target.agent[0], signal.SIGTERM, "agent", group=True)
            if target.worker_alive():
                self._signal(target.row, target.row.pid, signal.SIGTERM, "worker")
        self._await_exit(targets, self.grace[1], agents_only=True)
        for target in targets:  # agents first: they are what spends
            self._agent_of(target)
            if target.agent_alive():
                assert target.agent is not None
                self._signal(target.row, target.agent[0], signal.SIGKILL, "agent", group=True)
        self._await_exit(targets, self.grace[2], agents_only=False)
        for target in targets:
            if target.worker_alive():
                self._signal(target.row, target.row.pid, signal.SIGKILL, "worker")
        self._await_exit(targets, 1.0, agents_only=False)
        for row in elsewhere:
            self.services.request_stop(row.worker_id, by=BY, reason="kill switch")

    @staticmethod
    def _await_exit(targets: list[Target], grace: float, *, agents_only: bool) -> None:
        """Up to ``grace`` seconds, until no target's agent (and worker) is left."""
        deadline = time.monotonic() + grace
        while any(t.agent_alive() or (not agents_only and t.worker_alive()) for t in targets):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    # --- the daemon ---------------------------------------------------------------------

    def checkpoint(self, witness: Witness) -> None:
        """Sign the log's head for the witness (every ``witness_interval`` seconds, if it
        grew). A log that does not follow from the last checkpoint is not signed, and said
        once (it is evidence for ``audit verify``, not a reason to stop guarding the budget)."""
        self._next_checkpoint = time.monotonic() + self.witness_interval
        restored = self.services.store.check_guards()  # dropped while the fleet runs
        if restored is not None:
            self.report(f"budget watchdog: {restored.describe('the store')}")
        try:
            witness.sign(self.services.store)
        except Tri24esError as e:
            self._say_once("witness", f"witness: {e}", "")
            return
        self._say_once("witness", None, "witness: signing again")

    def _say_once(self, part: str, trouble: str | None, back: str) -> None:
        """Say what is wrong with ``part`` once (again only if it changes), and ``back``
        once when it is right again: a daemon that retries every tick must not flood."""
        was = self._troubles.get(part)
        if trouble is not None and trouble != was:
            self.report(f"budget watchdog: {trouble}")
        elif trouble is None and was is not None:
            self.report(f"budget watchdog: {back}")
        self._troubles[part] = trouble

    def run(self, inbox: SignalInbox) -> int:
        """Evaluate on every change to the log or the spend file and every check interval,
        until SIGTERM or SIGINT (exit code 0). Store faults that heal are ridden out: an
        evaluation that failed is made again once the store is back."""
        outage = Outage("budget watchdog", self.report)
        seen = -1
        next_check = 0.0
        announced = False
        while not inbox:
            try:
                if not announced:  # the limits a reset is checked against from now on
                    self.services.record_watchdog_start(ev.BudgetWatchdogStarted(
                        rate_limit=self.limits.rate_limit, daily_limit=self.limits.daily_limit,
                        window_seconds=self.limits.window_seconds,
                        timezone=getattr(self.limits.timezone, "key", None),
                        host=self.host, pid=os.getpid()))
                    announced = True
                head = self.services.store.head()
                now = time.monotonic()
                if head != seen or now >= next_check or self.spend_file.changed():
                    self.evaluate()
                    seen = head
                    next_check = time.monotonic() + self.limits.check_interval
                if self.witness is not None and time.monotonic() >= self._next_checkpoint:
                    self.checkpoint(self.witness)
                wait = max(0.0, min(SLICE, next_check - time.monotonic()))
                self.services.store.wait_for_change(seen, wait)
                outage.ok()
            except TransientStoreError as e:
                pause = time.monotonic() + outage.failed(e)
                while not inbox and time.monotonic() < pause:
                    time.sleep(min(SLICE, max(pause - time.monotonic(), 0)))
        inbox.take()
        self.report("budget watchdog: stopping")
        return 0


@dataclass(frozen=True)
class Reset:
    was_active: bool
    moved_file: Path | None  # where ``kill_switch.active`` was renamed to, if it existed


def reset(services: Services, paths: ProjectPaths, limits: BudgetLimits, *, by: str,
          reason: str, fresh_window: bool = False, allow_today: Decimal | None = None,
          report: Callable[[str], None] = log.info) -> Reset:
    """Turn the kill switch off (KillSwitchReset) and rename ``kill_switch.active`` to
    ``kill_switch.active.<epoch>``, as TRI-24's reset did. Raises ResetRefused while the
    breach still holds (see ``Services.reset_killswitch``). ``spend.jsonl`` is bridged
    first: spend written there before the reset is judged now, not after it."""
    SpendFileBridge(paths.spend_file, limits.max_record_usd, report, limits.window_seconds,
                    services.clock).bridge(services)
    was_active = services.reset_killswitch(by=by, reason=reason, limits=limits,
                                           fresh_window=fresh_window, allow_today=allow_today)
    path = paths.kill_switch_file
    moved = None
    if path.exists():
        moved = path.with_name(f"{path.name}.{int(time.time())}")
        os.replace(path, moved)
    return Reset(was_active, moved)
