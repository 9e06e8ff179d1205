"""How things look: every JSON shape the commands print (``--json``), and events as lines.

Pure functions from rows and readings to dicts and strings; no I/O, no typer, so anything
that shows the fleet (a command, a web page) shows it in the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from eventlog import RecordedEvent
from tri24es.machines import TaskState, WorkerState
from tri24es.names import EventDecodeError, Priority
from tri24es.projections.tables.money import from_units
from tri24es.timeutil import iso_time, now_us

if TYPE_CHECKING:
    from tri24es.budget import BudgetLimits, Reading, TodayBudget
    from tri24es.paths import ProjectPaths
    from tri24es.projections.reads import FleetCounts
    from tri24es.projections.sql import Db
    from tri24es.projections.tables.queue import TaskRow
    from tri24es.projections.tables.workers import WorkerRow
    from tri24es.scheduling import Estimate

TEXT_DATA_WIDTH = 120
HISTORY_TEXT_LIMIT = 80
PRIORITIES = tuple(Priority)


def priority_name(rank: int) -> str:
    return PRIORITIES[rank].value


def money(amount: Decimal) -> str:
    """An exact amount as a plain decimal string (never ``1E+2``), for JSON."""
    return f"{amount.normalize():f}"


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
        "attempt": row.attempt,  # attempts made (claims)
        "retries_used": row.retries_used,  # of those, retries that counted against...
        "max_retries": row.max_retries,  # ...this
        "has_command": bool(row.has_command),
        "max_budget_usd": None if row.budget_units is None else money(from_units(row.budget_units)),
        "spent_usd": money(from_units(row.spent_units)),
        "worker": row.worker,
        "lease_expires_at": _iso(row.lease_expires_at),
        "not_before": _iso(row.not_before),  # a delay or a retry's backoff: no claim before
        "retry_backoff": None if (b := row.backoff()) is None else f"{b.base_s:g}s..{b.cap_s:g}s",
        "after": row.after,  # claimed only once these completed
        "dependencies_open": row.deps_open,  # of them, not completed yet
        "blocked": row.blocked,  # why it waits for a person (a dependency failed)
        "pid": row.pid,
        "last_error": row.last_error,
        "submitted_position": row.submitted_position,
        "submitted_at": _iso(row.submitted_at),
        "updated_at": _iso(row.updated_at),
    }


def estimate_dict(found: Estimate | None) -> dict[str, Any] | None:
    """What similar tasks cost and took (``submit``, ``tasks show``); None: fewer than three."""
    if found is None:
        return None
    return {"samples": found.samples, "cost_p50_usd": money(found.cost_p50),
            "cost_p90_usd": money(found.cost_p90), "seconds_p50": round(found.seconds_p50, 3),
            "seconds_p90": round(found.seconds_p90, 3)}


def estimate_line(type_: str | None, model: str | None, found: Estimate) -> str:
    return f"similar tasks (type={type_ or 'any'}, model={model or 'any'}): {found}"


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


def no_progress_of(events: Iterable[RecordedEvent]) -> str | None:
    """The task's own spend-without-progress rule as it is now (its submission's, or the last
    update's), as ``--no-progress`` takes it (``$2 600s``, ``off``); None: the fleet's."""
    from tri24es.events import TaskSubmitted, TaskUpdated, decode_event
    from tri24es.scheduling import no_progress_text

    rule = None
    for recorded in events:
        if recorded.type in (TaskSubmitted.topic, TaskUpdated.topic):
            event = decode_event(recorded)
            assert isinstance(event, TaskSubmitted | TaskUpdated)
            if event.no_progress is not None:  # None: the one before stays
                rule = event.no_progress
    return None if rule is None else no_progress_text(rule)


def history_entry(recorded: RecordedEvent) -> dict[str, Any]:
    """One event of a stream: where, when, what, who, and its fields (long text shortened)."""
    from tri24es.events import decode_event  # the catalog: for what shows events only

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


_ENDINGS = {"TaskCompleted": "completed", "TaskAwaitingReview": "waiting for review",
            "TaskFailed": "failed", "TaskRequeued": "requeued", "TaskDeadLettered": "failed",
            "TaskCancelled": "cancelled"}


def attempts(conn: Db, events: list[RecordedEvent], paths: ProjectPaths) -> list[dict[str, Any]]:
    """Each attempt of a task, from its stream: who ran it, how long, what it spent, how it
    ended, its result (branch, commit, diffstat) and where its output is."""
    from tri24es.projections import reads

    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for recorded in events:
        data = orjson.loads(recorded.data)
        if recorded.type == "TaskClaimed":
            current = {"attempt": data["attempt"], "worker": data["worker"],
                       "started_at": recorded.recorded_at, "ended_at": None,
                       "outcome": None, "result": None}
            found.append(current)
        elif current is None:
            continue
        elif recorded.type == "TaskResultRecorded":
            current["result"] = {k: data.get(k) for k in (
                "branch", "base_commit", "head_commit", "files_changed", "insertions",
                "deletions", "committed_leftovers")}
        elif recorded.type in _ENDINGS and current["outcome"] is None:
            current["outcome"] = data.get("reason") or _ENDINGS[recorded.type]
            current["ended_at"] = recorded.recorded_at
    shown = []
    for a in found:
        until = a["ended_at"] if a["ended_at"] is not None else now_us()
        shown.append({
            "attempt": a["attempt"], "worker": a["worker"], "outcome": a["outcome"],
            "started_at": iso_time(a["started_at"]),
            "seconds": round((until - a["started_at"]) / 1_000_000, 1),
            "spent_usd": money(reads.task_spend(conn, events[0].stream[len("task-"):],
                                                a["started_at"], until + 1)),
            "result": a["result"],
            "log": str(paths.attempt_log(events[0].stream[len("task-"):], a["attempt"])),
        })
    return shown


def status_now(counts: FleetCounts, waiting: list[Any], queue_dir: Path,
               limits: list[tuple[str, str, int, int]],
               today: TodayBudget) -> dict[str, Any]:
    """``status --json`` now (the web's ``/api/status`` too): the counts, why queued tasks
    wait, the fleet-wide caps in use, today's budget with what running attempts reserve of
    it, and what the queue watcher ignores in ``queue_dir``."""
    from tri24es.inputs.queue_folder import ignored_entries

    ignored = [{"source": i.source, "reason": i.reason} for i in ignored_entries(queue_dir)]
    return {**counts_dict(counts), "waiting": [str(w) for w in waiting],
            "limits": [{"key": key, "value": value, "cap": cap, "running": running}
                       for key, value, cap, running in limits],
            "budget_today": today_dict(today),
            "ignored_in_queue": ignored}


def today_dict(today: TodayBudget) -> dict[str, str]:
    """Today's budget: the limit, spent, reserved by running attempts, and what is left."""
    return {"daily_limit_usd": money(today.limit), "spent_usd": money(today.spent),
            "reserved_usd": money(today.reserved), "left_usd": money(today.left)}


def counts_dict(counts: FleetCounts) -> dict[str, Any]:
    """``status --json``: the fleet in numbers."""
    by_state = {s.value: 0 for s in TaskState}
    by_priority = {p.value: 0 for p in Priority}
    matrix = {s.value: {p.value: 0 for p in Priority} for s in TaskState}
    for (state, rank), n in counts.tasks.items():
        by_state[state] = by_state.get(state, 0) + n
        by_priority[priority_name(rank)] += n
        matrix.setdefault(state, {p.value: 0 for p in Priority})[priority_name(rank)] += n
    worker_states = {s.value: 0 for s in WorkerState} | dict(counts.workers)
    ks = counts.killswitch
    return {
        "queue": {
            "total": sum(counts.tasks.values()),
            "by_state": by_state,
            "by_priority": by_priority,
            "by_state_and_priority": matrix,
        },
        "workers": {"total": sum(counts.workers.values()), "by_state": worker_states},
        "spend": {"total_usd": money(counts.spend_total), "events": counts.spend_events,
                  "lines_skipped": counts.spend_lines_skipped},
        "killswitch": {
            "active": ks.active,
            "reason": ks.reason,
            "changed_at": _iso(ks.changed_at),
            "by": ks.by,
        },
        "head": counts.head,
    }


def reading_dict(reading: Reading, limits: BudgetLimits) -> dict[str, Any]:
    """The spend as ``spend --json`` and ``budget-watchdog --status --json`` print it (amounts
    as strings)."""
    from tri24es.budget import percent, window_text
    from tri24es.projections.tables.money import from_units, to_units

    ks = reading.killswitch
    return {
        "window_seconds": reading.window_seconds,
        "window": window_text(reading.window_seconds),
        "window_total_usd": money(reading.window_total),
        # rounded to the 1e-10 dollars the spend table keeps (a rate can recur)
        "rate_per_min_usd": money(from_units(to_units(reading.rate))),
        "daily_total_usd": money(reading.daily),
        "daily_limit_usd": money(reading.daily_limit(limits)),  # with today's allowance
        "daily_allowance_usd": money(reading.allowance),
        # the window starts after a forced reset this recent (null: a whole window)
        "window_after_reset": None if reading.reset_at is None else iso_time(reading.reset_at),
        "rate_limit_usd": money(limits.rate_limit),
        "rate_warning_usd": money(limits.rate_warning),
        "daily_used_pct": percent(reading.daily, reading.daily_limit(limits)),
        "rate_used_pct": percent(reading.rate, limits.rate_limit),
        "level": str(reading.level(limits)),
        "kill_switch_active": ks.active,
        "kill_switch_reason": ks.reason,
    }


def event_json(event: RecordedEvent) -> bytes:
    """One event as a JSON object; data and metadata are embedded as stored, not re-encoded."""
    return orjson.dumps(
        {
            "position": event.position,
            "stream": event.stream,
            "version": event.version,
            "type": event.type,
            "event_id": event.event_id,
            "data": orjson.Fragment(event.data),
            "metadata": orjson.Fragment(event.metadata),
            "recorded_at": iso_time(event.recorded_at),
        }
    )


def event_json_line(event: RecordedEvent) -> str:
    from tri24es.cli.common import shown

    return shown(event_json(event).decode()) + "\n"


def event_text_line(event: RecordedEvent) -> str:
    from tri24es.cli.common import shown

    data = event.data.decode(errors="replace")
    if len(data) > TEXT_DATA_WIDTH:
        data = data[: TEXT_DATA_WIDTH - 1] + "…"
    return shown(
        f"{event.position:>7}  {iso_time(event.recorded_at)}  "
        f"{event.stream} v{event.version}  {event.type}  {data}", newlines=False) + "\n"


def decode_problem(event: RecordedEvent) -> str | None:
    """Why ``event`` cannot be shown, as one printable line naming its position: its payload
    does not decode to a catalog event (corrupt, or a type this version does not know), or its
    metadata is not a JSON object. None if it can be shown."""
    from tri24es.events import decode_event

    try:
        decode_event(event)
    except EventDecodeError as e:
        return _printable(str(e))
    try:
        metadata = orjson.loads(event.metadata)
    except orjson.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        return _printable(f"event at position {event.position} ({event.type}): "
                          "corrupt metadata: not a JSON object")
    return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
