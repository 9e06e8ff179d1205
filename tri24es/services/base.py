"""What every command shares: errors, task specs, claims, and the append-and-apply plumbing."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from eventlog import EventStore, Expected, Transaction, WrongExpectedVersion
from eventlog.model import system_clock_us
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.errors import Tri24esError
from tri24es.events import Envelope, Event, Metadata, encode, encode_metadata
from tri24es.machines import ENDED_WORKER_STATES, TaskState
from tri24es.names import Priority, RetryFrom, task_stream
from tri24es.procinfo import host_id
from tri24es.projections import connection_of, reads
from tri24es.projections.queue import QUEUE, Room
from tri24es.projections.sql import Db, ViewsConnection
from tri24es.projections.tables.killswitch import KillSwitchView, read_killswitch
from tri24es.projections.tables.models import model_pauses, next_pause_end
from tri24es.projections.tables.money import to_units
from tri24es.projections.tables.queue import TaskRow
from tri24es.projections.tables.workers import WorkerRow
from tri24es.projections.upkeep import apply_inline, install
from tri24es.projections.workers import WORKERS
from tri24es.scheduling import Estimate

P = ParamSpec("P")


def _left(today: tuple[int, int, int]) -> int:
    limit, spent, reserved = today
    return limit - spent - reserved


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
    agent: str | None = None
    base: str | None = None
    review: bool = False
    require_changes: bool = False
    resume: bool = False
    retry_from: RetryFrom = RetryFrom.BRANCH
    not_before: datetime | None = None
    retry_backoff: ev.Backoff | None = None
    after: tuple[str, ...] = ()  # tasks that must complete first
    no_progress: ev.NoProgress | None = None  # None: the fleet's rule


@dataclass(frozen=True)
class TaskHistory:
    submitted: ev.TaskSubmitted
    started: list[ev.TaskStarted]  # each attempt's process, oldest first
    results: list[ev.TaskResultRecorded] = field(default_factory=list)
    sessions: list[ev.AgentSessionStarted] = field(default_factory=list)
    feedback: list[ev.TaskReviewRejected] = field(default_factory=list)  # reviewers' words


@dataclass(frozen=True)
class AttemptProcess:
    """The process an attempt runs under (its keeper), as TaskStarted records it: found
    and ended on its host by whoever takes the task next, should it outlive its worker."""

    pid: int
    pgid: int
    pid_start_time: int | None = None
    key: str | None = None  # TRI24ES_ATTEMPT_KEY, in the environment of its every process


@dataclass(frozen=True)
class Claim:
    task_id: str
    attempt: int
    lease_expires_at: datetime
    row: TaskRow
    history: TaskHistory | None = None  # read with the claim when asked (``with_history``)


def is_gone(row: WorkerRow) -> bool:
    """Stopped, lost or killed: requests to such a worker would reach nobody."""
    return row.state in ENDED_WORKER_STATES


#: Doorbells (``Transaction.ring``): a worker sleeps until one of its bells rings, not on
#: every commit. WORK: a task may have become claimable; KILL_SWITCH: the switch changed.
WORK = "work"
KILL_SWITCH = "killswitch"
MODELS = "models"  # a model was paused: running attempts of it stop


def worker_bell(worker_id: str) -> str:
    """Rung by a request to the worker (pause, resume, stop) or news of it (lost)."""
    return f"worker:{worker_id}"


def task_bell(task_id: str) -> str:
    """Rung when the task leaves its current attempt's hands (cancelled, requeued, dead)."""
    return f"task:{task_id}"


_WORKER_NEWS = (ev.WorkerPauseRequested, ev.WorkerResumeRequested, ev.WorkerStopRequested,
                ev.WorkerLost, ev.WorkerSignalled)
_TASK_TAKEN = (ev.TaskCancelled, ev.TaskDeadLettered)
#: What a worker's own turn appends: these ring nothing, and are looked at no further.
_SILENT = frozenset({ev.TaskClaimed, ev.TaskCompleted, ev.LeaseRenewed, ev.TaskStarted,
                     ev.WorkerHeartbeat, ev.SpendRecorded, ev.TaskFailed})


def bells_for(events: Sequence[Event]) -> set[str]:
    """The doorbells that ``events`` ring once committed (none for spend, heartbeats, lease
    renewals, claims and completions: the commits most of a busy log is made of)."""
    bells: set[str] = set()
    for event in events:
        if type(event) in _SILENT:
            continue
        if isinstance(event, ev.TaskSubmitted | ev.TaskUpdated):
            bells.add(WORK)  # a task may have become claimable (or claimable by others)
        elif isinstance(event, ev.TaskRequeued | ev.TaskReviewRejected):
            bells.update((WORK, task_bell(event.task_id)))
        elif isinstance(event, _TASK_TAKEN):
            bells.add(task_bell(event.task_id))
        elif isinstance(event, _WORKER_NEWS):
            bells.add(worker_bell(event.worker))
        elif isinstance(event, ev.KillSwitchActivated):
            bells.add(KILL_SWITCH)
        elif isinstance(event, ev.KillSwitchReset):
            bells.update((KILL_SWITCH, WORK))
        elif isinstance(event, ev.ModelPaused):
            bells.add(MODELS)
        elif isinstance(event, ev.LimitSet | ev.LimitRemoved | ev.ModelResumed
                        | ev.BudgetWatchdogStarted):
            # A cap raised or removed, or a watchdog's daily limit (claims reserve from
            # it): tasks held by it may be claimed.
            bells.add(WORK)
    return bells


