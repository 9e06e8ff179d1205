"""The worker (DESIGN.md §7): register, claim, run each task's agent, record the outcome.

One thread decides and writes; the agent's output arrives from a reader thread. The loop
never sleeps blindly: idle, it waits for the next commit to the log (in any process); busy,
for the agent's next output line. Both waits are cut in slices of :data:`SLICE` so that a
signal (which only lands in an inbox) is acted on promptly, and at most
:data:`LINES_PER_TURN` output lines are handled between two looks at the signals.

Control reaches the worker two ways, with the same effect: signals to its process
(SIGUSR1 pause, SIGUSR2 resume, SIGTERM stop now and exit 0, SIGINT the same but exit 1)
and the log: requests in its own stream (``tri24es workers pause|resume|stop``) and the kill
switch, read whenever the log has moved. A pause by signal is recorded (WorkerPaused) and a
resume of either kind ends a pause of either kind. The kill switch is enforced here too, not
only by the watchdog's signals: the agent's tree is ended and its task goes back to the
queue at no cost to its retries.

Faults (``runtime/resilience.py``): a store fault that heals is ridden out. Idle, the loop
waits and tries again; while an agent runs, a renewal, a look at the log or spend that failed
is tried again at the next turn, and spend is kept until it is recorded (what cannot be
recorded by the time the worker exits goes to the spend file, which the watchdog records once
the store is back). A fault that cannot heal (the store replaced) ends the agent and stops
the worker. A worker stalled (SIGSTOP) or cut off from the store past most of its lease loses
its agent to the agent's keeper (``runtime/shim.py``) before anyone else may claim the task;
an attempt that lost its lease is reported as lost, never as completed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import select
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import orjson

from eventlog import Doorbell, EventLogError, TransientStoreError
from tri24es import agents as presets
from tri24es import events as ev
from tri24es.budget import DEFAULT_MAX_RECORD_USD
from tri24es.errors import AlreadyRunning
from tri24es.files import SpareFile, UnsafeFolder, open_private, private_folder, write_private
from tri24es.inputs.usage import Usage, UsageParser
from tri24es.inputs.usage_limits import MAX_RESET_US, UsageLimit, UsageLimitDetector
from tri24es.machines import ENDED_WORKER_STATES, LIVE_WORKER_STATES, TaskState
from tri24es.machines.base import IllegalTransition
from tri24es.names import RequeueReason, RetryFrom
from tri24es.paths import ProjectPaths, safe_name, unsafe_name
from tri24es.pricing import Pricer
from tri24es.procinfo import host_id, is_same_process, start_time
from tri24es.projections.tables.money import from_units
from tri24es.runtime.agent import (
    ATTEMPT_KEY,
    GRACE_SECONDS,
    Agent,
    Keeper,
    Outcome,
    end_leftovers,
)
from tri24es.runtime.progress import ProgressWatch
from tri24es.runtime.resilience import Outage
from tri24es.runtime.signals import SignalInbox, Wakeup, signal_wakeup
from tri24es.runtime.workspace import GitError, Workspace, salvage
from tri24es.services import (
    KILL_SWITCH,
    MODELS,
    WORK,
    AttemptProcess,
    Claim,
    NotFound,
    Services,
    StaleAttempt,
    task_bell,
    worker_bell,
)
from tri24es.services.base import TaskHistory
from tri24es.services.tasks import BUDGET_EXHAUSTED
from tri24es.timeutil import from_us, iso_time, now_us

log = logging.getLogger("tri24es.worker")
T = TypeVar("T")

#: The longest a received signal (or a line of agent output) waits to be acted on.
SLICE = 0.2
#: Output lines handled in one turn of the loop, before signals are looked at again.
LINES_PER_TURN = 2000
#: The longest error text recorded with a failed attempt.
ERROR_LIMIT = 2048
#: The keeper ends an attempt this share of the lease after the last renewal it heard of,
#: within this share more: before the lease runs out and another worker may take the task.
GUARD_SHARE, GRACE_SHARE = 0.75, 0.1
#: How long a stopping worker tries to record how its attempt ended, through an outage.
LAST_WORDS_SECONDS = 5.0
#: The error of an attempt that spent with no sign of progress (runtime/progress.py).
NO_PROGRESS = "no_progress"
#: A worker's spare task file is named after it: ``.worker-<id>.spare`` (see ``_spares``).
_SPARE_PREFIX = "worker-"


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    paths: ProjectPaths
    db_url: str  # handed to agents as TRI24ES_DB
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    exec_command: str | None = None  # overrides each task's own command
    max_tasks: int | None = None
    exit_when_idle: bool = False
    task_timeout: float | None = None
    legacy_files: bool = False
    poll_interval: float = 5.0
    fallback_usd_per_mtok: Decimal = Decimal("75")  # for tokens of models with no known price
    repo: Path | None = None  # each attempt in a worktree of this repository
    agent: str | None = None  # a preset (runtime/presets.py) for tasks without a command
    review: bool = False  # every finished attempt waits for review
    max_record_usd: Decimal = DEFAULT_MAX_RECORD_USD  # over it, a report is recorded flagged
    usage_pause_s: float = 3600.0  # a usage limit that does not say when it resets
    no_progress: ev.NoProgress = ev.NO_PROGRESS_OFF  # the fleet's rule, for tasks without one


class Stop(Exception):
    """Unwinds the loop: the worker stops with ``code`` after recording ``reason``."""

    def __init__(self, code: int, reason: str, *, record: bool = True) -> None:
        super().__init__(reason)
        self.code, self.reason, self.record = code, reason, record


class Ending(enum.Enum):
    EXITED = "exited"  # the agent exited by itself: its exit code decides
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"  # the attempt no longer holds the task (lease expired, taken away)
    BUDGET = "budget"  # the attempt's spend passed the task's max_budget_usd
    KILL_SWITCH = "kill switch"  # the kill switch is on: stopped, at no cost to retries
    STORE_FAULT = "store fault"  # the attempt's output cannot be kept (e.g. a full disk)
    MODEL_PAUSED = "model paused"  # its model was paused fleet-wide: at no cost to retries
    USAGE_LIMIT = "usage limit"  # the agent reported its provider's limit: model paused
    NO_PROGRESS = "no progress"  # it spent with no sign of progress: a failure (no_progress)


def combined(spends: list[ev.SpendRecorded]) -> list[ev.SpendRecorded]:
    """The spend read in one turn as one record per task, model and flag: the same dollars
    and tokens in far fewer events when an agent floods its output with usage lines."""
    groups: dict[tuple[str | None, ...], ev.SpendRecorded] = {}
    for spend in spends:
        key = (spend.task, spend.worker, spend.model, spend.source, spend.flagged)
        before = groups.get(key)
        groups[key] = spend if before is None else before.model_copy(update={
            "amount": before.amount + spend.amount,
            "input_tokens": _plus(before.input_tokens, spend.input_tokens),
            "output_tokens": _plus(before.output_tokens, spend.output_tokens),
            "occurred_at": spend.occurred_at,
        })
    return list(groups.values())


def _plus(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def capped(text: str, limit: int = ERROR_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


class Worker:
    def __init__(self, services: Services, options: WorkerOptions, inbox: SignalInbox) -> None:
        self.services = services
        self.options = options
        self.inbox = inbox
        self.id = options.worker_id
        self.beat_every = services.lease_us / 3_000_000
        lease = services.lease_us / 1_000_000
        self.guard = lease * GUARD_SHARE
        self.grace = min(GRACE_SECONDS, lease * GRACE_SHARE)
        self.paused = False
        self.tasks_run = 0
        self.outage = Outage(f"worker {self.id}", log.warning)
        self.killswitch: str | None = None  # why the kill switch is on, as last read
        self._unrecorded: bool | None = None  # a pause (True) or resume not yet recorded
        self._no_claims_until = 0.0  # after an attempt cut short by a local fault
        self._no_changes = False  # the attempt changed nothing, and its task requires changes
        self._fault_wait = 0.0
        self._look = True  # read the worker's control at the next follow, bell or not
        self.door: Doorbell | None = None  # wakes the worker for what concerns it only
        self._wake: Wakeup | None = None
        self._spare: Keeper | None = None  # a keeper started ahead of the next attempt
        self._spare_file: SpareFile | None = None  # the next attempt's task file, made ahead
        # The keeper (and its key) recorded with the current claim, until its agent starts.
        self._recorded: tuple[Keeper, str] | None = None
        self._spend: list[ev.SpendRecorded] = []  # read from the agent, not yet recorded
        self._skipped: list[ev.SpendLinesSkipped] = []  # unreadable cost lines, to record
        self._attempt_spend = Decimal(0)  # what this worker saw spent in the current attempt
        self._attempt_cap: Decimal | None = None  # the task's max_budget_usd
        self._limit: UsageLimitDetector | None = None  # a provider's usage limit, if reported
        self._watch: ProgressWatch | None = None  # the attempt's no-progress rule, if any
        self._stalled: ev.NoProgressEvidence | None = None  # why it broke that rule
        # Made once, not at each attempt: parsing --exec and copying the environment were a
        # tenth of a millisecond each on the way from a claim to its agent's start.
        self._exec = shlex.split(options.exec_command) if options.exec_command else None
        self._environ = dict(os.environ)  # the worker changes none of it

    # --- registration ------------------------------------------------------------------

    def register(self) -> None:
        """Record WorkerStarted; a dead previous incarnation of this id is declared lost."""
        pid, host = os.getpid(), host_id()
        try:
            row = self.services.worker(self.id)
        except NotFound:
            row = None
        if row is not None and row.state in LIVE_WORKER_STATES:
            if row.host != host:
                raise AlreadyRunning(f"worker {self.id} is already running on {row.host} "
                                     f"(pid {row.pid}); it cannot be checked from here")
            if is_same_process(row.pid, row.pid_start_time):
                raise AlreadyRunning(f"worker {self.id} is already running (pid {row.pid})")
            log.info("worker %s: pid %d is gone: declaring it lost", self.id, row.pid)
            self.services.mark_lost(self.id, by=self.id, process=(row.pid, row.pid_start_time))
        try:
            self.services.start_worker(
                self.id, pid=pid, pid_start_time=start_time(pid), host=host,
                shard=self.options.shard, model=self.options.model, type=self.options.type,
                has_exec=self.options.exec_command is not None or self.options.agent is not None,
            )
        except IllegalTransition:  # another process registered it since we looked
            raise AlreadyRunning(f"worker {self.id} is already running") from None
        log.info("worker %s: started (pid %d)", self.id, pid)
        if self.options.exec_command is None and self.options.agent is None:
            log.warning("worker %s: no --exec or --agent: it takes only tasks that carry their "
                        "own command or agent (submit --command/--agent, or a 'command:' or "
                        "'agent:' line in a task file)", self.id)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Register, then claim and run tasks until told to stop. The exit code."""
        try:
            self._steady(self.register)
            self.door = self.services.store.doorbell(self._bells())
            self._sweep_spares()
            self._spares()
            with signal_wakeup() as wake:  # a signal ends a wait at once
                self._wake = wake
                self._loop()
        except Stop as stop:
            reason = stop.reason
            log.info("worker %s: stopping: %s", self.id, reason)
            if stop.record:
                with contextlib.suppress(IllegalTransition, NotFound):  # declared lost meanwhile
                    self._last_words(lambda: self.services.stopped(self.id, reason))
            return stop.code
        finally:
            self._keep_spend()
            if self.door is not None:
                self.door.close()
            self._let_recorded_go()
            if self._spare is not None:
                self._spare.discard()
            if self._spare_file is not None:
                self._spare_file.discard()
        raise AssertionError("the worker loop ends only by Stop")  # pragma: no cover

    def _bells(self, task_id: str | None = None) -> list[str]:
        """What wakes this worker: work to claim, its own control, the kill switch, and the
        fate of the task it runs; not the spend, heartbeats and claims of the rest."""
        bells = [WORK, KILL_SWITCH, MODELS, worker_bell(self.id)]
        return bells if task_id is None else [*bells, task_bell(task_id)]

    def _loop(self) -> None:
        next_beat = 0.0  # start_worker has just beaten; the first turn expires leases
        while True:
            try:
                next_beat = self._turn(next_beat)
                self.outage.ok()
            except TransientStoreError as e:
                self._pause_for(self.outage.failed(e))

    def _turn(self, next_beat: float) -> float:
        """Look at the log, beat, claim and run what there is, or wait for a commit. When the
        next heartbeat is due."""
        if time.monotonic() >= next_beat:
            if next_beat:
                self.services.heartbeat(self.id)
            self._expire_leases()
            next_beat = time.monotonic() + self.beat_every
            self._look = True  # a bell missed (a lost connection) costs one beat at most
        self._take_signals()
        self._record_pause()
        # A bell that rang is noted before the claim reads (one ringing later is heard by
        # the next wait), but this worker's control is read after the claim unless claims
        # are held back (what holds them may have been lifted): the claim takes nothing
        # for a worker that must not claim (the kill switch on, a pause or stop requested,
        # declared lost), so a submit's agent starts one read sooner. A claimed attempt
        # reads the control at its first turn.
        self._notice()
        if self._holding():
            self._read_control()
        claim = None
        if not self._holding():
            # A read first: a worker woken with the others by one new task does not queue
            # on the write lock unless there may be something for it.
            claim = self._claim() if self.services.claimable(self.id) else None
        if claim is not None:
            while claim is not None:
                claim = self._run(claim)
            return next_beat
        self._read_control()
        if self.options.exit_when_idle and not self.paused:
            raise Stop(0, "idle")
        until = min(next_beat, time.monotonic() + self.options.poll_interval)
        due = None if self._holding() else self.services.next_due()
        if due is not None:  # a delayed or backed-off task: no bell rings when its time comes
            until = min(until, time.monotonic() + (due - self.services.clock()) / 1e6)
        self._spares()  # if the last attempt ended before its first turn made them
        self._wait(until=until)
        return next_beat

    def _claim(self) -> Claim | None:
        """Claim a task, recording with the claim the keeper its attempt will run under
        (the spare, started ahead): recorded before its agent runs, and no commit of its own
        beside the agent's start. That keeper is then this attempt's or no one's."""
        try:
            keeper = self._keeper()
        except OSError:  # no processes left, say: the attempt starts its own, or says why
            return self.services.claim(self.id, with_history=True)
        key = secrets.token_hex(8)
        try:
            claim = self.services.claim(self.id, with_history=True, process=AttemptProcess(
                keeper.pid, keeper.pid, keeper.start_time, key))
        except BaseException:  # perhaps recorded all the same: never another attempt's
            keeper.discard()
            raise
        if claim is None:
            self._spare = keeper
        else:
            self._recorded = keeper, key
        return claim

    def _expire_leases(self) -> None:
        """Requeue tasks whose lease ran out (ending what is left of them on this host) and
        declare workers silent for three leases lost."""
        expired, _ = self.services.expire_leases(silent_after_us=3 * self.services.lease_us)
        for task_id in expired:
            self._end_leftovers(task_id)

    def _wait(self, until: float) -> None:
        """Until one of this worker's bells rings, a signal arrives, or ``until``: asleep in
        ``select`` meanwhile (no polling: an idle fleet costs next to nothing)."""
        assert self.door is not None
        assert self._wake is not None
        while not self.inbox:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            if self.door.wait(0):
                self._look = True
                return
            ready, _, _ = select.select([self.door.fileno(), self._wake.fd], [], [],
                                        min(remaining, self.door.recheck))
            if self._wake.fd in ready:
                self._wake.drain()

    def _pause_for(self, seconds: float) -> None:
        """Wait ``seconds`` (an outage's backoff), acting on signals meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self._take_signals()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, SLICE))

    def _steady(self, fn: Callable[[], T]) -> T:
        """``fn()`` through store outages (reported once; signals acted on meanwhile)."""
        while True:
            try:
                result = fn()
            except TransientStoreError as e:
                self._pause_for(self.outage.failed(e))
                continue
            self.outage.ok()
            return result

    def _must(self, fn: Callable[[], T]) -> T:
        """``fn()`` through store outages; told to stop meanwhile, one last try within
        LAST_WORDS_SECONDS before stopping (how an attempt ended should not be lost)."""
        try:
            return self._steady(fn)
        except Stop:
            self._last_words(fn)
            raise

    def _last_words(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` while stopping: through an outage of at most LAST_WORDS_SECONDS (a stop
        must not wait on the store for ever); None if the store did not come back."""
        deadline = time.monotonic() + LAST_WORDS_SECONDS
        while True:
            try:
                return fn()
            except TransientStoreError as e:
                wait = self.outage.failed(e)
                if time.monotonic() + wait > deadline:
                    log.warning("worker %s: the store is still unavailable: %s", self.id, e)
                    return None
                time.sleep(wait)

    def _take_signals(self) -> None:
        for signum in self.inbox.take():
            log.info("worker %s: received %s", self.id, signum.name)
            if signum == signal.SIGTERM:
                raise Stop(0, "SIGTERM")
            if signum == signal.SIGINT:
                raise Stop(1, "SIGINT")
            if signum == signal.SIGUSR1 and not self.paused:
                self.paused, self._unrecorded = True, True
                log.info("worker %s: paused", self.id)
            elif signum == signal.SIGUSR2 and self.paused:
                self.paused, self._unrecorded = False, False
                log.info("worker %s: resumed", self.id)

    def _follow(self) -> bool:
        """Act on the signals received and, if the log moved, on this worker's row and the
        kill switch. Whether the log moved since the last look."""
        self._take_signals()
        self._record_pause()
        return self._follow_control()

    def _holding(self) -> bool:
        """Whether this worker must not claim now (as far as it knows)."""
        return bool(self.paused or self.killswitch
                    or time.monotonic() < self._no_claims_until)

    def _notice(self) -> None:
        """Note a bell that rang since the last look: the control is to be read."""
        if not self._look and self.door is not None and self.door.wait(0):
            self._look = True

    def _follow_control(self) -> bool:
        self._notice()
        return self._read_control()

    def _read_control(self) -> bool:
        """If a bell rang (or a look is due), read and act on this worker's row and the
        kill switch; whether it did."""
        if not self._look:
            return False
        row, switch = self.services.control(self.id)
        self._look = False
        if row.state in ENDED_WORKER_STATES:
            raise Stop(1, f"declared {row.state} by another process", record=False)
        if row.stop_requested:
            raise Stop(0, "stop requested")
        self.killswitch = (switch.reason or "on") if switch.active else None
        if row.pause_requested != self.paused:  # a request, or the other kind of resume
            self.paused, self._unrecorded = row.pause_requested, row.pause_requested
            log.info("worker %s: %s", self.id, "paused" if self.paused else "resumed")
            self._record_pause()
        return True

    def _record_pause(self) -> None:
        """Record a pause or resume decided here (by signal or request) not recorded yet."""
        if self._unrecorded is None:
            return
        try:
            if self._unrecorded:
                self.services.paused(self.id)
            else:
                self.services.resumed(self.id)
        except IllegalTransition:  # stopping: the stop request is read next
            pass
        self._unrecorded = None

    # --- one task ----------------------------------------------------------------------

    def _run(self, claim: Claim) -> Claim | None:
        """Run one claimed attempt and record its outcome; the next claim, if one was made
        in the same transaction."""
        self.tasks_run += 1
        more = self.options.max_tasks is None or self.tasks_run < self.options.max_tasks
        following: Claim | None = None
        try:
            following = self._run_attempt(claim, more)
        finally:
            self._let_recorded_go()
        if not more:
            raise Stop(0, f"ran {self.tasks_run} tasks")
        return following

    def _run_attempt(self, claim: Claim, more: bool) -> Claim | None:
        history = claim.history or self._steady(lambda: self.services.history(claim.task_id))
        for start in history.started:  # whatever is left of earlier attempts on this host
            self._end_leftovers_of(start)
        self._salvage_workspaces(claim.task_id, claim.attempt - 1)
        task = history.submitted
        legacy = LegacyFile.take(self.options, task, self.id) if self.options.legacy_files \
            else None
        try:
            return self._attempt(claim, history, claim_next=more)
        finally:
            if legacy is not None:
                state = self._last_words(lambda: self.services.task(claim.task_id).state)
                legacy.finish(TaskState(state) if state else TaskState.QUEUED)

    def _let_recorded_go(self) -> None:
        """The keeper recorded with the claim, if its agent never started: it goes (it is
        named in the attempt's TaskStarted, so it serves no other attempt)."""
        if self._recorded is not None:
            self._recorded[0].discard()
            self._recorded = None

    def _end_leftovers(self, task_id: str) -> None:
        for start in self.services.history(task_id).started:
            self._end_leftovers_of(start)
        self._salvage_workspaces(task_id, self.services.task(task_id).attempt)

    def _salvage_workspaces(self, task_id: str, up_to: int) -> None:
        """Commit and remove the worktrees earlier attempts of the task left on this host
        (a worker that died before it recorded its agent's start left one too)."""
        repo = self.options.repo
        if repo is None:
            return
        for attempt in range(1, up_to + 1):
            path = self.options.paths.workspace(task_id, attempt)
            if not path.exists():
                continue
            try:
                kept = salvage(repo, self.options.paths.workspaces, path,
                               f"{task_id} attempt {attempt}: left by a lost worker")
            except GitError as e:
                log.error("worker %s: cannot clean %s: %s", self.id, path, e)
                continue
            log.warning("worker %s: cleaned the workspace of %s attempt %d%s", self.id,
                        task_id, attempt,
                        " (its uncommitted changes committed to its branch)" if kept else "")

    def _end_leftovers_of(self, start: ev.TaskStarted) -> None:
        if start.host != host_id():
            return
        if start.pid_start_time is not None and end_leftovers(
                start.pid, start.pid_start_time, start.key, self.grace):
            log.warning("worker %s: ended what was left of %s attempt %d (pid %d)", self.id,
                        start.task_id, start.attempt, start.pid)


    def _command(self, task: ev.TaskSubmitted, history: TaskHistory,
                 ) -> tuple[list[str] | None, str | None]:
        """The agent's command line and its preset (None for a plain command): the worker's
        --exec, else the task's own command, else its agent preset, else the worker's."""
        if self._exec:
            return list(self._exec), None
        if task.command:
            return task.command, None
        agent = task.agent or self.options.agent
        if agent is None:
            return None, None
        sessions = [s.session_id for s in history.sessions if s.agent == agent]
        session = sessions[-1] if task.resume and sessions else None
        return presets.command(agent, budget_usd=self._attempt_cap, session=session), agent

    def _attempt(self, claim: Claim, history: TaskHistory, *, claim_next: bool) -> Claim | None:
        task = history.submitted
        left = claim.row.budget_left()  # the task's budget, less what earlier attempts spent
        self._attempt_spend = Decimal(0)
        self._attempt_cap = None if left is None else from_units(left)
        command, agent_name = self._command(task, history)
        if not command:
            self._fail(claim, "no command", retryable=False)
            return None
        workspace = None
        self._limit, self._watch, self._stalled = UsageLimitDetector(), None, None
        if self.options.repo is not None:
            previous = history.results[-1] if history.results else None
            try:
                workspace = Workspace.prepare(
                    self.options.repo, self.options.paths.workspaces, claim.task_id,
                    claim.attempt, base=task.base,
                    from_branch=task.retry_from is RetryFrom.BRANCH,
                    base_commit=previous.base_commit if previous else None)
            except GitError as e:
                self._fail(claim, f"cannot make the workspace: {e}")
                return None
        rule = task.no_progress or self.options.no_progress
        if not rule.off:
            self._watch = ProgressWatch(rule, None if workspace is None else workspace.path)
        try:
            try:
                agent = self._spawn(claim, history, command, workspace)
            except UnsafeFolder:  # not the task's fault: back to the queue, and say why
                self._requeue(claim, RequeueReason.STORE_FAULT)
                raise
            except OSError as e:
                self._fail(claim, f"cannot start the agent: {e.strerror or e}", retryable=False)
                return None
            except StaleAttempt:  # the lease ran out before the agent was up: it was stopped
                return None
            # Said once the agent is up: a log line cost a tenth of a millisecond before it.
            log.info("worker %s: claimed %s (attempt %d): agent started", self.id,
                     claim.task_id, claim.attempt)
            if self.door is not None:
                self.door.listen(self._bells(claim.task_id))
                self._look = True  # a bell that rang before it listened is not missed
            try:
                ending, last_line, session = self._supervise(claim, agent, agent_name)
            finally:
                if self.door is not None:
                    self.door.listen(self._bells())
            outcome = agent.outcome()
            if ending is Ending.EXITED and self._limit.found is not None:
                ending = Ending.USAGE_LIMIT  # said in its last words: whatever its exit code
            if session is not None and agent_name is not None:
                self._fact(ev.AgentSessionStarted(task_id=claim.task_id, worker=self.id,
                                                  attempt=claim.attempt, agent=agent_name,
                                                  session_id=session))
            if workspace is not None:
                ending = self._result(claim, task, workspace, ending, outcome)
            following = self._record(claim, ending, outcome, last_line, claim_next=claim_next,
                                     review=task.review or self.options.review)
            if agent.refused is not None:  # its log's place is someone else's: the worker stops
                raise agent.refused
            return following
        finally:
            if workspace is not None:
                with contextlib.suppress(GitError):
                    workspace.remove()

    def _result(self, claim: Claim, task: ev.TaskSubmitted, workspace: Workspace,
                ending: Ending, outcome: Outcome) -> Ending:
        """Commit and record what the attempt left in its workspace; an attempt that changed
        nothing fails when its task requires changes."""
        done = ending is Ending.EXITED and outcome.why == "exited" and outcome.code == 0
        how = outcome.why if ending is Ending.EXITED else ending.value
        why = "completed" if done else f"ended ({how})"
        try:
            result = workspace.finish(why)
        except GitError as e:
            log.error("worker %s: %s attempt %d: %s", self.id, claim.task_id, claim.attempt, e)
            return ending
        self._fact(ev.TaskResultRecorded(
            task_id=claim.task_id, worker=self.id, attempt=claim.attempt,
            repo=str(workspace.repo), branch=workspace.branch, base=workspace.base_ref,
            base_commit=workspace.base_commit, head_commit=result.head,
            files_changed=result.files_changed, insertions=result.insertions,
            deletions=result.deletions, committed_leftovers=result.committed_leftovers,
            outcome=why))
        if done and task.require_changes and not result.changed:
            self._no_changes = True
        return ending

    def _fact(self, event: ev.TaskResultRecorded | ev.AgentSessionStarted) -> None:
        """Record what the attempt learned, while it holds the task (else it is only logged:
        the branch keeps the changes all the same)."""
        try:
            self._must(lambda: self.services.record_attempt_fact(event))
        except StaleAttempt:
            log.warning("worker %s: %s attempt %d no longer holds the task: %s not recorded",
                        self.id, event.task_id, event.attempt, event.topic)

    def _record(self, claim: Claim, ending: Ending, outcome: Outcome, last_line: str, *,
                claim_next: bool, review: bool = False) -> Claim | None:
        """Record how the attempt ended (through store outages: it must not be lost)."""
        code = outcome.code
        if self._no_changes:
            self._no_changes = False
            self._fail(claim, "no changes (the task requires changes)", exit_code=code)
            return None
        if ending is Ending.EXITED and outcome.why == "failed":
            self._fail(claim, capped(f"cannot start the agent: {outcome.detail}"),
                       retryable=False)
            return None
        if ending is Ending.EXITED and outcome.lost:
            ending = Ending.LOST
        elif ending is Ending.EXITED and outcome.why in ("terminated", "killed"):
            # Its process group was signalled from outside: the watchdog's escalation, if
            # the kill switch is on (a stop, not a failure), else a failure like any kill.
            self._look = True
            with contextlib.suppress(TransientStoreError):
                self._follow()
            if self.killswitch:
                ending = Ending.KILL_SWITCH
        if ending is Ending.USAGE_LIMIT and self._limit is not None \
                and self._limit.found is not None:
            self._usage_limited(claim, self._limit.found)
        elif ending is Ending.NO_PROGRESS and self._stalled is not None:
            stalled = self._stalled
            log.info("worker %s: %s spent $%s with no progress for %.0f s (last output: %s)",
                     self.id, claim.task_id, stalled.spent_usd, stalled.seconds,
                     stalled.last_line)
            self._fail(claim, NO_PROGRESS, exit_code=code, no_progress=stalled)
        elif ending is Ending.TIMEOUT:
            self._fail(claim, "timeout", exit_code=code)
        elif ending is Ending.BUDGET:
            log.info("worker %s: %s spent $%s, all it had left of its max_budget_usd",
                     self.id, claim.task_id, self._attempt_spend)
            self._fail(claim, BUDGET_EXHAUSTED, retryable=False, exit_code=code)
        elif ending is Ending.EXITED and outcome.why == "exited" and code == 0:
            try:
                following = self._must(lambda: self.services.complete(
                    claim.task_id, self.id, claim.attempt, review=review,
                    claim_next=claim_next and not self.paused and not self.killswitch))
            except StaleAttempt:
                log.warning("worker %s: %s attempt %d: lost its lease before it could "
                            "complete; not completed", self.id, claim.task_id, claim.attempt)
                return None
            log.info("worker %s: %s %s", self.id,
                     "finished (waiting for review)" if review else "completed", claim.task_id)
            self._fault_wait = 0.0
            return following
        elif ending is Ending.EXITED and outcome.why in ("exited", "terminated", "killed"):
            status = "exit ?" if code is None else (
                f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}")
            self._fail(claim, capped(f"{status}: {last_line}" if last_line else status),
                       exit_code=code)
        elif ending in (Ending.KILL_SWITCH, Ending.LOST, Ending.STORE_FAULT, Ending.EXITED,
                        Ending.MODEL_PAUSED):
            reason = {Ending.KILL_SWITCH: RequeueReason.KILL_SWITCH,
                      Ending.STORE_FAULT: RequeueReason.STORE_FAULT,
                      Ending.MODEL_PAUSED: RequeueReason.MODEL_PAUSED}.get(
                ending, RequeueReason.LEASE_LOST)
            log.info("worker %s: %s attempt %d %s: agent stopped", self.id, claim.task_id,
                     claim.attempt, ending.value)
            self._requeue(claim, reason)
            if ending is Ending.STORE_FAULT:  # e.g. a full disk: no new attempt for a while
                self._fault_wait = min(max(self._fault_wait * 2, 1.0), 60.0)
                self._no_claims_until = time.monotonic() + self._fault_wait
                return None
        else:
            log.info("worker %s: %s %s: agent stopped", self.id, ending.value, claim.task_id)
        return None

    def _spawn(self, claim: Claim, history: TaskHistory, command: list[str],
               workspace: Workspace | None) -> Agent:
        paths = self.options.paths
        task = history.submitted
        text = ((task.body or f"# {task.title}\n") + "".join(
            f"\n\n## Review of attempt {note.attempt}"
            f"{f' by {note.by}' if note.by else ''}\n\n{note.reason}\n"
            for note in history.feedback)).encode()  # what the reviewers asked for
        task_file = paths.task_input(claim.task_id)
        spare, self._spare_file = self._spare_file, None
        if spare is not None:  # made ahead: a file's creation was most of its writing
            spare.place(task_file, text)
        else:
            write_private(task_file, text, paths.root)
        recorded, self._recorded = self._recorded, None
        if recorded is not None and not recorded[0].alive():  # another one, recorded anew
            recorded[0].discard()
            recorded = None
        keeper, key = recorded or (self._keeper(), secrets.token_hex(8))
        env = self._environ | {
            "TRI24ES_TASK_ID": claim.task_id, "TRI24ES_WORKER_ID": self.id,
            "TRI24ES_ATTEMPT": str(claim.attempt), "TRI24ES_DB": self.options.db_url,
            "TRI24ES_TASK_FILE": str(task_file), ATTEMPT_KEY: key,
        }
        if self._attempt_cap is not None:  # what the agent may still spend on this task
            env["TRI24ES_BUDGET_REMAINING_USD"] = str(self._attempt_cap)
        if workspace is not None:
            env |= {"TRI24ES_WORKSPACE": str(workspace.path), "TRI24ES_BRANCH": workspace.branch}
        agent = Agent(keeper, command, stdin=text, env=env,
                      log_path=paths.attempt_log(claim.task_id, claim.attempt),
                      cwd=None if workspace is None else workspace.path, root=paths.root)
        if recorded is not None:
            return agent
        try:
            self._steady(lambda: self.services.started(
                claim.task_id, self.id, claim.attempt, agent.pid, agent.pgid, agent.start_time,
                key))
        except BaseException:
            agent.terminate()
            raise
        return agent

    def _keeper(self) -> Keeper:
        """A keeper for the next attempt: the spare one if it is there and alive."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive():
            return spare
        if spare is not None:
            spare.discard()
        return Keeper(self.guard, self.grace)

    def _sweep_spares(self) -> None:
        """Remove the spare task files of this host's workers that are gone (a SIGKILLed
        worker leaves its empty one; only a restart under its id would replace it). A spare
        taken from a worker that starts meanwhile costs it nothing: its attempt finds the
        spare gone and writes the file afresh."""
        host = host_id()
        with contextlib.suppress(OSError):
            for name, path in SpareFile.found(self.options.paths.task_inputs, _SPARE_PREFIX):
                worker_id = unsafe_name(name)
                if worker_id == self.id:
                    continue
                try:
                    row = self.services.worker(worker_id)
                except NotFound:
                    row = None
                if row is not None and row.state in LIVE_WORKER_STATES and (
                        row.host != host or is_same_process(row.pid, row.pid_start_time)):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _spares(self) -> None:
        """Start a keeper and make the task file ahead of the next attempt: its agent then
        starts at once."""
        if self._spare_file is None:
            # Failing, the file is written afresh at the attempt (any trouble said there).
            with contextlib.suppress(OSError, UnsafeFolder):
                self._spare_file = SpareFile(self.options.paths.task_inputs,
                                             f"{_SPARE_PREFIX}{safe_name(self.id)}",
                                             self.options.paths.root)
        if self._spare is None:
            try:
                self._spare = Keeper(self.guard, self.grace)
            except OSError as e:  # no processes left, say: the next attempt starts its own
                log.warning("worker %s: cannot start a spare keeper: %s", self.id, e)

    def _supervise(self, claim: Claim, agent: Agent,
                   agent_name: str | None) -> tuple[Ending, str, str | None]:
        """Watch the agent until it ends, renewing the lease, recording spend as its output
        streams, and following control. Returns how it ended, its last output line and the
        session id its output announced (for a preset)."""
        parser = UsageParser(Pricer(self.options.fallback_usd_per_mtok),
                             self.options.max_record_usd)
        last_line = ""
        session: str | None = None
        now = time.monotonic()
        renew_at = now + self.beat_every
        timeout = self.options.task_timeout
        deadline = now + timeout if timeout is not None else float("inf")
        ending: Ending | None = None
        if agent.log_error is not None:  # its log could not be opened: ended at once
            log.warning("worker %s: %s: %s", self.id, claim.task_id, agent.log_error)
            ending = Ending.STORE_FAULT
        spare_due = True
        try:
            while ending is None:
                wait = min(SLICE, renew_at - now, deadline - now)
                lines = agent.read(max(wait, 0), limit=LINES_PER_TURN)
                if spare_due:
                    # The next attempt's keeper starts (and task file is made) while this one
                    # runs, once its agent had its first output or a slice of time to
                    # itself: an interpreter starting beside it would slow the agent's own
                    # start.
                    spare_due = False
                    self._spares()
                for line in lines:
                    self._take_line(claim, parser, line)
                    last_line = line.decode(errors="replace").strip() or last_line
                    if agent_name is not None and session is None:
                        session = presets.session_of(agent_name, line)
                if self._limit is not None and self._limit.found is not None:
                    ending = Ending.USAGE_LIMIT  # before its exit: an exit 0 is no success
                    break
                if agent.log_error is not None:
                    log.warning("worker %s: %s: %s", self.id, claim.task_id, agent.log_error)
                    ending = Ending.STORE_FAULT
                    break
                if agent.exited():
                    ending = Ending.EXITED
                    break
                ending = self._check(claim)
                if ending is None and self._over_budget():
                    ending = Ending.BUDGET
                if ending is None and self._watch is not None:
                    self._stalled = self._watch.check(self._attempt_spend, last_line)
                    if self._stalled is not None:
                        ending = Ending.NO_PROGRESS
                now = time.monotonic()
                if ending is None and now >= renew_at:
                    ending, renewed = self._renew(claim)
                    if renewed:
                        agent.beat()
                        renew_at = now + self.beat_every
                    else:  # the store is out: try again soon (the keeper guards the lease)
                        renew_at = now + SLICE
                if ending is None and now >= deadline:
                    ending = Ending.TIMEOUT
            if ending is not Ending.EXITED:
                agent.terminate()
        except Stop:
            agent.terminate()
            reason = (RequeueReason.KILL_SWITCH if self._killswitch_on()
                      else RequeueReason.WORKER_STOPPED)
            with contextlib.suppress(StaleAttempt, IllegalTransition):
                self._last_words(lambda: self.services.requeue(
                    claim.task_id, reason, by=self.id, attempt=claim.attempt))
            raise
        except BaseException:  # a fault that cannot heal: nothing of the attempt runs on
            agent.terminate()
            raise
        finally:
            agent.outcome()
            for line in agent.read(0):
                self._take_line(claim, parser, line)
                last_line = line.decode(errors="replace").strip() or last_line
                if agent_name is not None and session is None:
                    session = presets.session_of(agent_name, line)
            self._take_spend(claim, parser, parser.finish())
            self._flush_spend(steady=True)
        return ending, last_line, session

    def _check(self, claim: Claim) -> Ending | None:
        """Signals, spend, and, if the log moved, control and the task: how the attempt must
        end now, if it must. A store fault is left for the next turn."""
        self._take_signals()
        try:
            self._flush_spend()
            if self._follow():
                if self.killswitch:
                    log.warning("worker %s: kill switch on (%s): stopping %s", self.id,
                                self.killswitch, claim.task_id)
                    return Ending.KILL_SWITCH
                model = claim.row.model or self.options.model
                if self.services.model_paused(model):
                    log.warning("worker %s: model %s paused: stopping %s", self.id, model,
                                claim.task_id)
                    return Ending.MODEL_PAUSED
                return self._check_task(claim)
        except TransientStoreError as e:
            self.outage.failed(e)
        return None

    def _killswitch_on(self) -> bool:
        """Whether the kill switch is on, looked up now (a stop signal may be the watchdog's
        escalation, arriving before this worker read the switch from the log)."""
        if self.killswitch:
            return True
        with contextlib.suppress(EventLogError, NotFound):
            return self.services.control(self.id)[1].active
        return False

    def _check_task(self, claim: Claim) -> Ending | None:
        """Whether the task was cancelled or taken away from this attempt."""
        row = self.services.task(claim.task_id)
        if row.state == TaskState.CANCELLED:
            return Ending.CANCELLED
        if row.state != TaskState.RUNNING or row.attempt != claim.attempt or row.worker != self.id:
            return Ending.LOST
        return None

    def _renew(self, claim: Claim) -> tuple[Ending | None, bool]:
        """(how the attempt must end, whether the lease was renewed)."""
        try:
            self.services.renew_lease(claim.task_id, self.id, claim.attempt)
        except StaleAttempt:
            log.warning("worker %s: %s attempt %d: the lease is gone: stopping its agent",
                        self.id, claim.task_id, claim.attempt)
            return Ending.LOST, False
        except TransientStoreError as e:
            self.outage.failed(e)
            return None, False
        self.outage.ok()
        return None, True

    def _over_budget(self) -> bool:
        cap = self._attempt_cap
        return cap is not None and self._attempt_spend >= cap

    def _take_line(self, claim: Claim, parser: UsageParser, line: bytes) -> None:
        """One output line: its spend, a usage limit it reports, progress it shows."""
        usages = parser.feed(line)
        self._take_spend(claim, parser, usages)
        if self._limit is not None:
            self._limit.feed(line)
        if self._watch is not None:
            self._watch.saw(line, spend_line=bool(usages), spent=self._attempt_spend)

    def _take_spend(self, claim: Claim, parser: UsageParser, usages: Iterable[Usage]) -> None:
        """The spend ``parser`` just read, and the cost lines it could not read, to record."""
        skipped = parser.skipped
        if skipped:  # cost reports that could not be read: counted, with the first of them
            reason, sample = skipped[0]
            log.warning("worker %s: %s: %d spend line(s) not readable: %s", self.id,
                        claim.task_id, len(skipped), reason)
            self._skipped.append(ev.SpendLinesSkipped(
                source="worker", count=len(skipped), reason=reason, sample=sample,
                task=claim.task_id, worker=self.id))
            skipped.clear()
        for usage in usages:
            self._attempt_spend += usage.amount
            self._spend.append(ev.SpendRecorded(
                amount=usage.amount, model=usage.model, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, task=claim.task_id, worker=self.id,
                source="worker", occurred_at=from_us(now_us()), flagged=usage.flagged,
            ))

    def _flush_spend(self, *, steady: bool = False) -> None:
        """Record the spend read so far, in one transaction; kept for later if the store is
        out (``steady``: through the outage, while stopping only for a while)."""
        if not self._spend and not self._skipped:
            return
        batch: list[ev.SpendRecorded | ev.SpendLinesSkipped] = [
            *combined(self._spend), *self._skipped]
        if steady:
            recorded = self._last_words(lambda: self.services.record_spends(batch))
            if recorded is None:
                return  # kept: written to the spend file at exit
        else:
            self.services.record_spends(batch)
        self._spend, self._skipped = [], []

    def _keep_spend(self) -> None:
        """At exit: spend the store did not take goes to the spend file (the watchdog and
        `spend import` record each line once), so not a dollar is lost."""
        for skipped in self._skipped:  # counts of unreadable lines: said, as they cannot be kept
            log.error("worker %s: %s: %d unreadable spend line(s) not recorded (the store is "
                      "gone): %s", self.id, skipped.task, skipped.count, skipped.sample)
        self._skipped = []
        if not self._spend:
            return
        path = self.options.paths.spend_file
        lines = b"".join(orjson.dumps({
            "timestamp_epoch": int(s.occurred_at.timestamp()), "amount": str(s.amount),
            "model": s.model, "task_id": s.task, "worker": s.worker, "event": "worker",
        }) + b"\n" for s in self._spend)
        try:
            with open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                              self.options.paths.root) as f:
                f.write(lines)
            log.warning("worker %s: the store took no spend at exit: %d records kept in %s",
                        self.id, len(self._spend), path)
            self._spend = []
        except (OSError, UnsafeFolder) as e:
            log.error("worker %s: %d spend records could not be kept (%s): %s", self.id,
                      len(self._spend), e, lines.decode())

    def _fail(self, claim: Claim, error: str, *, retryable: bool = True,
              exit_code: int | None = None,
              no_progress: ev.NoProgressEvidence | None = None) -> None:
        log.info("worker %s: %s failed: %s", self.id, claim.task_id, error)
        with contextlib.suppress(StaleAttempt):
            self._must(lambda: self.services.fail(
                claim.task_id, self.id, claim.attempt, capped(error), retryable=retryable,
                exit_code=exit_code, no_progress=no_progress))

    def _usage_limited(self, claim: Claim, limit: UsageLimit) -> None:
        """Pause the attempt's model until its provider's limit resets (or for the default
        pause, when the agent did not say when, or said a time already past) and put the
        task back at no retry cost; other models' tasks run on."""
        now = now_us()
        until = limit.until_us if limit.until_us is not None and limit.until_us > now \
            else now + min(round(self.options.usage_pause_s * 1_000_000), MAX_RESET_US)
        model = claim.row.model or self.options.model
        log.warning("worker %s: %s attempt %d: usage limit reported (%s): %s until %s",
                    self.id, claim.task_id, claim.attempt, limit.text,
                    f"model {model} paused" if model else "the task waits", iso_time(until))
        with contextlib.suppress(StaleAttempt, IllegalTransition):
            self._must(lambda: self.services.usage_limited(
                claim.task_id, self.id, claim.attempt, model=model, until=from_us(until),
                reason=f"usage limit: {limit.text}"))

    def _requeue(self, claim: Claim, reason: RequeueReason) -> None:
        with contextlib.suppress(StaleAttempt, IllegalTransition):
            self._must(lambda: self.services.requeue(claim.task_id, reason, by=self.id,
                                                     attempt=claim.attempt))


