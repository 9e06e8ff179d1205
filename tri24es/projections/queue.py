"""The queue: one row per task with its state, priority, filters, holder and lease."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields

from tri24es.events import (
    AgentSessionStarted,
    Backoff,
    Envelope,
    LeaseRenewed,
    SpendRecorded,
    TaskApproved,
    TaskAwaitingReview,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskDeadLettered,
    TaskFailed,
    TaskMergeFailed,
    TaskRequeued,
    TaskResultRecorded,
    TaskReviewRejected,
    TaskStarted,
    TaskSubmitted,
    TaskUnblocked,
    TaskUpdated,
)
from tri24es.machines import TaskState
from tri24es.machines.task import advance as advance_task
from tri24es.names import STOP_REASONS, Priority
from tri24es.projections.base import Projection, Row, fixed_moves
from tri24es.projections.limits import FULL_LIMITS, UNDER_LIMITS
from tri24es.projections.sql import Db, Rows, held, keep, kept
from tri24es.projections.tables.models import NOT_PAUSED
from tri24es.projections.tables.money import to_units
from tri24es.projections.tables.queue import COLUMNS, RESERVATION, TaskRow
from tri24es.timeutil import to_us

#: One row, by id (the statement ``load_by_id`` runs, or was handed the rows of).
BY_ID = f"SELECT {COLUMNS} FROM queue WHERE task_id = ?"

# Rows are keyed by submission position, not by id: tasks claimed one after another sit side
# by side, so a claim and the completion before it usually dirty one table page, not two
# (and the rate does not depend on how task ids happen to sort). Saves update only the
# columns that change after submission, so the id index is never rewritten.
DDL = """
CREATE TABLE IF NOT EXISTS queue (
    task_id            TEXT    NOT NULL UNIQUE,
    state              TEXT    NOT NULL,
    priority           INTEGER NOT NULL,  -- 0 CRITICAL .. 3 LOW
    submitted_position INTEGER PRIMARY KEY,
    title              TEXT    NOT NULL,
    shard              TEXT,
    model              TEXT,
    type               TEXT,
    max_retries        INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,  -- attempts claimed so far
    worker             TEXT,              -- holder while running
    lease_expires_at   INTEGER,           -- microseconds since the epoch, while running
    pid                INTEGER,           -- the agent's process (group) while running
    last_error         TEXT,
    submitted_at       INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    version            INTEGER NOT NULL,  -- the task stream's version: the next append expects it
    retries_from       INTEGER NOT NULL,  -- attempt count when the retry budget last started
    has_command        INTEGER NOT NULL,  -- 1: the task carries its own command
    budget_units       INTEGER,           -- max_budget_usd over all attempts (1e-10 USD)
    spent_units        INTEGER NOT NULL,  -- spend recorded for the task so far (1e-10 USD)
    not_before         INTEGER,           -- no claim before (a delay, a retry's backoff), µs
    backoff_base_us    INTEGER,           -- the task's own retry backoff (NULL: the fleet's)
    backoff_cap_us     INTEGER,
    after_ids          TEXT,              -- its dependencies, space-separated (ids hold none)
    dependants         TEXT,              -- the tasks that wait for it, space-separated
    deps_open          INTEGER NOT NULL,  -- dependencies not completed yet: claimable at 0
    blocked            TEXT,              -- why it waits for a person (a dependency failed)
    reserved_units     INTEGER,           -- today's budget the running attempt holds (1e-10 USD)
    claim_spent_units  INTEGER NOT NULL,  -- spent_units when the attempt was claimed
    claimed_at         INTEGER,           -- when the current (or last) attempt was claimed, µs
    ran_us             INTEGER            -- how long the last successful attempt ran, µs
);
CREATE INDEX IF NOT EXISTS queue_claimable ON queue (priority, submitted_position)
    WHERE state = 'queued' AND deps_open = 0;
CREATE INDEX IF NOT EXISTS queue_blocked ON queue (blocked)
    WHERE state = 'queued' AND deps_open > 0;
CREATE INDEX IF NOT EXISTS queue_waiting ON queue (not_before)
    WHERE state = 'queued' AND not_before IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_leases ON queue (lease_expires_at) WHERE state = 'running';
-- Queued tasks with a budget of their own (few, usually): what today's budget cannot reserve
-- for is counted from them and the counts, not by a scan of the whole queue (status).
CREATE INDEX IF NOT EXISTS queue_budgeted ON queue (budget_units)
    WHERE state = 'queued' AND budget_units IS NOT NULL;
