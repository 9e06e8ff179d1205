"""What each page and ``/api/...`` answer shows: plain dicts read in one snapshot, in the
CLI's ``--json`` shapes (``cli/render.py``) wherever the CLI has one.

Reads only: the views through ``projections.reads``, the log through the store, a task's
output from its log file.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from eventlog import EventStore, RecordedEvent
from tri24es.budget import BudgetLimits
from tri24es.cli.render import (
    attempts,
    decode_problem,
    estimate_dict,
    estimate_line,
    event_json,
    history_entry,
    no_progress_of,
    reading_dict,
    status_now,
    task_dict,
    worker_dict,
)
from tri24es.events import TaskResultRecorded, decode_event
from tri24es.machines import TaskState
from tri24es.names import Priority, task_stream
from tri24es.paths import ProjectPaths
from tri24es.projections import reads
from tri24es.projections.queue import QUEUE
from tri24es.projections.sql import Db
from tri24es.timeutil import iso_time

HOUR_US = 3_600_000_000
PAGE_SIZE = 50
EVENTS_PAGE = 200
LOG_TAIL_BYTES = 16_384
DIFF_BYTES = 65_536
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
MAX_PAGE = 500


class BadFilter(ValueError):
    """A filter or a page option that means nothing (shown to the user, status 400)."""


@dataclass(frozen=True)
class TaskFilter:
    state: str | None = None
    priority: str | None = None
    model: str | None = None
    text: str | None = None
    before: int | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def parse(cls, query: dict[str, str]) -> TaskFilter:
        def given(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        state, priority = given("state"), given("priority")
        if state is not None and state not in {s.value for s in TaskState}:
            raise BadFilter(f"bad state {state!r}: expected "
                            + "|".join(s.value for s in TaskState))
        if priority is not None:
            priority = priority.upper()
            if priority not in {p.value for p in Priority}:
                raise BadFilter(f"bad priority {priority!r}: expected "
                                + "|".join(p.value for p in Priority))
        return cls(state, priority, given("model"), given("q"),
                   number(given("before"), "before"),
                   number(given("limit"), "limit", PAGE_SIZE, MAX_PAGE) or PAGE_SIZE)

    def query(self, **changes: object) -> dict[str, str]:
        """These filters as query parameters (for the next page's link)."""
        found = {"state": self.state, "priority": self.priority, "model": self.model,
                 "q": self.text, "before": self.before} | changes
        return {k: str(v) for k, v in found.items() if v is not None}


def number(text: str | None, name: str, default: int | None = None,
            most: int = 2**62) -> int | None:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadFilter(f"bad {name} {text!r}: expected a whole number") from None
    if not 0 <= value <= most:
        raise BadFilter(f"bad {name} {value}: expected 0..{most}")
    return value


# --- the fleet at a glance ------------------------------------------------------------------


def overview(store: EventStore, conn: Db, limits: BudgetLimits, now: int,
             queue_dir: Path) -> dict[str, Any]:
    """``status --json`` and ``spend --json`` in one, the workers with their heartbeat age, the
    spend of the last hour per minute and by model, and the last events.

    By model over the last hour, not today: that sum reads every spend row of its period,
    and a busy day holds hundreds of thousands (today's total comes from the quarter-hour
    buckets)."""
    counts = reads.fleet_counts(conn, store.head())
    reading = reads.read_budget(conn, limits, now)
    per_minute = reads.per_minute(conn, now, 60)
    return {
        "status": status_now(counts, reads.waiting(conn, now, limits), queue_dir,
                             reads.limits_in_use(conn), reads.today_budget(conn, limits, now)),
        "spend": reading_dict(reading, limits),
        "spend_per_minute_usd": [str(m) for m in per_minute],
        "spend_last_hour_by_model_usd": {
            k: str(v) for k, v in reads.spend_by(conn, "model", now - HOUR_US, now + 1).items()},
        "workers": workers(conn, now),
        "recent_events": [event_dict(e) for e in store.read_page(max(counts.head - 10, 0), 10)],
        "now": iso_time(now),
    }


def spend(conn: Db, limits: BudgetLimits, now: int, window: str | None,
          by: str | None) -> dict[str, Any]:
    """``spend [--window W] [--by model|worker|task] --json``."""
    from tri24es.budget import parse_window
    from tri24es.cli.render import money

    try:
        seconds = parse_window(window) if window else None
    except ValueError as e:
        raise BadFilter(str(e)) from None
    if by is not None and by not in reads.SPEND_GROUPS:
        raise BadFilter(f"bad by {by!r}: expected {'|'.join(reads.SPEND_GROUPS)}")
    reading = reads.read_budget(conn, limits, now, seconds)
    info = reading_dict(reading, limits) | {"lines_skipped": reads.lines_skipped(conn)}
    if by is not None:
        groups = reads.spend_by(conn, by, now - reading.window_seconds * 1_000_000, now + 1)
        info |= {"by": by, by: {name: money(amount) for name, amount in groups.items()}}
    return info


class Shared:
    """One reading for everyone who asks with the same key (the log head and the second):
    when the head moves, every open overview asks at once, and one of them reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: object = None
        self._value: Any = None

    def get(self, key: object, read: Callable[[], Any]) -> Any:
        with self._lock:
            if key != self._key:
                self._value, self._key = read(), key
            return self._value


def workers(conn: Db, now: int) -> list[dict[str, Any]]:
    """``workers list --json``, each with the seconds since its last sign of life."""
    return [worker_dict(row) | {"heartbeat_age_s": max(now - row.last_seen, 0) // 1_000_000}
            for row in reads.workers(conn)]


def bars(values: list[Decimal], height: int = 40) -> list[int]:
    """Bar heights for a chart, scaled to the largest value (at least 1 for any spend)."""
    peak = max(values, default=Decimal(0))
    return [0 if peak <= 0 or v <= 0 else max(1, round(v / peak * height)) for v in values]


# --- tasks ----------------------------------------------------------------------------------


def task_list(conn: Db, f: TaskFilter) -> tuple[list[dict[str, Any]], int | None]:
    """A page of ``tasks list --json`` rows, newest first, and the cursor of the next page."""
    rank = None if f.priority is None else Priority(f.priority).rank
    rows = reads.task_page(conn, state=f.state, priority=rank, model=f.model, text=f.text,
                           before=f.before, limit=f.limit + 1)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    return [task_dict(r) for r in rows], rows[-1].submitted_position if more else None


def task(store: EventStore, conn: Db, paths: ProjectPaths, task_id: str) -> dict[str, Any] | None:
    """``tasks show --json`` (None if there is no such task), plus the tail of the last
    attempt's output."""
    row = QUEUE.load_by_id(conn, task_id)
    events = [e for e in store.read_stream(task_stream(task_id)) if decode_problem(e) is None]
    if row is None and not events:
        return None
    tried = attempts(conn, events, paths)
    last = row.attempt if row is not None else 0
    found = None if row is None else reads.estimate(conn, row.type, row.model)
    return {
        "task": None if row is None else task_dict(row),
        "no_progress": no_progress_of(events),  # the task's own rule, None: the fleet's
        "attempts": tried,
        "history": [history_entry(e) for e in events],
        "estimate": estimate_dict(found),  # what similar tasks cost and took
        "log": log_tail(paths, task_id, last) if last else None,
        "events": events,  # for the diff; not shown as such
        # the page's: the estimate as `submit` and `tasks show` print it; not in the JSON
        "estimate_line": None if row is None or found is None else estimate_line(
            row.type, row.model, found),
    }


def diff(events: list[RecordedEvent], attempt: int | None = None,
         limit: int = DIFF_BYTES) -> dict[str, Any] | None:
    """The diff of an attempt's result (the last one recorded if ``attempt`` is None), as
    ``tasks diff`` prints it, cut at ``limit`` bytes; None if there is no such result."""
    from tri24es.runtime.workspace import GitError, git

    results = [decode_event(e) for e in events if e.type == TaskResultRecorded.topic]
    chosen = [r for r in results if isinstance(r, TaskResultRecorded)
              and (attempt is None or r.attempt == attempt)]
    if not chosen:
        return None
    result = chosen[-1]
    commits = (result.base_commit, result.head_commit)
    if not all(_COMMIT.fullmatch(c) for c in commits):  # never an option to git
        return {"attempt": result.attempt, "text": "", "error": "not a commit id"}
    try:
        text = git(Path(result.repo), "diff", f"{commits[0]}..{commits[1]}", "--")
    except (GitError, OSError) as e:  # the repository moved, or this host is not its own
        return {"attempt": result.attempt, "text": "", "error": str(e)}
    cut = len(text.encode()) > limit
    if cut:
        text = text.encode()[:limit].decode(errors="ignore")
    return {"attempt": result.attempt, "branch": result.branch, "text": text,
            "truncated": cut, "error": None}


def log_tail(paths: ProjectPaths, task_id: str, attempt: int,
             limit: int = LOG_TAIL_BYTES) -> dict[str, Any]:
    """The last ``limit`` bytes of an attempt's output (cut at a line start when it is
    cut), and whether there was more before."""
    path = paths.attempt_log(task_id, attempt)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {"attempt": attempt, "path": str(path), "text": "", "truncated": False,
                "size": 0}
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(size - limit, 0))
        chunk = f.read(limit)
    cut = size > limit
    if cut and b"\n" in chunk:
        chunk = chunk[chunk.index(b"\n") + 1:]
    return {"attempt": attempt, "path": str(path), "text": chunk.decode(errors="replace"),
            "truncated": cut, "size": size}


# --- the log --------------------------------------------------------------------------------


def event_dict(event: RecordedEvent) -> dict[str, Any]:
    """``events --json``, with the actor pulled out of the metadata for the pages."""
    found: dict[str, Any] = orjson.loads(event_json(event))
    meta = found.get("metadata")
    found["actor"] = meta.get("actor") if isinstance(meta, dict) else None
    return found


def events(store: EventStore, after: int | None, types: list[str], stream: str | None,
           limit: int = EVENTS_PAGE) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` events of the given types and stream, oldest first: the first ones
    after position ``after``, or without it the last ones; and the position to go on from."""
    head = store.head()
    if stream is not None:
        found = [e for e in store.read_stream(stream) if not types or e.type in types]
        found = [e for e in found if e.position > after] if after is not None else found
    elif after is not None:
        found = store.read_page(after, limit, types or None)
    else:  # the last ones: look back further until enough match (or the log's start)
        window = limit
        while True:
            start = max(head - window, 0)
            found = store.read_page(start, head - start, types or None)
            if len(found) >= limit or start == 0:
                break
            window *= 8
    found = found[:limit] if after is not None else found[-limit:]
    return [event_dict(e) for e in found], found[-1].position if found else (after or head)
