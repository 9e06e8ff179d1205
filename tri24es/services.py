"""Command handlers: decide with the machines and the views, append, apply views inline.

Every command is one transaction. It reads the rows it decides on inside that transaction,
appends with the stream version it read as the expected version, and applies the views
before commit. ``WrongExpectedVersion`` (possible where writers do not serialise, e.g. on a
server database) is retried here and nowhere else.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ParamSpec, TypeVar

from eventlog import NO_STREAM, EventStore, Expected, Transaction, WrongExpectedVersion
from eventlog.model import system_clock_us
from tri24es import events as ev
from tri24es.errors import Tri24esError
from tri24es.events import (
    Envelope,
    Event,
    Metadata,
    Priority,
    RequeueReason,
    encode,
    encode_metadata,
)
from tri24es.machines import TaskState, WorkerState, advance_task, advance_worker
from tri24es.projections import (
    QUEUE,
    WORKERS,
    TaskRow,
    WorkerRow,
    apply_inline,
    connection_of,
    install,
    read_killswitch,
)
from tri24es.timeutil import from_us, to_us

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_LEASE_SECONDS = 30.0
CONFLICT_RETRIES = 5


class ServiceError(Tri24esError):
    """A command was refused."""


class NotFound(ServiceError):
    """No such task or worker."""


class StaleAttempt(ServiceError):
    """The attempt no longer holds the task (its lease expired or it was taken away)."""


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    title: str
    priority: Priority = Priority.MEDIUM
    body: str = ""
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    max_retries: int = 3
    max_budget_usd: Decimal | None = None
    command: list[str] | None = None
    source: str | None = None
    body_sha256: str | None = None


@dataclass(frozen=True)
class Claim:
    task_id: str
    attempt: int
    lease_expires_at: datetime
    row: TaskRow


def _gone(row: WorkerRow) -> bool:
    """Stopped, lost or killed: requests to such a worker would reach nobody."""
    return row.state in (WorkerState.STOPPED, WorkerState.LOST, WorkerState.KILLED)


def _submitted(spec: TaskSpec) -> ev.TaskSubmitted:
    return ev.TaskSubmitted(
        task_id=spec.task_id, title=spec.title, priority=spec.priority, body=spec.body,
        body_sha256=spec.body_sha256, shard=spec.shard, model=spec.model, type=spec.type,
        max_retries=spec.max_retries, max_budget_usd=spec.max_budget_usd,
        command=spec.command, source=spec.source,
    )


def retry_on_conflict(fn: Callable[P, T]) -> Callable[P, T]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        for _ in range(CONFLICT_RETRIES - 1):
            try:
                return fn(*args, **kwargs)
            except WrongExpectedVersion:
                continue
        return fn(*args, **kwargs)

    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


class Services:
    def __init__(
        self,
        store: EventStore,
        *,
        actor: str | None = None,
        trace_id: str | None = None,
        clock: Callable[[], int] = system_clock_us,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_us = int(lease_seconds * 1_000_000)
        self.metadata = Metadata(
            actor=actor, trace_id=trace_id, host=socket.gethostname(), pid=os.getpid()
        )
        self._metadata = encode_metadata(self.metadata)  # the same bytes on every event
        install(store)

    # --- plumbing ----------------------------------------------------------------------

    def _append(
        self, conn: sqlite3.Connection, tx: Transaction, stream: str, events: Sequence[Event],
        expected: Expected,
    ) -> list[Envelope]:
        recorded = tx.append(stream, [encode(e, self._metadata) for e in events], expected)
        envelopes = [
            Envelope(r.position, r.stream, r.version, r.event_id, e, r.recorded_at, r.metadata)
            for r, e in zip(recorded, events, strict=True)
        ]
        apply_inline(conn, envelopes)
        return envelopes

    def _task(self, conn: sqlite3.Connection, task_id: str) -> TaskRow:
        row = QUEUE.load_by_id(conn, task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return row

    def _worker(self, conn: sqlite3.Connection, worker_id: str) -> WorkerRow:
        row = WORKERS.load_by_id(conn, worker_id)
        if row is None:
            raise NotFound(f"no worker {worker_id!r}")
        return row

    def _held(self, conn: sqlite3.Connection, task_id: str, worker: str, attempt: int) -> TaskRow:
        row = self._task(conn, task_id)
        if row.state != TaskState.RUNNING or row.worker != worker or row.attempt != attempt:
            raise StaleAttempt(
                f"task {task_id!r} attempt {attempt} is not held by {worker!r} any more "
                f"(it is {row.state}, attempt {row.attempt}, worker {row.worker})"
            )
        return row

    # --- tasks -------------------------------------------------------------------------

    @retry_on_conflict
    def submit(self, spec: TaskSpec) -> tuple[TaskRow, bool]:
        """Submit a task; idempotent by id. Returns the row and whether it was new."""
        event = _submitted(spec)
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            existing = QUEUE.load_by_id(conn, spec.task_id)
            if existing is not None:
                return existing, False
            stream = ev.task_stream(spec.task_id)
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
            stream = ev.task_stream(task_id)
            self._append(conn, tx, stream, [ev.TaskRejected(task_id=task_id, reason=reason,
                                                            source=source)],
                         tx.stream_version(stream))

    # --- reads (a snapshot: no write lock) ----------------------------------------------

    def task(self, task_id: str) -> TaskRow:
        with self.store.snapshot() as tx:
            return self._task(connection_of(tx), task_id)

    def worker(self, worker_id: str) -> WorkerRow:
        with self.store.snapshot() as tx:
            return self._worker(connection_of(tx), worker_id)

    def submitted(self, task_id: str) -> ev.TaskSubmitted:
        """The task as submitted: title, body, command, filters, limits."""
        for recorded in self.store.read_stream(ev.task_stream(task_id)):
            if recorded.type == ev.TaskSubmitted.topic:
                event = ev.decode_event(recorded)
                assert isinstance(event, ev.TaskSubmitted)
                return event
        raise NotFound(f"no task {task_id!r}")

    @retry_on_conflict
    def submit_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Submit many tasks in one transaction (a queue folder scan, a bulk import);
        ids already known are skipped. Returns the ids this call submitted."""
        new: list[str] = []
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            for spec in specs:
                if QUEUE.load_by_id(conn, spec.task_id) is None:
                    stream = ev.task_stream(spec.task_id)
                    self._append(conn, tx, stream, [_submitted(spec)], tx.stream_version(stream))
                    new.append(spec.task_id)
        return new

    @retry_on_conflict
    def claim(self, worker_id: str) -> Claim | None:
        """Take the first claimable task for this worker, or None (DESIGN.md §6)."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if read_killswitch(conn).active:
                return None
            worker = self._worker(conn, worker_id)
            if worker.state != WorkerState.IDLE or worker.pause_requested or worker.stop_requested:
                return None
            row = QUEUE.first_claimable(conn, worker.shard, worker.model, worker.type)
            if row is None:
                return None
            lease = from_us(self.clock() + self.lease_us)
            event = ev.TaskClaimed(
                task_id=row.task_id, worker=worker_id, attempt=row.attempt + 1,
                lease_expires_at=lease,
            )
            claimed = self._append(conn, tx, ev.task_stream(row.task_id), [event], row.version)
            row.state, row.worker, row.attempt = TaskState.RUNNING.value, worker_id, event.attempt
            row.lease_expires_at, row.version = to_us(lease), claimed[-1].version
            return Claim(row.task_id, event.attempt, lease, row)

    @retry_on_conflict
    def started(self, task_id: str, worker: str, attempt: int, pid: int, pgid: int) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            event = ev.TaskStarted(task_id=task_id, worker=worker, attempt=attempt, pid=pid,
                                   pgid=pgid)
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)

    @retry_on_conflict
    def renew_lease(self, task_id: str, worker: str, attempt: int) -> datetime:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            lease = from_us(self.clock() + self.lease_us)
            event = ev.LeaseRenewed(task_id=task_id, worker=worker, attempt=attempt,
                                    lease_expires_at=lease)
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)
            return lease

    @retry_on_conflict
    def complete(
        self, task_id: str, worker: str, attempt: int, exit_code: int = 0, *,
        claim_next: bool = False,
    ) -> Claim | None:
        """Record a successful attempt. With ``claim_next``, also claim the worker's next task
        in the same transaction (one commit per task instead of two); returns that claim."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            event = ev.TaskCompleted(task_id=task_id, worker=worker, attempt=attempt,
                                     exit_code=exit_code)
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)
            return self.claim(worker) if claim_next else None  # joins this transaction

    @retry_on_conflict
    def fail(
        self, task_id: str, worker: str, attempt: int, error: str, *, retryable: bool = True,
        exit_code: int | None = None,
    ) -> TaskState:
        """Record a failed attempt; requeue while attempts remain, else dead-letter."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._held(conn, task_id, worker, attempt)
            events: list[Event] = [ev.TaskFailed(task_id=task_id, worker=worker, attempt=attempt,
                                                 error=error, retryable=retryable,
                                                 exit_code=exit_code)]
            if retryable and row.attempts_left() > 0:
                events.append(ev.TaskRequeued(task_id=task_id, attempt=attempt, worker=worker,
                                              reason=RequeueReason.RETRY))
            else:
                events.append(ev.TaskDeadLettered(task_id=task_id, attempts=attempt,
                                                  error=error, worker=worker))
            self._append(conn, tx, ev.task_stream(task_id), events, row.version)
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
            event = ev.TaskRequeued(task_id=task_id, attempt=row.attempt, reason=reason,
                                    worker=row.worker, by=by)
            self._check_task(row, event)
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)

    @retry_on_conflict
    def cancel(self, task_id: str, *, by: str | None = None, reason: str | None = None) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            event = ev.TaskCancelled(task_id=task_id, worker=row.worker, by=by, reason=reason)
            self._check_task(row, event)
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)

    @retry_on_conflict
    def retry(self, task_id: str, *, by: str | None = None) -> None:
        """Send a dead-lettered (failed) task back to the queue with a fresh retry budget."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._task(conn, task_id)
            event = ev.TaskRequeued(task_id=task_id, attempt=row.attempt,
                                    reason=RequeueReason.MANUAL, by=by)
            if row.state != TaskState.FAILED:
                raise ServiceError(f"task {task_id!r} is {row.state}: only failed tasks retry")
            self._append(conn, tx, ev.task_stream(task_id), [event], row.version)

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
                if row.attempts_left() > 0:
                    events = [ev.TaskRequeued(task_id=row.task_id, attempt=row.attempt,
                                              worker=row.worker,
                                              reason=RequeueReason.LEASE_EXPIRED)]
                else:
                    events = [ev.TaskDeadLettered(task_id=row.task_id, attempts=row.attempt,
                                                  error="lease expired", worker=row.worker)]
                self._append(conn, tx, ev.task_stream(row.task_id), events, row.version)
                expired_tasks.append(row.task_id)
            if silent_after_us is not None:
                for worker in WORKERS.silent_since(conn, now - silent_after_us):
                    event = ev.WorkerLost(worker=worker.worker_id, by=self.metadata.actor,
                                          last_seen=from_us(worker.last_seen))
                    self._append(conn, tx, ev.worker_stream(worker.worker_id), [event],
                                 worker.version)
                    lost_workers.append(worker.worker_id)
        return expired_tasks, lost_workers

    # --- workers -----------------------------------------------------------------------

    @retry_on_conflict
    def start_worker(
        self, worker_id: str, *, pid: int, pid_start_time: int, host: str,
        shard: str | None = None, model: str | None = None, type: str | None = None,
    ) -> None:
        """Register a worker (again, if it had stopped) and mark it ready to claim."""
        started = ev.WorkerStarted(worker=worker_id, pid=pid, pid_start_time=pid_start_time,
                                   host=host, shard=shard, model=model, type=type)
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = WORKERS.load_by_id(conn, worker_id)
            if row is not None:
                advance_worker(WorkerState(row.state), started)  # raises if still live
            self._append(conn, tx, ev.worker_stream(worker_id),
                         [started, ev.WorkerHeartbeat(worker=worker_id)],
                         NO_STREAM if row is None else row.version)

    def _worker_event(self, worker_id: str, make: Callable[[WorkerRow], Event | None]) -> bool:
        """Append the event ``make`` builds from the worker's row (None: nothing to do)."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                with self.store.transaction() as tx:
                    conn = connection_of(tx)
                    row = self._worker(conn, worker_id)
                    event = make(row)
                    if event is None:
                        return False
                    advance_worker(WorkerState(row.state), event)
                    self._append(conn, tx, ev.worker_stream(worker_id), [event], row.version)
                    return True
            except WrongExpectedVersion:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
        return False

    def heartbeat(self, worker_id: str) -> None:
        self._worker_event(worker_id, lambda row: ev.WorkerHeartbeat(worker=worker_id))

    def request_pause(self, worker_id: str, *, by: str | None = None,
                      reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: None if _gone(row) or
                                  row.pause_requested else
                                  ev.WorkerPauseRequested(worker=worker_id, by=by, reason=reason))

    def request_resume(self, worker_id: str, *, by: str | None = None) -> bool:
        return self._worker_event(
            worker_id, lambda row: ev.WorkerResumeRequested(worker=worker_id, by=by)
            if not _gone(row) and (row.pause_requested or row.state == WorkerState.PAUSED)
            else None)

    def request_stop(self, worker_id: str, *, by: str | None = None,
                     reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: None if row.stop_requested else
                                  ev.WorkerStopRequested(worker=worker_id, by=by, reason=reason))

    def paused(self, worker_id: str) -> bool:
        return self._worker_event(worker_id, lambda row: None if row.state == WorkerState.PAUSED
                                  else ev.WorkerPaused(worker=worker_id))

    def resumed(self, worker_id: str) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerResumed(worker=worker_id)
                                  if row.state == WorkerState.PAUSED else None)

    def stopped(self, worker_id: str, reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerStopped(worker=worker_id,
                                                                          reason=reason))

    def mark_lost(self, worker_id: str, *, by: str | None = None) -> bool:
        """Declare a live worker lost (e.g. its process is gone): False if it is gone already."""
        return self._worker_event(worker_id, lambda row: None if _gone(row) else ev.WorkerLost(
            worker=worker_id, by=by, last_seen=from_us(row.last_seen)))

    def signalled(self, worker_id: str, signal: str, pid: int, *, target: str = "worker",
                  by: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerSignalled(
            worker=worker_id, signal=signal, pid=pid, target=target, by=by))

    # --- budget ------------------------------------------------------------------------

    def record_spend(self, spend: ev.SpendRecorded, event_id: str | None = None) -> bool:
        """Record spend; False if ``event_id`` (e.g. derived from a spend.jsonl line) was
        recorded before, so the same spend is never counted twice."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if event_id is not None and tx.events_by_id([event_id]):
                return False
            new = encode(spend, self._metadata, event_id)
            r = tx.append(ev.SPEND_STREAM, [new])[0]
            apply_inline(conn, [Envelope(r.position, r.stream, r.version, r.event_id, spend,
                                         r.recorded_at, r.metadata)])
            return True

    def record_spend_many(self, spends: Sequence[tuple[ev.SpendRecorded, str]]) -> int:
        """Record many spends, each with its event id, in one transaction; ids recorded
        before are skipped. Returns how many were new."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            ids = [eid for _, eid in spends]
            known = {r.event_id for i in range(0, len(ids), 500)  # SQL variable limits
                     for r in tx.events_by_id(ids[i:i + 500])}
            fresh = {eid: spend for spend, eid in spends if eid not in known}
            if not fresh:
                return 0
            recorded = tx.append(ev.SPEND_STREAM, [encode(spend, self._metadata, eid)
                                                   for eid, spend in fresh.items()])
            apply_inline(conn, [Envelope(r.position, r.stream, r.version, r.event_id, spend,
                                         r.recorded_at, r.metadata)
                                for r, spend in zip(recorded, fresh.values(), strict=True)])
            return len(recorded)

    def raise_budget_warning(self, warning: ev.BudgetWarningRaised) -> None:
        with self.store.transaction() as tx:
            tx.append(ev.BUDGET_STREAM, [encode(warning, self._metadata)])

    def activate_killswitch(self, event: ev.KillSwitchActivated) -> bool:
        """Activate the kill switch exactly once however many callers race: False if it
        was already active."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            state = read_killswitch(conn)
            if state.active:
                return False
            version = tx.stream_version(ev.KILL_SWITCH_STREAM)
            self._append(conn, tx, ev.KILL_SWITCH_STREAM, [event], version)
            return True

    def reset_killswitch(self, *, by: str | None, reason: str) -> bool:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if not read_killswitch(conn).active:
                return False
            version = tx.stream_version(ev.KILL_SWITCH_STREAM)
            self._append(conn, tx, ev.KILL_SWITCH_STREAM,
                         [ev.KillSwitchReset(by=by, reason=reason)], version)
            return True