-- Listings in claim order read only the rows they show (tasks list --limit), not a sort of
-- the whole table; written on submission and on a change of priority only.
CREATE INDEX IF NOT EXISTS queue_order ON queue (priority, submitted_position);
CREATE TABLE IF NOT EXISTS queue_counts (
    state       TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    shard       TEXT    NOT NULL,  -- '' for none (a key column cannot be NULL)
    model       TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    has_command INTEGER NOT NULL,
    n           INTEGER NOT NULL,  -- tasks of this kind in this state (rows at 0 are kept)
    PRIMARY KEY (state, priority, shard, model, type, has_command)
) WITHOUT ROWID;
"""


# What changes after submission: every such column on the rare events (a submission, a
# requeue, a change, a block); the id index stays.
_MUTABLE = ("state", "priority", "title", "shard", "model", "type", "max_retries", "attempt",
            "worker", "lease_expires_at", "pid", "last_error", "updated_at", "version",
            "retries_from", "has_command", "budget_units", "spent_units", "not_before",
            "dependants", "deps_open", "blocked", "reserved_units", "claim_spent_units",
            "claimed_at", "ran_us", "backoff_base_us", "backoff_cap_us")
SAVE = (
    f"INSERT INTO queue ({COLUMNS}) VALUES ({','.join('?' * 32)})"
    " ON CONFLICT (submitted_position) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _MUTABLE)
)
# What the events of claims, leases, completions and spend change: saved by an UPDATE of
# these columns alone (binding a third of the values; the hot path of every worker).
_HOT = ("state", "attempt", "worker", "lease_expires_at", "pid", "last_error", "updated_at",
        "version", "retries_from", "budget_units", "spent_units", "reserved_units",
        "claim_spent_units", "claimed_at", "ran_us")
SAVE_HOT = (f"UPDATE queue SET {', '.join(f'{c} = ?' for c in _HOT)}"
            " WHERE submitted_position = ?")
_hot_tuple = operator.attrgetter(*_HOT, "submitted_position")




# Counts kept beside the rows, by state and by what a task needs of a worker: ``status`` and
# the waiting reasons read a few rows instead of counting the queue, the same cost at a
# thousand tasks or a million.
COUNT = ("INSERT INTO queue_counts VALUES (?, ?, ?, ?, ?, ?, ?)"
         " ON CONFLICT (state, priority, shard, model, type, has_command)"
         " DO UPDATE SET n = queue_counts.n + excluded.n")
CountKey = tuple[str, int, str, str, str, int]


def count_key(row: TaskRow) -> CountKey:
    return (row.state, row.priority, row.shard or "", row.model or "", row.type or "",
            row.has_command)


def _write_moves(conn: Db, moves: dict[CountKey, int]) -> None:
    changed = [(*key, n) for key, n in moves.items() if n]
    if changed:
        conn.executemany(COUNT, changed)


class Touched(dict[str, TaskRow]):
    """The rows an event touches, as ``load`` found them: each one's count key then (what
    ``save`` moves in the counts), and whether they change beyond the hot columns (or are
    new: ``wide``, saved whole)."""

    __slots__ = ("before", "wide")

    def __init__(self, rows: dict[str, TaskRow] | None = None, *, wide: bool = False) -> None:
        super().__init__(rows or {})
        self.wide = wide
        self.before: dict[str, CountKey] = {}

    def remember(self) -> None:
        self.before = {task_id: count_key(row) for task_id, row in self.items()}


class Paged(dict[str, TaskRow]):
    """The queue in a replay page by page: the rows of the current batch, each loaded row's
    values and count key as stored (what ``spill`` compares), and the count of every kind of
    task so far (written once, at the end)."""

    __slots__ = ("counts", "loaded")

    #: Task ids per SELECT: under every backend's limit on parameters.
    CHUNK = 500

    def __init__(self) -> None:
        super().__init__()
        self.loaded: dict[str, tuple[Row, CountKey]] = {}
        self.counts: Counter[CountKey] = Counter()

    def load(self, conn: Db, task_ids: Iterable[str]) -> list[TaskRow]:
        """The stored rows of those of ``task_ids`` not in memory yet, now in it."""
        missing = [task_id for task_id in task_ids if task_id not in self]
        found = []
        for start in range(0, len(missing), self.CHUNK):
            chunk = missing[start:start + self.CHUNK]
            for values in conn.execute(f"SELECT {COLUMNS} FROM queue WHERE task_id IN"
                                       f" ({','.join('?' * len(chunk))})", chunk):
                row = TaskRow(*values)
                self[row.task_id] = row
                self.loaded[row.task_id] = (_as_tuple(row), count_key(row))
                found.append(row)
        return found


# attrgetter: much cheaper than dataclasses.astuple, which deep-copies every field.
_as_tuple = operator.attrgetter(*(f.name for f in fields(TaskRow)))


QueueView = dict[str, TaskRow]
TASK_STATES = {state.value: state for state in TaskState}  # cheaper than TaskState(value)
TASK_ENDS = frozenset({TaskRequeued, TaskCompleted, TaskDeadLettered, TaskCancelled,
                       TaskAwaitingReview})


def _task_id(envelope: Envelope) -> str | None:
    event = envelope.event
    if type(event) is SpendRecorded:
        return event.task  # spend counts against its task's budget
    return getattr(event, "task_id", None) if envelope.stream.startswith("task-") else None


class QueueProjection(Projection[QueueView]):
    name = "queue"
    ddl = DDL
    tables = ("queue", "queue_counts")
    handles = frozenset({TaskSubmitted, TaskClaimed, TaskStarted, LeaseRenewed, TaskCompleted,
                         TaskFailed, TaskRequeued, TaskDeadLettered, TaskCancelled,
                         SpendRecorded, TaskAwaitingReview, TaskApproved, TaskReviewRejected,
                         # no move, but the stream's version: the next append expects it
                         TaskResultRecorded, AgentSessionStarted, TaskMergeFailed,
                         TaskBlocked, TaskUnblocked, TaskUpdated})

    def new_view(self) -> QueueView:
        return {}

    def apply(self, view: QueueView, envelope: Envelope) -> None:
        event = envelope.event
        kind = type(event)  # exact types, compared with `is`: this runs a million times in replay
        if kind is SpendRecorded:
            assert isinstance(event, SpendRecorded)
            spent_on = view.get(event.task) if event.task is not None else None
            if spent_on is not None:
                spent_on.spent_units += to_units(event.amount)
            return
        task_id: str | None = getattr(event, "task_id", None)
        if task_id is None:
            return
        row = view.get(task_id)
        if row is None:
            if isinstance(event, TaskSubmitted):
                at = envelope.recorded_at
                view[task_id] = TaskRow(  # positional: a third of the cost of keywords
                    task_id, _QUEUED, _RANKS[event.priority], envelope.position, event.title,
                    event.shard, event.model, event.type, event.max_retries, 0, None, None,
                    None, None, at, at, envelope.version, 0,
                    int(bool(event.command or event.agent)),
                    None if event.max_budget_usd is None else to_units(event.max_budget_usd),
                    0, None if event.not_before is None else to_us(event.not_before),
                    *_backoff_us(event.retry_backoff),
                )
                if event.after:
                    _depend(view, view[task_id], event.after)
            return
        state = _MOVES.get((row.state, kind))
        if state is None:  # a retry, or a move the task machine refuses (advance_task raises)
            moved = advance_task(TASK_STATES[row.state], event)
            if moved is TaskState.QUEUED and row.state == TaskState.FAILED:
                row.retries_from = row.attempt  # a manual retry starts a fresh retry budget
                budget = event.budget_usd  # type: ignore[attr-defined]
                if budget is not None:  # and may raise the spend cap of the whole task
                    row.budget_units = to_units(budget)
            state = str(moved)
        if state == _COMPLETED and row.dependants and row.state != _COMPLETED:
            for waiting in row.dependants.split():  # one dependency fewer to wait for
                if (dependant := view.get(waiting)) is not None:
                    dependant.deps_open -= 1
        row.state = state
        row.version = envelope.version
        row.updated_at = envelope.recorded_at
        if kind is TaskClaimed:
            assert isinstance(event, TaskClaimed)
            row.attempt = event.attempt
            row.worker = event.worker
            row.lease_expires_at = to_us(event.lease_expires_at)
            row.pid = None
            reserved = event.reserved_usd
            row.reserved_units = None if reserved is None else to_units(reserved)
            row.claim_spent_units = row.spent_units  # the attempt's spend counts from here
            row.claimed_at = envelope.recorded_at
        elif kind is LeaseRenewed:
            assert isinstance(event, LeaseRenewed)
            row.lease_expires_at = to_us(event.lease_expires_at)
        elif kind is TaskStarted:
            assert isinstance(event, TaskStarted)
            row.pid = event.pid
        elif kind is TaskFailed:
            assert isinstance(event, TaskFailed)
            row.last_error = event.error
        elif kind is TaskBlocked:
            assert isinstance(event, TaskBlocked)
            row.blocked = event.reason
        elif kind is TaskUnblocked:
            row.blocked = None
        elif kind is TaskUpdated:
            assert isinstance(event, TaskUpdated)
            _update(row, event)
        elif kind in TASK_ENDS:
            row.worker = row.lease_expires_at = row.pid = row.reserved_units = None
            # A successful attempt's time: a sample for estimates (with its spend).
            if (kind is TaskCompleted or kind is TaskAwaitingReview) and row.claimed_at:
                row.ran_us = envelope.recorded_at - row.claimed_at
            if isinstance(event, TaskDeadLettered):
                row.last_error = event.error
            elif kind is TaskRequeued:
                assert isinstance(event, TaskRequeued)
                if event.reason in STOP_REASONS:
                    row.retries_from += 1  # a stopped attempt is not a failed one: no retry spent
                # A retry's backoff; any other requeue may be claimed at once.
                row.not_before = None if event.not_before is None else to_us(event.not_before)

    def spilling_view(self) -> QueueView:
        return Paged()

    def prefetch(self, conn: Db, view: QueueView, envelopes: Sequence[Envelope]) -> None:
        assert isinstance(view, Paged)
        # The rows ``apply`` looks up: the event's task (by the same attribute apply reads),
        # the task a spend counts against, a new task's dependencies.
        wanted: set[str] = set()
        handles = self.handles
        for envelope in envelopes:
            event = envelope.event
            kind = type(event)
            if kind is SpendRecorded:
                task_id = event.task  # type: ignore[attr-defined]
            elif kind in handles:
                task_id = getattr(event, "task_id", None)
                if kind is TaskSubmitted:
                    wanted.update(event.after)  # type: ignore[attr-defined]
            else:
                continue
            if task_id is not None:
                wanted.add(task_id)
        found = view.load(conn, wanted)
        # A completion lowers deps_open of each task waiting for it: those rows too.
        view.load(conn, {waiting for row in found for waiting in row.waiting_tasks})

    def spill(self, conn: Db, view: QueueView) -> None:
        assert isinstance(view, Paged)
        changed = []
        counts, loaded = view.counts, view.loaded
        for task_id, row in view.items():
            values = _as_tuple(row)
            was = loaded.get(task_id)
            if was is not None and was[0] == values:
                continue  # loaded as a dependant, left as it was
            changed.append(values)
            now = count_key(row)
            if was is None:
                counts[now] += 1
            elif was[1] != now:
                counts[was[1]] -= 1
                counts[now] += 1
        if changed:
            conn.executemany(SAVE, changed)
        view.clear()
        loaded.clear()

    def finish(self, conn: Db, view: QueueView) -> None:
        assert isinstance(view, Paged)
        self.spill(conn, view)
        # Like ``rows``: only the kinds some task has (a fold has no row at 0).
        conn.executemany(COUNT, [(*key, n) for key, n in sorted(view.counts.items()) if n])

    def load(self, conn: Db, envelope: Envelope) -> QueueView | None:
        task_id = _task_id(envelope)
        if task_id is None:
            return None
        row = self.load_by_id(conn, task_id)
        event = envelope.event
        wide = type(event) in _WIDE_EVENTS
        view = Touched({} if row is None else {task_id: row}, wide=wide)
        # Rows the fold changes beside the event's own: a new task's dependencies, and the
        # dependants of a task that completes.
        related: Iterable[str] = ()
        if type(event) is TaskSubmitted and row is None:
            related = event.after
        elif row is not None and row.dependants and type(event) in _COMPLETING:
            related = row.waiting_tasks
        if related:
            view.wide = True  # their counts and lists change
            for other in related:
                if (found := self.load_by_id(conn, other)) is not None:
                    view[other] = found
        view.remember()
        return view

    def save(self, conn: Db, view: QueueView) -> None:
        assert isinstance(view, Touched)  # made by load: it knows each row's count key then
        touched = view
        if touched.wide:
            conn.executemany(SAVE, [_as_tuple(row) for row in view.values()])
        else:
            conn.executemany(SAVE_HOT, [_hot_tuple(row) for row in view.values()])
        before = touched.before
        # The counts' moves, held back to the commit (or a read of the counts): those of a
        # transaction that cancel out (a task's completion and the next claim: one running
        # fewer, one more) are not written.
        moves = held(conn, "queue_counts", _write_moves)
        now_moves: dict[CountKey, int] = {} if moves is None else moves
        for task_id, row in view.items():
            keep(conn, "queue", task_id, row, saved=True)
            was, now = before.get(task_id), count_key(row)
            if was != now:
                if was is not None:
                    now_moves[was] = now_moves.get(was, 0) - 1
                now_moves[now] = now_moves.get(now, 0) + 1
        if moves is None and now_moves:
            _write_moves(conn, now_moves)

    def load_by_id(self, conn: Db, task_id: str, found: Rows | None = None) -> TaskRow | None:
        """The task's row (``found``: what ``BY_ID`` returned, read ahead with others)."""
        row: TaskRow | None = kept(conn, "queue", task_id)
        if row is None:
            if found is None:
                found = conn.execute(BY_ID, (task_id,))
            values = found.fetchone()
            row = None if values is None else keep(conn, "queue", task_id, TaskRow(*values))
        return row

    def first_claimable(
        self, conn: Db, shard: str | None, model: str | None, type: str | None,
        has_exec: bool = True, now_us: int = 0, room: Room | None = None,
        ahead: Rows | None = None,
    ) -> TaskRow | None:
        """The next task for a worker with these filters: CRITICAL first, then oldest. A task
        field that is empty matches any worker; a set one only a worker with the same value.
        A worker without ``--exec`` takes only tasks that carry their own command, a task
        that has spent its whole budget is taken by none, and one whose ``not_before`` is
        after ``now_us`` (a delay, a retry's backoff) or that waits for dependencies not
        yet (the index holds no such task), nor one that would exceed a fleet-wide cap
        (``limits``: counted in this transaction, so no two claims pass one cap), nor, with
        ``room``, one whose reservation today's budget cannot cover (what is left of it is
        read in this transaction too, and only when the first task found reserves anything).
        """
        # Caps and model pauses are rare: the plain query says whether any exist (computed
        # once per statement), and only then is the query that checks them run. On
        # PostgreSQL, which plans each claim anew, that query costs ~0.15 ms more to plan.
        # ``ahead``: the rows of CLAIMABLE_FOR_WORKER for this worker, read earlier in this
        # transaction, which wrote nothing since that could change them (the caller's word).
        found = (ahead if ahead is not None else conn.execute(
            f"SELECT {COLUMNS}, {_ANY_HOLDS} FROM queue INDEXED BY queue_claimable"
            f" WHERE {_CLAIMABLE} ORDER BY priority, submitted_position LIMIT 1",
            (shard, model, type, has_exec, now_us),
        )).fetchone()
        if found is None:
            return None
        row = TaskRow(*found[:-1])
        checked = bool(found[-1])
        if room is not None and not checked:
            need = row.reservation(room.default_units)
            checked = need > 0 and need > room.left()
        if checked:
            fits, bound = "", tuple[int, ...]()
            if room is not None:  # a task reserving nothing fits even an overdrawn day
                fits, bound = _FITS, (room.default_units, max(room.left(), 0))
            found = conn.execute(
                f"WITH {FULL_LIMITS} SELECT {COLUMNS}, 1 FROM queue INDEXED BY queue_claimable"
                f" WHERE {_CLAIMABLE}{UNDER_LIMITS}{NOT_PAUSED}{fits}"
                " ORDER BY priority, submitted_position LIMIT 1",
                (shard, model, type, has_exec, now_us, model, shard, type, model, now_us,
                 *bound),
            ).fetchone()
            if found is None:
                return None
            row = TaskRow(*found[:-1])
        return keep(conn, "queue", row.task_id, row)

    def next_due(self, conn: Db, now_us: int) -> int | None:
        """The earliest ``not_before`` after ``now_us`` of a queued task."""
        (due,) = conn.execute(
            "SELECT min(not_before) FROM queue INDEXED BY queue_waiting"
            " WHERE state = 'queued' AND not_before > ?", (now_us,)).fetchone()
        return None if due is None else int(due)

    def leases_expired_before(self, conn: Db, now_us: int) -> list[TaskRow]:
        found = conn.execute(
            f"SELECT {COLUMNS} FROM queue INDEXED BY queue_leases"
            " WHERE state = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at",
            (now_us,),
        )
        return [TaskRow(*r) for r in found]

    def rows(self, view: QueueView) -> dict[str, list[Row]]:
        counts = Counter(count_key(row) for row in view.values())
        return {"queue": sorted(_as_tuple(row) for row in view.values()),
                "queue_counts": sorted((*key, n) for key, n in counts.items())}

    def read_rows(self, conn: Db) -> dict[str, list[Row]]:
        rows = super().read_rows(conn)
        rows["queue_counts"] = [r for r in rows["queue_counts"] if r[-1]]  # 0: none left
        return rows


