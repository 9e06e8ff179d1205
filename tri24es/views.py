"""Read-side helpers: the views as plain dicts for people and for JSON.

Nothing here writes. Live summaries read the projection tables; historical ones
(``replay --until``) are made from views folded in memory, in the same shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from eventlog import EventStore, RecordedEvent
from tri24es.errors import UsageError
from tri24es.events import Priority, decode_event
from tri24es.machines import TaskState, WorkerState
from tri24es.projections import (
    QUEUE,
    KillSwitchView,
    TaskRow,
    Views,
    WorkerRow,
    fold_log,
    read_killswitch,
)
from tri24es.projections.spend import from_units
from tri24es.projections.sql import Db
from tri24es.timeutil import iso_time, to_us

PRIORITIES = tuple(Priority)
HISTORY_TEXT_LIMIT = 80


def priority_name(rank: int) -> str:
    return PRIORITIES[rank].value


def parse_priority(text: str) -> Priority:
    """``"high"`` -> ``Priority.HIGH``; anything else is a usage error naming the choices."""
    try:
        return Priority(text.strip().upper())
    except ValueError:
        choices = "|".join(p.value for p in Priority)
        raise UsageError(f"bad priority {text!r}: expected {choices}") from None


def parse_task_state(text: str) -> TaskState:
    try:
        return TaskState(text.strip().lower())
    except ValueError:
        choices = "|".join(s.value for s in TaskState)
        raise UsageError(f"bad state {text!r}: expected {choices}") from None


def _iso(us: int | None) -> str | None:
    return None if us is None else iso_time(us)


def task_dict(row: TaskRow) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "state": row.state,
        "priority": priority_name(row.priority),
        "title": row.title,
        "shard": row.shard,
        "model": row.model,
        "type": row.type,
        "attempt": row.attempt,
        "max_retries": row.max_retries,
        "worker": row.worker,
        "lease_expires_at": _iso(row.lease_expires_at),
        "pid": row.pid,
        "last_error": row.last_error,
        "submitted_position": row.submitted_position,
        "submitted_at": _iso(row.submitted_at),
        "updated_at": _iso(row.updated_at),
    }


def worker_dict(row: WorkerRow) -> dict[str, Any]:
    return {
        "worker_id": row.worker_id,
        "state": row.state,
        "pid": row.pid,
        "host": row.host,
        "shard": row.shard,
        "model": row.model,
        "type": row.type,
        "current_task": row.current_task,
        "current_attempt": row.current_attempt,
        "pause_requested": bool(row.pause_requested),
        "stop_requested": bool(row.stop_requested),
        "started_at": _iso(row.started_at),
        "last_seen": _iso(row.last_seen),
    }


def history_entry(recorded: RecordedEvent) -> dict[str, Any]:
    """One event of a stream: where, when, what, who, and its fields (long text shortened)."""
    dumped = decode_event(recorded).model_dump(mode="json", exclude_none=True)
    fields: dict[str, Any] = {}
    for key, value in dumped.items():
        if key == "task_id" or value == "":
            continue
        if isinstance(value, str) and len(value) > HISTORY_TEXT_LIMIT:
            value = value[: HISTORY_TEXT_LIMIT - 1] + "…"
        fields[key] = value
    who = orjson.loads(recorded.metadata).get("actor") if recorded.metadata else None
    return {
        "position": recorded.position,
        "version": recorded.version,
        "time": iso_time(recorded.recorded_at),
        "type": recorded.type,
        "who": who,
        "fields": fields,
    }


# --- status ----------------------------------------------------------------------------


def summary(
    tasks: Counter[tuple[str, int]],
    workers: Counter[str],
    spend_units: int,
    spend_events: int,
    killswitch: KillSwitchView,
    head: int,
) -> dict[str, Any]:
    """The status of the fleet, from counts of (task state, priority rank) and worker states."""
    by_state = {s.value: 0 for s in TaskState}
    by_priority = {p.value: 0 for p in Priority}
    matrix = {s.value: {p.value: 0 for p in Priority} for s in TaskState}
    for (state, rank), n in tasks.items():
        by_state[state] = by_state.get(state, 0) + n
        by_priority[priority_name(rank)] += n
        matrix.setdefault(state, {p.value: 0 for p in Priority})[priority_name(rank)] += n
    worker_states = {s.value: 0 for s in WorkerState} | dict(workers)
    return {
        "queue": {
            "total": sum(tasks.values()),
            "by_state": by_state,
            "by_priority": by_priority,
            "by_state_and_priority": matrix,
        },
        "workers": {"total": sum(workers.values()), "by_state": worker_states},
        "spend": {"total_usd": str(from_units(spend_units).normalize()), "events": spend_events},
        "killswitch": {
            "active": killswitch.active,
            "reason": killswitch.reason,
            "changed_at": _iso(killswitch.changed_at),
            "by": killswitch.by,
        },
        "head": head,
    }


def live_summary(conn: Db, head: int) -> dict[str, Any]:
    """The status as the projection tables hold it now."""
    tasks = Counter(QUEUE.counts(conn))
    workers: Counter[str] = Counter()
    for state, n in conn.execute("SELECT state, count(*) FROM workers GROUP BY 1"):
        workers[state] = n
    units, events = conn.execute(
        "SELECT coalesce(sum(amount_units), 0), coalesce(sum(events), 0) FROM spend_buckets"
    ).fetchone()
    return summary(tasks, workers, units, events, read_killswitch(conn), head)


def folded_summary(views: Views) -> dict[str, Any]:
    """The status as the views folded in memory hold it (``replay --until``)."""
    tasks = Counter((row.state, row.priority) for row in views.queue.values())
    workers = Counter(row.state for row in views.workers.values())
    buckets: Iterable[list[int]] = views.spend.buckets.values()
    units = events = 0
    for bucket_units, bucket_events in buckets:
        units += bucket_units
        events += bucket_events
    return summary(tasks, workers, units, events, views.killswitch, views.position)


# --- the past: replay --until, status --at, audit export --since/--until ------------------


def parse_until(text: str, option: str = "--until") -> int | datetime:
    """A log position (``"42"``) or an ISO-8601 time (naive means UTC)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"bad {option} {text!r}: expected a log position or an ISO-8601 time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def position_at(store: EventStore, moment: datetime | int) -> int:
    """The last position recorded at or before ``moment`` (a datetime or microseconds; 0 if
    none).

    ``recorded_at`` never decreases along the log, so a binary search over positions finds
    it in a few dozen one-row reads, however long the log is.
    """
    limit = moment if isinstance(moment, int) else to_us(moment)
    lo, hi = 0, store.head()  # lo is at or before the moment; every position above hi after
    while lo < hi:
        mid = (lo + hi + 1) // 2
        page = store.read_page(mid - 1, 1)
        if page and page[0].position <= hi and page[0].recorded_at <= limit:
            lo = page[0].position
        else:
            hi = mid - 1
    return lo


def summary_at(store: EventStore, point: int | datetime) -> dict[str, Any]:
    """The status as it was at a position or time: the log folded up to there."""
    position = position_at(store, point) if isinstance(point, datetime) else point
    views = fold_log(store, until_position=position)
    return {"until": position, **folded_summary(views)}