@dataclass(frozen=True)
class LegacyFile:
    """``--legacy-files``: a task's queue file follows the task, as in the TRI-24 scripts:
    ``tasks/queue/...`` -> ``tasks/running/<id>.md`` (with ``<id>.md.lock.d/`` holding
    ``worker_id`` and ``claimed_at``) -> ``tasks/completed/`` or ``tasks/failed/``."""

    source: Path
    running: Path
    lock: Path
    tasks: Path
    root: Path

    @classmethod
    def take(cls, options: WorkerOptions, task: ev.TaskSubmitted,
             worker_id: str) -> LegacyFile | None:
        """Move the task's file to running/, if it is a file under tasks/queue/."""
        if task.source is None:
            return None
        tasks = options.paths.tasks
        source = (options.paths.root / task.source).resolve()  # an absolute one stays as it is
        if not source.is_relative_to(options.paths.queue.resolve()) or not source.is_file():
            return None
        running = tasks / "running" / f"{safe_name(task.task_id)}.md"
        lock = running.with_name(running.name + ".lock.d")
        root = options.paths.root
        private_folder(lock, root)  # a dead worker's lock is taken over
        write_private(lock / "worker_id", (worker_id + "\n").encode(), root)
        write_private(lock / "claimed_at", (datetime.now(UTC).isoformat() + "\n").encode(), root)
        os.replace(source, running)
        return cls(source, running, lock, tasks, root)

    def finish(self, state: TaskState) -> None:
        """Move the file on by the task's state: completed/, failed/ (dead letter or
        cancelled), or back where it was queued (it will run again)."""
        folder = {TaskState.COMPLETED: "completed", TaskState.FAILED: "failed",
                  TaskState.CANCELLED: "failed"}.get(state)
        target = self.source if folder is None else self.tasks / folder / self.running.name
        private_folder(target.parent, self.root)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.running, target)
        shutil.rmtree(self.lock, ignore_errors=True)
