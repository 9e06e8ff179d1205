"""The worker table: state, process identity, filters, current task, last seen, requests."""

from __future__ import annotations

import operator
from dataclasses import fields

from tri24es.events import (
    Envelope,
    LeaseRenewed,
    TaskAwaitingReview,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskDeadLettered,
    TaskRequeued,
    TaskStarted,
    WorkerHeartbeat,
    WorkerLost,
    WorkerPaused,
    WorkerPauseRequested,
    WorkerResumed,
    WorkerResumeRequested,
    WorkerSignalled,
    WorkerStarted,
    WorkerStopped,
    WorkerStopRequested,
)
from tri24es.machines import ENDED_WORKER_STATES, WorkerState
from tri24es.machines.worker import WORKER
from tri24es.machines.worker import advance as advance_worker
from tri24es.projections.base import Projection, Row, fixed_moves
from tri24es.projections.sql import Db, Rows, held, keep, kept
from tri24es.projections.tables.workers import COLUMNS, WorkerRow

DDL = """
CREATE TABLE IF NOT EXISTS workers (
    worker_id        TEXT PRIMARY KEY,
    state            TEXT    NOT NULL,
    pid              INTEGER NOT NULL,
    pid_start_time   INTEGER NOT NULL,
    host             TEXT    NOT NULL,
    shard            TEXT,
    model            TEXT,
    type             TEXT,
    current_task     TEXT,
    current_attempt  INTEGER,
    pause_requested  INTEGER NOT NULL,  -- a pause was asked for and not yet undone
    stop_requested   INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,  -- microseconds since the epoch
    last_seen        INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    has_exec         INTEGER NOT NULL   -- 0: runs only tasks that carry their own command
) WITHOUT ROWID;
"""

#: One row, by id (the statement ``load_by_id`` runs, or was handed the rows of).
BY_ID = f"SELECT {COLUMNS} FROM workers WHERE worker_id = ?"

SAVE = (
    f"INSERT INTO workers ({COLUMNS}) VALUES ({','.join('?' * 16)})"
    " ON CONFLICT (worker_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS.split(", ")[1:])
)

TASK_ENDS = (TaskCompleted, TaskRequeued, TaskDeadLettered, TaskCancelled, TaskAwaitingReview)
TASK_PROGRESS = (TaskStarted, LeaseRenewed)
# Events only the worker itself appends: each one updates its last_seen. (Requests from
# others, a requeue by the lease expirer, or being declared lost are not signs of life.)
SIGNS_OF_LIFE = frozenset({
    WorkerStarted, WorkerHeartbeat, WorkerPaused, WorkerResumed, WorkerStopped, TaskClaimed,
    TaskStarted, LeaseRenewed, TaskCompleted,
})




# attrgetter: much cheaper than dataclasses.astuple, which deep-copies every field.
_as_tuple = operator.attrgetter(*(f.name for f in fields(WorkerRow)))


WorkersView = dict[str, WorkerRow]
WORKER_STATES = {state.value: state for state in WorkerState}  # cheaper than WorkerState(v)
_ENDED = ", ".join(f"'{state.value}'" for state in sorted(ENDED_WORKER_STATES))


def _worker_id(envelope: Envelope) -> str | None:
    """The worker an event is about: its own stream's, or the holder named by a task event."""
    event = envelope.event
    if envelope.stream.startswith("worker-"):
        return getattr(event, "worker", None)
    if type(event) in _NAME_THEIR_WORKER:
        return event.worker  # type: ignore[attr-defined, no-any-return]
    return None


# Exact types, tested with `in`: this runs a million times in a replay.
_NAME_THEIR_WORKER = frozenset({TaskClaimed, *TASK_ENDS, *TASK_PROGRESS})
_ABOUT_HELD_TASK = frozenset({*TASK_ENDS, *TASK_PROGRESS})
_ENDS = frozenset(TASK_ENDS)