def submitted_event(spec: TaskSpec) -> ev.TaskSubmitted:
    # An empty shard, model or type is none, as in `tasks update` ('' for any): kept as '',
    # it matched no worker (`submit --model ''` was never claimed).
    return ev.TaskSubmitted(
        task_id=spec.task_id, title=spec.title, priority=spec.priority, body=spec.body,
        body_sha256=spec.body_sha256, shard=spec.shard or None, model=spec.model or None,
        type=spec.type or None,
        max_retries=spec.max_retries, max_budget_usd=spec.max_budget_usd,
        command=spec.command, source=spec.source, agent=spec.agent, base=spec.base,
        review=spec.review, require_changes=spec.require_changes, resume=spec.resume,
        retry_from=spec.retry_from, not_before=spec.not_before,
        retry_backoff=spec.retry_backoff, after=spec.after, no_progress=spec.no_progress,
    )


#: The TaskUpdated fields that replace the task's own; an empty value clears these.
_CLEARED_BY_EMPTY = ("shard", "model", "type", "agent", "base", "command")
_UPDATABLE = ("priority", "title", "body", "body_sha256", "source", "max_retries",
              "max_budget_usd", "not_before", "review", "require_changes", "resume",
              "retry_from", "no_progress", "retry_backoff", *_CLEARED_BY_EMPTY)


def updated_task(task: ev.TaskSubmitted, change: ev.TaskUpdated) -> ev.TaskSubmitted:
    """``task`` with ``change`` applied, as the queue view applies it to the task's row."""
    values: dict[str, Any] = {}
    for name in _UPDATABLE:
        value = getattr(change, name)
        if value is not None:
            values[name] = (value or None) if name in _CLEARED_BY_EMPTY else value
    return task.model_copy(update=values) if values else task


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