def _update(row: TaskRow, event: TaskUpdated) -> None:
    if event.priority is not None:
        row.priority = event.priority.rank
    if event.title is not None:
        row.title = event.title
    if event.shard is not None:
        row.shard = event.shard or None
    if event.model is not None:
        row.model = event.model or None
    if event.type is not None:
        row.type = event.type or None
    if event.max_retries is not None:
        row.max_retries = event.max_retries
    if event.max_budget_usd is not None:
        row.budget_units = to_units(event.max_budget_usd)
    if event.not_before is not None:
        row.not_before = to_us(event.not_before)
    if event.retry_backoff is not None:
        row.backoff_base_us, row.backoff_cap_us = _backoff_us(event.retry_backoff)
    if event.command is not None and event.agent is not None:  # the service asks for both
        row.has_command = int(bool(event.command or event.agent))


def _depend(view: QueueView, row: TaskRow, after: tuple[str, ...]) -> None:
    """A new task waits for ``after``: it counts those not completed, and each of them
    lists it among the tasks waiting for it."""
    row.after_ids = " ".join(after)
    for dependency_id in after:
        dependency = view.get(dependency_id)
        if dependency is None or dependency.state != _COMPLETED:
            row.deps_open += 1  # an unknown one (refused at submit) is never completed
        if dependency is not None:
            dependency.dependants = " ".join((*dependency.waiting_tasks, row.task_id))


