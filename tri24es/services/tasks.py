"""Task commands: submit, claim, complete, fail, requeue, cancel, retry, leases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from eventlog import Transaction
from tri24es import events as ev
from tri24es.errors import UsageError
from tri24es.events import Event
from tri24es.machines import TaskState, WorkerState
from tri24es.machines.task import advance as advance_task
from tri24es.names import (
    KILL_SWITCH_STREAM,
    MODELS_STREAM,
    RequeueReason,
    task_stream,
    worker_stream,
)
from tri24es.projections import connection_of
from tri24es.projections.queue import BY_ID as QUEUE_BY_ID
from tri24es.projections.queue import CLAIMABLE_FOR_WORKER, QUEUE
from tri24es.projections.sql import Db, Rows, ViewsConnection
from tri24es.projections.tables.killswitch import WITH_LAST_TYPE as KILL_SWITCH
from tri24es.projections.tables.killswitch import read_killswitch
from tri24es.projections.tables.models import model_pauses
from tri24es.projections.tables.money import from_units, to_units
from tri24es.projections.tables.queue import TaskRow
from tri24es.projections.workers import BY_ID as WORKERS_BY_ID
from tri24es.projections.workers import WORKERS
from tri24es.scheduling import retry_wait_us
from tri24es.services.base import (
    AttemptProcess,
    Claim,
    ServiceError,
    StaleAttempt,
    TaskSpec,
    retry_on_conflict,
    submitted_event,
)
from tri24es.services.dependencies import DependencyRules
from tri24es.timeutil import from_us, to_us

#: The error of a task that spent its whole max_budget_usd (over all its attempts).
BUDGET_EXHAUSTED = "budget_exhausted"


class BudgetTooLow(ServiceError, UsageError):
    """A retry would leave the task nothing to spend."""


class NotQueued(ServiceError):
    """Only a queued task can be changed."""


class Outdated(ServiceError):
    """The task changed since the caller read it: read it again and decide anew."""


def _killed(conn: Db, worker_id: str | None) -> bool:
    """Whether the worker was SIGKILLed on purpose (the watchdog's escalation, recorded)."""
    row = None if worker_id is None else WORKERS.load_by_id(conn, worker_id)
    return row is not None and row.state == WorkerState.KILLED


def _budget_spent(row: TaskRow) -> bool:
    left = row.budget_left()
    return left is not None and left <= 0


class TaskCommands(DependencyRules):
    # --- tasks -------------------------------------------------------------------------

    @retry_on_conflict
    def submit(self, spec: TaskSpec) -> tuple[TaskRow, bool]:
        """Submit a task; idempotent by id. Returns the row and whether it was new."""
        event = submitted_event(spec)
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            existing = QUEUE.load_by_id(conn, spec.task_id)
            if existing is not None:
                return existing, False
            self._check_after(conn, [spec])
            stream = task_stream(spec.task_id)
            # 0 unless an earlier file with this id was rejected: then it follows those events.
            self._append(conn, tx, stream, [event], tx.stream_version(stream))
            return self._task(conn, spec.task_id), True

    @retry_on_conflict
    def reject(self, task_id: str, reason: str, source: str | None = None) -> None:
        """Record that a task file was refused (bad input): no task is created."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if QUEUE.load_by_id(conn, task_id) is not None:
                raise ServiceError(f"task {task_id!r} is already submitted: not rejecting it")
            stream = task_stream(task_id)
            self._append(conn, tx, stream, [ev.TaskRejected(task_id=task_id, reason=reason,
                                                            source=source)],
                         tx.stream_version(stream))

    @retry_on_conflict
    def submit_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Submit many tasks in one transaction (a queue folder scan, a bulk import);
        ids already known are skipped. Returns the ids this call submitted."""
        new: list[str] = []
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            fresh = [spec for spec in specs if QUEUE.load_by_id(conn, spec.task_id) is None]
            for spec in self._check_after(conn, fresh):
                if QUEUE.load_by_id(conn, spec.task_id) is None:
                    stream = task_stream(spec.task_id)
                    version = tx.stream_version(stream)
                    self._append(conn, tx, stream, [submitted_event(spec)], version)
                    new.append(spec.task_id)
        return new

    @retry_on_conflict
    def claim(self, worker_id: str, *, with_history: bool = False,
              process: AttemptProcess | None = None) -> Claim | None:
        """Take the first claimable task for this worker, or None (DESIGN.md §6). With
        ``with_history``, the claim carries the task's history, read in the same transaction
        (an idle worker's claim: one transaction fewer before its agent starts; not the claim
        made with a completion, where it would only lengthen the write lock's hold); the
        history is read before ``process`` is recorded. With ``process`` (the keeper the
        attempt will run under, started ahead), its TaskStarted is recorded with the claim:
        before its agent runs, and with no commit of its own beside the agent's start."""
        with self.store.transaction() as tx:
            return self._claim(connection_of(tx), tx, worker_id, with_history=with_history,
                               process=process)

    def _claim(self, conn: ViewsConnection, tx: Transaction, worker_id: str, *,
               with_history: bool = False, process: AttemptProcess | None = None,
               ahead: Rows | None = None) -> Claim | None:
        """``claim`` in the caller's transaction (a completion's: no second transaction
        scope to join). ``ahead``: the rows of the claim query read ahead in it, which wrote
        nothing since that could change them (the caller's word; see ``_read_ahead``)."""
        if read_killswitch(conn).active:
            return None
        worker = self._worker(conn, worker_id)
        if worker.state != WorkerState.IDLE or worker.pause_requested or worker.stop_requested:
            return None
        now = self.clock()
        room = self._room(conn, now)
        row = QUEUE.first_claimable(conn, worker.shard, worker.model, worker.type,
                                    bool(worker.has_exec), now, room, ahead)
        if row is None:
            return None
        reserved = 0 if room is None else row.reservation(room.default_units)
        lease = from_us(self.clock() + self.lease_us)
        event = ev.TaskClaimed(
            task_id=row.task_id, worker=worker_id, attempt=row.attempt + 1,
            lease_expires_at=lease, reserved_usd=from_units(reserved) if reserved else None,
        )
        # The views apply the claim to this same row object (the transaction keeps it).
        self._append_task(conn, tx, row, [event])
        history = self.history(row.task_id) if with_history else None
        if process is not None:
            self._started(conn, tx, row.task_id, worker_id, event.attempt, process)
        return Claim(row.task_id, event.attempt, lease, row, history)

    @retry_on_conflict
    def started(self, task_id: str, worker: str, attempt: int, pid: int, pgid: int,
                pid_start_time: int | None = None, key: str | None = None) -> None:
        """Record the attempt's process: its keeper's pid, group, start time and host, so
        that what is left of it can be found and ended on that host later."""
        with self.store.transaction() as tx:
            self._started(connection_of(tx), tx, task_id, worker, attempt,
                          AttemptProcess(pid, pgid, pid_start_time, key))

    def _started(self, conn: ViewsConnection, tx: Transaction, task_id: str, worker: str,
                 attempt: int, process: AttemptProcess) -> None:
        row = self._held(conn, task_id, worker, attempt)
        event = ev.TaskStarted(task_id=task_id, worker=worker, attempt=attempt, pid=process.pid,
                               pgid=process.pgid, pid_start_time=process.pid_start_time,
                               host=self.metadata.host, key=process.key)
        self._append_task(conn, tx, row, [event])

    @retry_on_conflict
    def renew_lease(self, task_id: str, worker: str, attempt: int) -> datetime:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            lease = from_us(self.clock() + self.lease_us)
            event = ev.LeaseRenewed(task_id=task_id, worker=worker, attempt=attempt,
                                    lease_expires_at=lease)
            self._append_task(conn, tx, row, [event])
            return lease

    @retry_on_conflict
    def complete(
        self, task_id: str, worker: str, attempt: int, exit_code: int = 0, *,
        claim_next: bool = False, review: bool = False,
    ) -> Claim | None:
        """Record a successful attempt (with ``review``: its result now waits for a person's
        approval). With ``claim_next``, also claim the worker's next task in the same
        transaction (one commit per task instead of two); returns that claim."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            ahead = _read_ahead(conn, task_id, worker, self.clock()) if claim_next else None
            row = self._held(conn, task_id, worker, attempt)
            event: Event = (
                ev.TaskAwaitingReview(task_id=task_id, worker=worker, attempt=attempt) if review
                else ev.TaskCompleted(task_id=task_id, worker=worker, attempt=attempt,
                                      exit_code=exit_code))
            self._append_task(conn, tx, row, [event])
            if not review:
                self._completed(tx, row)
            if not claim_next:
                return None
            # The claim query read ahead found what it would find now if the completion
            # changed no queued task's row (it unblocks none).
            return self._claim(conn, tx, worker,
                               ahead=None if review or row.dependants else ahead)

    @retry_on_conflict
    def record_attempt_fact(self, event: ev.TaskResultRecorded | ev.AgentSessionStarted) -> None:
        """Record what the attempt holding the task learned (its workspace's result, its
        agent's session); refused (StaleAttempt) once the attempt no longer holds it."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, event.task_id, event.worker, event.attempt)
            self._append_task(conn, tx, row, [event])

    def approve(self, task_id: str, *, by: str | None, merged_into: str | None = None,
                merge_commit: str | None = None) -> None:
        """Approve a task waiting for review: it is completed."""
        self._review_event(task_id, ev.TaskApproved(task_id=task_id, by=by,
                                                     merged_into=merged_into,
                                                     merge_commit=merge_commit))

    def merge_failed(self, task_id: str, *, by: str | None, reason: str) -> None:
        """Record why an approval's merge did not go through: the task stays in review."""
        self._review_event(task_id, ev.TaskMergeFailed(task_id=task_id, by=by, reason=reason))

    def reject_review(self, task_id: str, *, by: str | None, reason: str) -> None:
        """Send a task waiting for review back to the queue; ``reason`` goes to the next
        attempt's agent. The attempt counts as a failed one (it uses a retry)."""
        self._review_event(task_id, lambda row: ev.TaskReviewRejected(
            task_id=task_id, attempt=row.attempt, by=by, reason=reason))

    @retry_on_conflict
    def _review_event(self, task_id: str,
                      event: Event | Callable[[TaskRow], Event]) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            if row.state != TaskState.REVIEW:
                raise ServiceError(f"task {task_id!r} is {row.state}, not waiting for review")
            made = event(row) if callable(event) else event
            self._append_task(conn, tx, row, [made])
            if isinstance(made, ev.TaskApproved):
                self._completed(tx, row)

    @retry_on_conflict
    def fail(
        self, task_id: str, worker: str, attempt: int, error: str, *, retryable: bool = True,
        exit_code: int | None = None, no_progress: ev.NoProgressEvidence | None = None,
    ) -> TaskState:
        """Record a failed attempt; requeue while attempts remain, else dead-letter."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            events: list[Event] = [ev.TaskFailed(task_id=task_id, worker=worker, attempt=attempt,
                                                 error=error, retryable=retryable,
                                                 exit_code=exit_code, no_progress=no_progress)]
            if _budget_spent(row):
                error = BUDGET_EXHAUSTED
                events.append(ev.TaskDeadLettered(task_id=task_id, attempts=attempt,
                                                  error=error, worker=worker))
            elif retryable and row.attempts_left() > 0:
                events.append(ev.TaskRequeued(task_id=task_id, attempt=attempt, worker=worker,
                                              reason=RequeueReason.RETRY,
                                              not_before=self._retry_after(row)))
            else:
                events.append(ev.TaskDeadLettered(task_id=task_id, attempts=attempt,
                                                  error=error, worker=worker))
            self._append_task(conn, tx, row, events)
            return TaskState(self._task(conn, task_id).state)

    @retry_on_conflict
    def requeue(self, task_id: str, reason: RequeueReason, *, by: str | None = None,
                attempt: int | None = None) -> None:
        """Put a running task back in the queue (worker stopped, manual)."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            if attempt is not None and row.attempt != attempt:
                raise StaleAttempt(f"task {task_id!r} is at attempt {row.attempt}, not {attempt}")
            event: Event = ev.TaskRequeued(task_id=task_id, attempt=row.attempt, reason=reason,
                                           worker=row.worker, by=by)
            if _budget_spent(row):  # it may not run again: the end of it, not a requeue
                event = ev.TaskDeadLettered(task_id=task_id, attempts=row.attempt,
                                            error=BUDGET_EXHAUSTED, worker=row.worker)
            self._check_task(row, event)
            self._append_task(conn, tx, row, [event])

    @retry_on_conflict
    def usage_limited(self, task_id: str, worker: str, attempt: int, *, model: str | None,
                      until: datetime, reason: str) -> bool:
        """The attempt's agent reported its provider's usage limit. In one transaction:
        ``model`` is paused until ``until`` (fleet-wide: every claim of it waits, and its
        other running attempts stop; claims resume by themselves then) and the task goes back
        to the queue at no retry cost (``usage_limit``). A pause already in place that lasts
        as long or longer (a person's, or another worker's) is kept, never shortened.
        Without a model to pause, the task itself waits until ``until``. An attempt that no
        longer holds the task (its lease ran out meanwhile) still pauses the model: the limit
        is the provider's, whoever runs the task next. Whether a pause was recorded."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            try:
                row: TaskRow | None = self._held(conn, task_id, worker, attempt)
            except StaleAttempt:
                row = None
            paused = False
            if model is not None:
                end = to_us(until)
                if not any(p.model == model and (p.until is None or p.until >= end)
                           for p in model_pauses(conn)):
                    self._append(conn, tx, MODELS_STREAM, [ev.ModelPaused(
                        model=model, until=until, by=worker, reason=reason)],
                        tx.stream_version(MODELS_STREAM))
                    paused = True
            if row is not None:
                event: Event = ev.TaskRequeued(
                    task_id=task_id, attempt=attempt, reason=RequeueReason.USAGE_LIMIT,
                    worker=worker, by=worker, not_before=None if model is not None else until)
                if _budget_spent(row):  # it may not run again: the end of it, not a requeue
                    event = ev.TaskDeadLettered(task_id=task_id, attempts=attempt,
                                                error=BUDGET_EXHAUSTED, worker=worker)
                self._check_task(row, event)
                self._append_task(conn, tx, row, [event])
            return paused

    @retry_on_conflict
    def cancel(self, task_id: str, *, by: str | None = None, reason: str | None = None) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            event = ev.TaskCancelled(task_id=task_id, worker=row.worker, by=by, reason=reason)
            self._check_task(row, event)
            self._append_task(conn, tx, row, [event])

    @retry_on_conflict
    def retry(self, task_id: str, *, by: str | None = None,
              budget_usd: Decimal | None = None) -> None:
        """Send a dead-lettered (failed) task back to the queue with a fresh retry budget;
        ``budget_usd`` raises its spend cap (over all attempts, spent ones included)."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            if row.state != TaskState.FAILED:
                raise ServiceError(f"task {task_id!r} is {row.state}: only failed tasks retry")
            if budget_usd is not None and to_units(budget_usd) <= row.spent_units:
                raise BudgetTooLow(
                    f"task {task_id!r} has spent ${from_units(row.spent_units)}: a budget of "
                    f"${budget_usd} leaves nothing to spend")
            if budget_usd is None and _budget_spent(row):
                raise BudgetTooLow(
                    f"task {task_id!r} has spent its whole budget "
                    f"(${from_units(row.spent_units)} of ${from_units(row.budget_units or 0)}): "
                    "retry it with --budget USD, a higher cap")
            event = ev.TaskRequeued(task_id=task_id, attempt=row.attempt,
                                    reason=RequeueReason.MANUAL, by=by, budget_usd=budget_usd)
            self._append_task(conn, tx, row, [event])

    def _retry_after(self, row: TaskRow) -> datetime | None:
        """When a task whose attempt failed may run again: its backoff (its own, else the
        fleet's) for the failures in a row that counted, drawn now and recorded in the
        event, so that a replay gives the same time. None: at once."""
        wait = retry_wait_us(row.backoff() or self.retry_backoff, row.attempt - row.retries_from,
                             self.rng)
        return from_us(self.clock() + wait) if wait > 0 else None

    @retry_on_conflict
    def update(self, event: ev.TaskUpdated, *, version: int | None = None) -> TaskRow:
        """Change a queued task (priority, title, filters, retries, budget, its time; from an
        edited queue file, its text and what the file says). With ``version``, only if the
        task's stream is still at that version: a change computed from what was read then
        (a queue watcher's) is refused with ``Outdated`` if anything happened since."""
        if (event.command is None) != (event.agent is None):
            raise ServiceError("a task's command and agent are changed together")
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, event.task_id)
            if row.state != TaskState.QUEUED:
                raise NotQueued(f"task {event.task_id!r} is {row.state}: only a queued task "
                                "can be changed")
            if version is not None and row.version != version:
                raise Outdated(f"task {event.task_id!r} changed meanwhile (version "
                               f"{row.version}, not {version})")
            budget = event.max_budget_usd
            if budget is not None and to_units(budget) <= row.spent_units:
                raise BudgetTooLow(
                    f"task {event.task_id!r} has spent ${from_units(row.spent_units)}: a budget "
                    f"of ${event.max_budget_usd} leaves nothing to spend")
            self._append_task(conn, tx, row, [event])
            return self._task(conn, event.task_id)

    @staticmethod
    def _check_task(row: TaskRow, event: Event) -> None:
        advance_task(TaskState(row.state), event)  # raises IllegalTransition

    def expire_leases(self, *, silent_after_us: int | None = None) -> tuple[list[str], list[str]]:
        """Requeue (or dead-letter) running tasks whose lease ran out, and mark workers that
        stayed silent longer than ``silent_after_us`` as lost. Returns (tasks, workers)."""
        now = self.clock()
        expired_tasks, lost_workers = [], []
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            for row in QUEUE.leases_expired_before(conn, now):
                events: list[Event]
                if _budget_spent(row):
                    events = [ev.TaskDeadLettered(task_id=row.task_id, attempts=row.attempt,
                                                  error=BUDGET_EXHAUSTED, worker=row.worker)]
                elif _killed(conn, row.worker):  # stopped by force, not the task's doing
                    events = [ev.TaskRequeued(task_id=row.task_id, attempt=row.attempt,
                                              worker=row.worker,
                                              reason=RequeueReason.WORKER_STOPPED)]
                elif row.attempts_left() > 0:
                    events = [ev.TaskRequeued(task_id=row.task_id, attempt=row.attempt,
                                              worker=row.worker,
                                              reason=RequeueReason.LEASE_EXPIRED,
                                              not_before=self._retry_after(row))]
                else:
                    events = [ev.TaskDeadLettered(task_id=row.task_id, attempts=row.attempt,
                                                  error="lease expired", worker=row.worker)]
                self._append_task(conn, tx, row, events)
                expired_tasks.append(row.task_id)
            if silent_after_us is not None:
                for worker in WORKERS.silent_since(conn, now - silent_after_us):
                    event = ev.WorkerLost(worker=worker.worker_id, by=self.metadata.actor,
                                          last_seen=from_us(worker.last_seen))
                    self._append(conn, tx, worker_stream(worker.worker_id), [event],
                                 worker.version)
                    lost_workers.append(worker.worker_id)
        return expired_tasks, lost_workers


def _read_ahead(conn: ViewsConnection, task_id: str, worker: str, now: int) -> Rows | None:
    """The rows a completion that claims the next task will read: the task, the worker (its
    view applies the completion, the claim checks it), the kill switch and the claim's
    query (the claim). On PostgreSQL they go in one round trip, the transaction's first,
    instead of four, all under the write lock; no write of the transaction touches the
    worker's or the switch's row before they are used, so they are what the reads would
    have found. Nothing is read twice: each is kept (``kept``) for the transaction, and the
    claim query's rows are returned (for the claim, if the completion changed no queued
    task). SQLite reads without round trips: nothing ahead."""
    found = conn.read_together([(QUEUE_BY_ID, (task_id,)), (WORKERS_BY_ID, (worker,)),
                                (KILL_SWITCH, (KILL_SWITCH_STREAM,)),
                                (CLAIMABLE_FOR_WORKER, (worker, worker, worker, worker, now))])
    if found is None:
        return None
    QUEUE.load_by_id(conn, task_id, found[0])
    WORKERS.load_by_id(conn, worker, found[1])
    read_killswitch(conn, found[2])
    return found[3]