class WorkersProjection(Projection[WorkersView]):
    name = "workers"
    ddl = DDL
    tables = ("workers",)
    handles = frozenset({
        TaskClaimed, *TASK_ENDS, *TASK_PROGRESS, WorkerStarted, WorkerHeartbeat,
        WorkerPauseRequested, WorkerPaused, WorkerResumeRequested, WorkerResumed,
        WorkerStopRequested, WorkerStopped, WorkerSignalled, WorkerLost,
    })

    def new_view(self) -> WorkersView:
        return {}

    def apply(self, view: WorkersView, envelope: Envelope) -> None:
        worker_id = _worker_id(envelope)
        if worker_id is None:
            return
        event = envelope.event
        kind = type(event)
        row = view.get(worker_id)
        if kind is WorkerStarted:
            assert isinstance(event, WorkerStarted)
            if row is not None:  # a restart: legal only from a terminal state
                advance_worker(WORKER_STATES[row.state], event)
            view[worker_id] = WorkerRow(
                worker_id, WorkerState.STARTING.value, event.pid, event.pid_start_time,
                event.host, event.shard, event.model, event.type,
                started_at=envelope.recorded_at, last_seen=envelope.recorded_at,
                version=envelope.version, has_exec=event.has_exec,
            )
            return
        if row is None:
            return
        if kind in _ABOUT_HELD_TASK and row.current_task != event.task_id:  # type: ignore[attr-defined]
            return  # about a task this worker no longer holds
        state = _MOVES.get((row.state, kind))
        if state is None:  # decided by the event's fields, or refused (advance_worker raises)
            state = str(advance_worker(WORKER_STATES[row.state], event))
        if kind is WorkerResumed and row.current_task is not None:
            # Paused mid-task and resumed before the task ended: it is busy with it again.
            state = str(WORKER.fire(WorkerState.IDLE, "take_task"))
        row.state = state
        if envelope.stream.startswith("worker-"):
            row.version = envelope.version
        if kind in SIGNS_OF_LIFE:
            row.last_seen = envelope.recorded_at
        if kind is TaskClaimed:
            assert isinstance(event, TaskClaimed)
            row.current_task, row.current_attempt = event.task_id, event.attempt
        elif kind in _ENDS:
            row.current_task = row.current_attempt = None
        elif kind is WorkerPauseRequested or kind is WorkerPaused:
            row.pause_requested = True  # should be paused: by request or by signal alike
        elif kind is WorkerResumeRequested or kind is WorkerResumed:
            row.pause_requested = False
        elif kind is WorkerStopRequested:
            row.stop_requested = True

    def load(self, conn: Db, envelope: Envelope) -> WorkersView | None:
        worker_id = _worker_id(envelope)
        if worker_id is None:
            return None
        row = self.load_by_id(conn, worker_id)
        return {} if row is None else {worker_id: row}

    def save(self, conn: Db, view: WorkersView) -> None:
        # Held back to the commit (or a statement on the table): a worker that completes a
        # task and claims the next in one transaction is written once, as it ends up.
        rows = held(conn, "workers", _write_rows)
        if rows is None:
            _write_rows(conn, view)
        else:
            rows.update(view)
        for worker_id, row in view.items():
            keep(conn, "workers", worker_id, row, saved=True)

    def load_by_id(self, conn: Db, worker_id: str,
                   found: Rows | None = None) -> WorkerRow | None:
        """The worker's row (``found``: what ``BY_ID`` returned, read ahead with others)."""
        row: WorkerRow | None = kept(conn, "workers", worker_id)
        if row is None:
            if found is None:
                found = conn.execute(BY_ID, (worker_id,))
            values = found.fetchone()
            row = None if values is None else keep(conn, "workers", worker_id, WorkerRow(*values))
        return row

    def silent_since(self, conn: Db, before_us: int) -> list[WorkerRow]:
        """Live (or stopping) workers not seen since ``before_us``."""
        found = conn.execute(
            f"SELECT {COLUMNS} FROM workers WHERE last_seen < ? AND state NOT IN"
            f" ({_ENDED}) ORDER BY worker_id",
            (before_us,),
        )
        return [WorkerRow(*r) for r in found]

    def rows(self, view: WorkersView) -> dict[str, list[Row]]:
        return {"workers": sorted(_stored(w) for w in view.values())}


def _stored(worker: WorkerRow) -> Row:
    row = _as_tuple(worker)
    return (*row[:10], int(worker.pause_requested), int(worker.stop_requested), *row[12:15],
            int(worker.has_exec))


def _write_rows(conn: Db, rows: dict[str, WorkerRow]) -> None:
    conn.executemany(SAVE, [_stored(w) for w in rows.values()])


# A WorkerSignalled moves the worker by its signal: the machine decides that one.
_MOVES = fixed_moves(
    WorkerState, WorkersProjection.handles, advance_worker,
    lambda state, kind: kind is WorkerSignalled,
)
WORKERS = WorkersProjection()