class ServiceBase:
    """The store, the clock, the metadata, and the plumbing every command uses."""

    def __init__(
        self,
        store: EventStore,
        *,
        actor: str | None = None,
        trace_id: str | None = None,
        clock: Callable[[], int] = system_clock_us,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retry_backoff: ev.Backoff = ev.NO_BACKOFF,
        rng: random.Random | None = None,
        budget: BudgetLimits | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_us = int(lease_seconds * 1_000_000)
        self.retry_backoff = retry_backoff  # a task's own retry_backoff wins
        self.rng = rng or random.Random()  # draws the jitter of retry backoffs
        # Claims reserve from today's daily limit (the last watchdog's, else this one's);
        # None: no reservation is checked or recorded (a library user that set no limit).
        self.budget = budget
        self.metadata = Metadata(
            actor=actor, trace_id=trace_id, host=host_id(), pid=os.getpid()
        )
        self._metadata = encode_metadata(self.metadata)  # the same bytes on every event
        install(store)

    # --- plumbing ----------------------------------------------------------------------

    def _append(
        self, conn: ViewsConnection, tx: Transaction, stream: str, events: Sequence[Event],
        expected: Expected, origin: int | None = None,
    ) -> list[Envelope]:
        new = [encode(e, self._metadata) for e in events]  # ids made now: none is stored
        recorded = (tx.append_fresh(stream, new, expected, origin) if isinstance(expected, int)
                    else tx.append(stream, new, expected, origin))
        bells = bells_for(events)
        if bells:
            tx.ring(bells)
        envelopes = [
            Envelope(r.position, r.stream, r.version, r.event_id, e, r.recorded_at, r.metadata)
            for r, e in zip(recorded, events, strict=True)
        ]
        apply_inline(conn, envelopes)
        reacts = self._reacts_to
        for event in events:
            if type(event) in reacts:
                self._react(conn, tx, event)
        return envelopes

    def _append_task(self, conn: ViewsConnection, tx: Transaction, row: TaskRow,
                     events: Sequence[Event]) -> list[Envelope]:
        """Append to the task's stream at the version its row says. Its submission's
        position is (unless the stream began with a rejection) the stream's origin: the
        store reaches the stream by it, in the order tasks were submitted, not by name."""
        return self._append(conn, tx, task_stream(row.task_id), events, row.version,
                            row.submitted_position)

    #: Event types whose appending calls ``_react`` (in the same transaction, after the views
    #: applied them): the dependency rules' hook. Claims and completions are not among them.
    _reacts_to: frozenset[type[Event]] = frozenset()

    def _react(self, conn: ViewsConnection, tx: Transaction, event: Event) -> None:
        """What follows from ``event`` in the same transaction (see ``_reacts_to``)."""

    def _task(self, conn: Db, task_id: str) -> TaskRow:
        row = QUEUE.load_by_id(conn, task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return row

    def _worker(self, conn: Db, worker_id: str) -> WorkerRow:
        row = WORKERS.load_by_id(conn, worker_id)
        if row is None:
            raise NotFound(f"no worker {worker_id!r}")
        return row

    def _held(self, conn: Db, task_id: str, worker: str, attempt: int) -> TaskRow:
        row = self._task(conn, task_id)
        if row.state != TaskState.RUNNING or row.worker != worker or row.attempt != attempt:
            raise StaleAttempt(
                f"task {task_id!r} attempt {attempt} is not held by {worker!r} any more "
                f"(it is {row.state}, attempt {row.attempt}, worker {row.worker})"
            )
        return row

    # --- reads (a snapshot: no write lock) ----------------------------------------------

    def task(self, task_id: str) -> TaskRow:
        with self.store.snapshot() as tx:
            return self._task(connection_of(tx), task_id)

    def estimate(self, type_: str | None, model: str | None) -> Estimate | None:
        """What completed tasks of this type and model cost and took (None: too few)."""
        with self.store.snapshot() as tx:
            return reads.estimate(connection_of(tx), type_, model)

    def worker(self, worker_id: str) -> WorkerRow:
        with self.store.snapshot() as tx:
            return self._worker(connection_of(tx), worker_id)

    def claimable(self, worker_id: str) -> bool:
        """Whether ``claim`` would find a task for this worker now: a read that takes no
        write lock, so that idle workers woken by new work do not queue on the lock for
        nothing (the claim decides again, under the lock)."""
        with self.store.snapshot() as tx:
            conn = connection_of(tx)
            if read_killswitch(conn).active:
                return False
            worker = WORKERS.load_by_id(conn, worker_id)
            now = self.clock()
            return worker is not None and QUEUE.first_claimable(
                conn, worker.shard, worker.model, worker.type, bool(worker.has_exec),
                now, self._room(conn, now),
            ) is not None

    def _room(self, conn: Db, now: int) -> Room | None:
        """What a claim now may reserve of today's budget (None: reservations are off)."""
        budget = self.budget
        if budget is None:
            return None
        return Room(to_units(budget.default_reservation),
                    lambda: _left(reads.today_units(conn, budget, now)))

    def model_paused(self, model: str | None) -> bool:
        """Whether ``model`` is paused now (``tri24es models pause``)."""
        if model is None:
            return False
        now = self.clock()
        with self.store.snapshot() as tx:
            return any(p.model == model and (p.until is None or p.until > now)
                       for p in model_pauses(connection_of(tx)))

    def next_due(self) -> int | None:
        """When the next queued task that waits for a time (a delay, a retry's backoff, a
        model's pause) may be claimed, in microseconds: an idle worker wakes then, since no
        bell rings for it."""
        now = self.clock()
        with self.store.snapshot() as tx:
            conn = connection_of(tx)
            due = [t for t in (QUEUE.next_due(conn, now), next_pause_end(conn, now))
                   if t is not None]
        return min(due, default=None)

    def control(self, worker_id: str) -> tuple[WorkerRow, KillSwitchView]:
        """What steers a worker, read in one snapshot: its row (requests, state) and the
        kill switch."""
        with self.store.snapshot() as tx:
            conn = connection_of(tx)
            return self._worker(conn, worker_id), read_killswitch(conn)

    def submitted(self, task_id: str) -> ev.TaskSubmitted:
        """The task as submitted and changed since: title, body, command, filters, limits."""
        return self.history(task_id).submitted

    def history(self, task_id: str) -> TaskHistory:
        """The task as submitted (with every TaskUpdated applied: a worker runs the task as
        it is now, an edited queue file's new text included), and where each attempt of it
        ran (from its stream)."""
        submitted, history = None, TaskHistory(ev.TaskSubmitted(task_id=task_id, title=""), [])
        kept: dict[str, list[Any]] = {
            ev.TaskStarted.topic: history.started, ev.TaskResultRecorded.topic: history.results,
            ev.AgentSessionStarted.topic: history.sessions,
            ev.TaskReviewRejected.topic: history.feedback,
        }
        for recorded in self.store.read_stream(task_stream(task_id)):
            if recorded.type == ev.TaskSubmitted.topic and submitted is None:
                event = ev.decode_event(recorded)
                assert isinstance(event, ev.TaskSubmitted)
                submitted = event
            elif recorded.type == ev.TaskUpdated.topic and submitted is not None:
                change = ev.decode_event(recorded)
                assert isinstance(change, ev.TaskUpdated)
                submitted = updated_task(submitted, change)
            elif recorded.type in kept:
                kept[recorded.type].append(ev.decode_event(recorded))
        if submitted is None:
            raise NotFound(f"no task {task_id!r}")
        return replace(history, submitted=submitted)