def _backoff_us(backoff: Backoff | None) -> tuple[int | None, int | None]:
    if backoff is None:
        return None, None
    return int(backoff.base_s * 1_000_000), int(backoff.cap_s * 1_000_000)


_CLAIMABLE = (
    "state = 'queued' AND (shard IS NULL OR shard = ?) AND (model IS NULL OR model = ?)"
    " AND (type IS NULL OR type = ?) AND (? OR has_command = 1)"
    " AND (budget_units IS NULL OR spent_units < budget_units)"
    " AND deps_open = 0 AND (not_before IS NULL OR not_before <= ?)")
_ANY_HOLDS = "(EXISTS (SELECT 1 FROM limits) OR EXISTS (SELECT 1 FROM model_pauses))"
_OF_WORKER = "(SELECT {} FROM workers WHERE worker_id = ?)"
#: The plain claim query with the worker's filters read from its row in the statement
#: (parameters: the worker's id four times, then now): a completion that claims the next
#: task sends it ahead with its first reads (see first_claimable's ``ahead``).
CLAIMABLE_FOR_WORKER = (
    f"SELECT {COLUMNS}, {_ANY_HOLDS} FROM queue INDEXED BY queue_claimable WHERE "
    + _CLAIMABLE.replace("shard = ?", f"shard = {_OF_WORKER.format('shard')}")
    .replace("model = ?", f"model = {_OF_WORKER.format('model')}")
    .replace("type = ?", f"type = {_OF_WORKER.format('type')}")
    .replace("(? OR", f"({_OF_WORKER.format('has_exec')} <> 0 OR")
    + " ORDER BY priority, submitted_position LIMIT 1")
_FITS = f" AND {RESERVATION} <= ?"


class Room:
    """What a claim may reserve: the default reservation, and what is left of today's
    budget (read only when asked, and once)."""

    __slots__ = ("_left", "_read", "default_units")

    def __init__(self, default_units: int, read: Callable[[], int]) -> None:
        self.default_units = default_units
        self._read = read
        self._left: int | None = None

    def left(self) -> int:
        if self._left is None:
            self._left = self._read()
        return self._left




# A failed task's requeue is a retry or not by its reason: the machine decides that one.
_MOVES = fixed_moves(
    TaskState, QueueProjection.handles, advance_task,
    lambda state, kind: state is TaskState.FAILED and kind is TaskRequeued,
)
_QUEUED = TaskState.QUEUED.value
_COMPLETED = TaskState.COMPLETED.value
_COMPLETING = (TaskCompleted, TaskApproved)
_WIDE_EVENTS = frozenset({TaskSubmitted, TaskRequeued, TaskUpdated, TaskBlocked, TaskUnblocked})
_RANKS = {priority: priority.rank for priority in Priority}


QUEUE = QueueProjection()
