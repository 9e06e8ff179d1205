"""The worker (DESIGN.md §7): register, claim, run each task's agent, record the outcome.

One thread decides and writes; the agent's output arrives from a reader thread. The loop
never sleeps blindly: idle, it waits for the next commit to the log (in any process); busy,
for the agent's next output line. Both waits are cut in slices of :data:`SLICE` so that a
signal (which only lands in an inbox) is acted on promptly.

Control reaches the worker two ways, with the same effect: signals to its process
(SIGUSR1 pause, SIGUSR2 resume, SIGTERM stop now and exit 0, SIGINT the same but exit 1)
and request events in its own stream (``tri24es workers pause|resume|stop``), which it
reads from its row whenever the log has moved.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tri24es import events as ev
from tri24es.errors import AlreadyRunning
from tri24es.inputs.usage import Usage, UsageParser
from tri24es.machines import ENDED_WORKER_STATES, LIVE_WORKER_STATES, TaskState
from tri24es.machines.base import IllegalTransition
from tri24es.paths import ProjectPaths, safe_name
from tri24es.pricing import Pricer
from tri24es.procinfo import host_id, is_same_process, start_time
from tri24es.runtime.agent import Agent, write_private
from tri24es.runtime.signals import SignalInbox
from tri24es.services import Claim, NotFound, Services, StaleAttempt
from tri24es.timeutil import from_us, now_us

log = logging.getLogger("tri24es.worker")

#: The longest a received signal (or a line of agent output) waits to be acted on.
SLICE = 0.2


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


class Worker:
    def __init__(self, services: Services, options: WorkerOptions, inbox: SignalInbox) -> None:
        self.services = services
        self.options = options
        self.inbox = inbox
        self.id = options.worker_id
        self.beat_every = services.lease_us / 3_000_000
        self.paused = False
        self.tasks_run = 0
        self._seen_head = -1
        self._pause_requested = False  # as last read from the row: a change is a request
        self._attempt_spend = Decimal(0)  # what this worker recorded for the current attempt
        self._attempt_cap: Decimal | None = None  # the task's max_budget_usd

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
            self.services.mark_lost(self.id, by=self.id)
        try:
            self.services.start_worker(
                self.id, pid=pid, pid_start_time=start_time(pid), host=host,
                shard=self.options.shard, model=self.options.model, type=self.options.type,
            )
        except IllegalTransition:  # another process registered it since we looked
            raise AlreadyRunning(f"worker {self.id} is already running") from None
        log.info("worker %s: started (pid %d)", self.id, pid)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Register, then claim and run tasks until told to stop. The exit code."""
        self.register()
        try:
            self._loop()
        except Stop as stop:
            log.info("worker %s: stopping: %s", self.id, stop.reason)
            if stop.record:
                with contextlib.suppress(IllegalTransition):  # declared lost meanwhile
                    self.services.stopped(self.id, stop.reason)
            return stop.code
        raise AssertionError("the worker loop ends only by Stop")  # pragma: no cover

    def _loop(self) -> None:
        self.services.expire_leases(silent_after_us=3 * self.services.lease_us)
        next_beat = time.monotonic() + self.beat_every  # start_worker has just beaten
        while True:
            self._follow()
            if time.monotonic() >= next_beat:
                self.services.heartbeat(self.id)
                self.services.expire_leases(silent_after_us=3 * self.services.lease_us)
                next_beat = time.monotonic() + self.beat_every
            head = self.services.store.head()  # before the claim: a later commit wakes us
            claim = None if self.paused else self.services.claim(self.id)
            if claim is not None:
                while claim is not None:
                    claim = self._run(claim)
                continue
            if self.options.exit_when_idle and not self.paused:
                raise Stop(0, "idle")
            self._wait(head, until=min(next_beat, time.monotonic() + self.options.poll_interval))

    def _wait(self, head: int, until: float) -> None:
        """Until the log moves past ``head``, a signal arrives, or ``until``."""
        while not self.inbox:
            remaining = until - time.monotonic()
            if remaining <= 0 or self.services.store.wait_for_change(head, min(remaining, SLICE)):
                return

    def _follow(self) -> bool:
        """Act on the signals received and, if the log moved, on this worker's row.
        Whether the log moved since the last look."""
        for signum in self.inbox.take():
            log.info("worker %s: received %s", self.id, signum.name)
            if signum == signal.SIGTERM:
                raise Stop(0, "SIGTERM")
            if signum == signal.SIGINT:
                raise Stop(1, "SIGINT")
            if signum == signal.SIGUSR1:
                self._pause()
            elif signum == signal.SIGUSR2:
                self._resume()
        head = self.services.store.head()
        if head == self._seen_head:
            return False
        self._seen_head = head
        row = self.services.worker(self.id)
        if row.state in ENDED_WORKER_STATES:
            raise Stop(1, f"declared {row.state} by another process", record=False)
        if row.stop_requested:
            raise Stop(0, "stop requested")
        if row.pause_requested and not self._pause_requested:
            self._pause()
        elif self._pause_requested and not row.pause_requested:
            self._resume()
        self._pause_requested = row.pause_requested
        return True

    def _pause(self) -> None:
        if not self.paused:
            try:
                self.services.paused(self.id)
            except IllegalTransition:  # stopping: the stop request is read next
                return
            self.paused = True
            log.info("worker %s: paused", self.id)

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            self.services.resumed(self.id)
            log.info("worker %s: resumed", self.id)

    # --- one task ----------------------------------------------------------------------

    def _run(self, claim: Claim) -> Claim | None:
        """Run one claimed attempt and record its outcome; the next claim, if one was made
        in the same transaction."""
        self.tasks_run += 1
        more = self.options.max_tasks is None or self.tasks_run < self.options.max_tasks
        task = self.services.submitted(claim.task_id)
        log.info("worker %s: claimed %s (attempt %d)", self.id, claim.task_id, claim.attempt)
        legacy = LegacyFile.take(self.options, task, self.id) if self.options.legacy_files \
            else None
        following: Claim | None = None
        try:
            following = self._attempt(claim, task, claim_next=more)
        finally:
            if legacy is not None:
                legacy.finish(self._state_of(claim.task_id))
        if not more:
            raise Stop(0, f"ran {self.tasks_run} tasks")
        return following

    def _attempt(self, claim: Claim, task: ev.TaskSubmitted, *, claim_next: bool) -> Claim | None:
        command = (shlex.split(self.options.exec_command) if self.options.exec_command
                   else task.command)
        if not command:
            self._fail(claim, "no command", retryable=False)
            return None
        self._attempt_spend, self._attempt_cap = Decimal(0), task.max_budget_usd
        try:
            agent = self._spawn(claim, task, command)
        except OSError as e:
            self._fail(claim, f"cannot run {command[0]}: {e.strerror or e}", retryable=False)
            return None
        except StaleAttempt:  # the lease ran out before the agent was up: it was stopped
            return None
        ending, last_line = self._supervise(claim, agent)
        code = agent.reap()
        if ending is Ending.TIMEOUT:
            self._fail(claim, "timeout", exit_code=code)
        elif ending is Ending.BUDGET:
            log.info("worker %s: %s spent $%s > max_budget_usd $%s", self.id, claim.task_id,
                     self._attempt_spend, self._attempt_cap)
            self._fail(claim, "budget", retryable=False, exit_code=code)
        elif ending is Ending.EXITED and code == 0:
            with contextlib.suppress(StaleAttempt):
                log.info("worker %s: completed %s", self.id, claim.task_id)
                return self.services.complete(claim.task_id, self.id, claim.attempt,
                                              claim_next=claim_next and not self.paused)
        elif ending is Ending.EXITED:
            status = f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
            self._fail(claim, f"{status}: {last_line}" if last_line else status, exit_code=code)
        else:
            log.info("worker %s: %s %s: agent stopped", self.id, ending.value, claim.task_id)
        return None

    def _spawn(self, claim: Claim, task: ev.TaskSubmitted, command: list[str]) -> Agent:
        paths = self.options.paths
        text = (task.body or f"# {task.title}\n").encode()
        task_file = paths.task_input(claim.task_id)
        write_private(task_file, text)
        env = os.environ | {
            "TRI24ES_TASK_ID": claim.task_id, "TRI24ES_WORKER_ID": self.id,
            "TRI24ES_ATTEMPT": str(claim.attempt), "TRI24ES_DB": self.options.db_url,
            "TRI24ES_TASK_FILE": str(task_file),
        }
        agent = Agent(command, stdin=text, env=env,
                      log_path=paths.attempt_log(claim.task_id, claim.attempt))
        try:
            self.services.started(claim.task_id, self.id, claim.attempt, agent.pid, agent.pgid)
        except BaseException:
            agent.terminate()
            raise
        return agent

    def _supervise(self, claim: Claim, agent: Agent) -> tuple[Ending, str]:
        """Watch the agent until it ends, renewing the lease, recording spend as its output
        streams, and following control. Returns how it ended and its last output line."""
        parser = UsageParser(Pricer(self.options.fallback_usd_per_mtok))
        last_line = ""
        now = time.monotonic()
        renew_at = now + self.beat_every
        timeout = self.options.task_timeout
        deadline = now + timeout if timeout is not None else float("inf")
        ending: Ending | None = None
        try:
            while ending is None:
                wait = min(SLICE, renew_at - now, deadline - now)
                for line in agent.read(max(wait, 0)):
                    self._spend(claim, parser.feed(line))
                    last_line = line.decode(errors="replace").strip() or last_line
                if agent.exited():
                    ending = Ending.EXITED
                    break
                if self._follow():
                    ending = self._check_task(claim)
                if ending is None and self._over_budget():
                    ending = Ending.BUDGET
                now = time.monotonic()
                if ending is None and now >= renew_at:
                    ending = self._renew(claim)
                    renew_at = now + self.beat_every
                if ending is None and now >= deadline:
                    ending = Ending.TIMEOUT
            if ending is not Ending.EXITED:
                agent.terminate()
        except Stop:
            agent.terminate()
            with contextlib.suppress(StaleAttempt, IllegalTransition):
                self.services.requeue(claim.task_id, ev.RequeueReason.WORKER_STOPPED,
                                      by=self.id, attempt=claim.attempt)
            raise
        finally:
            agent.reap()
            for line in agent.read(0):
                self._spend(claim, parser.feed(line))
                last_line = line.decode(errors="replace").strip() or last_line
            self._spend(claim, parser.finish())
        assert ending is not None
        return ending, last_line

    def _check_task(self, claim: Claim) -> Ending | None:
        """Whether the task was cancelled or taken away from this attempt."""
        row = self.services.task(claim.task_id)
        if row.state == TaskState.CANCELLED:
            return Ending.CANCELLED
        if row.state != TaskState.RUNNING or row.attempt != claim.attempt or row.worker != self.id:
            return Ending.LOST
        return None

    def _renew(self, claim: Claim) -> Ending | None:
        try:
            self.services.renew_lease(claim.task_id, self.id, claim.attempt)
        except StaleAttempt:
            return Ending.LOST
        return None

    def _over_budget(self) -> bool:
        cap = self._attempt_cap
        return cap is not None and self._attempt_spend > cap

    def _spend(self, claim: Claim, usages: Iterable[Usage]) -> None:
        for usage in usages:
            self._attempt_spend += usage.amount
            self.services.record_spend(ev.SpendRecorded(
                amount=usage.amount, model=usage.model, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, task=claim.task_id, worker=self.id,
                source="worker", occurred_at=from_us(now_us()), flagged=usage.flagged,
            ))

    def _fail(self, claim: Claim, error: str, *, retryable: bool = True,
              exit_code: int | None = None) -> None:
        log.info("worker %s: %s failed: %s", self.id, claim.task_id, error)
        with contextlib.suppress(StaleAttempt):
            self.services.fail(claim.task_id, self.id, claim.attempt, error,
                               retryable=retryable, exit_code=exit_code)

    def _state_of(self, task_id: str) -> TaskState:
        return TaskState(self.services.task(task_id).state)


@dataclass(frozen=True)
class LegacyFile:
    """``--legacy-files``: a task's queue file follows the task, as in the TRI-24 scripts:
    ``tasks/queue/...`` -> ``tasks/running/<id>.md`` (with ``<id>.md.lock.d/`` holding
    ``worker_id`` and ``claimed_at``) -> ``tasks/completed/`` or ``tasks/failed/``."""

    source: Path
    running: Path
    lock: Path
    tasks: Path

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
        lock.mkdir(mode=0o700, parents=True, exist_ok=True)  # a dead worker's lock is taken over
        (lock / "worker_id").write_text(worker_id + "\n")
        (lock / "claimed_at").write_text(datetime.now(UTC).isoformat() + "\n")
        os.replace(source, running)
        return cls(source, running, lock, tasks)

    def finish(self, state: TaskState) -> None:
        """Move the file on by the task's state: completed/, failed/ (dead letter or
        cancelled), or back where it was queued (it will run again)."""
        folder = {TaskState.COMPLETED: "completed", TaskState.FAILED: "failed",
                  TaskState.CANCELLED: "failed"}.get(state)
        target = self.source if folder is None else self.tasks / folder / self.running.name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.running, target)
        shutil.rmtree(self.lock, ignore_errors=True)
