"""Every read of the view tables beyond a row lookup: listings, counts, spend sums, glances.

The services decide on rows they fetch with the projections' own lookups (``load_by_id``,
``first_claimable``, ...). Everything that lists, counts or sums for people and for the
watchdog (``status``, ``tasks list``, ``spend``, ``top``, ``metrics``, the budget watchdog)
reads here, inside a snapshot the caller opened, so each table's shape is read in one place.
Nothing here writes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING

from eventlog import EventStore, RecordedEvent, position_at
from eventlog.model import system_clock_us
from tri24es.budget import (
    BudgetLimits,
    Reading,
    TodayBudget,
    allowance_at,
    day_bounds,
    enforced_limits,
    rate_per_min,
    window_start,
)
from tri24es.machines import ACTIVE_WORKER_STATES, LIVE_WORKER_STATES
from tri24es.projections.sql import Db
from tri24es.projections.tables.killswitch import KillSwitchView, read_killswitch
from tri24es.projections.tables.limits import RUNNING_VALUE
from tri24es.projections.tables.models import ModelPause, model_pauses
from tri24es.projections.tables.money import BUCKET_US, from_units, to_units
from tri24es.projections.tables.queue import COLUMNS as TASK_COLUMNS
from tri24es.projections.tables.queue import OUTSTANDING, TaskRow, outstanding_units
from tri24es.projections.tables.workers import COLUMNS as WORKER_COLUMNS
from tri24es.projections.tables.workers import WorkerRow
from tri24es.timeutil import iso_time, to_us

if TYPE_CHECKING:  # the folds and the catalog: imported by the reads that fold or parse
    from tri24es.projections.fold import Views
    from tri24es.scheduling import Estimate

MINUTE_US = 60_000_000
LIMIT_KEYS = ("model", "shard", "type")  # queue columns a fleet-wide cap may count by
#: What ``spend --by`` can group the spend by: the column of the spend table.
SPEND_GROUPS = ("model", "worker", "task")

# --- tasks and workers ---------------------------------------------------------------------


def tasks(conn: Db, state: str | None = None, limit: int | None = None) -> list[TaskRow]:
    """Tasks in claim order (priority, then submission), of one state or all; the first
    ``limit`` of them if given (a listing reads only what it shows)."""
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    found = conn.execute(
        f"SELECT {TASK_COLUMNS} FROM queue {where} ORDER BY priority, submitted_position"
        + ("" if limit is None else f" LIMIT {int(limit)}"),
        params,
    )
    return [TaskRow(*r) for r in found]


def task_page(conn: Db, *, state: str | None = None, priority: int | None = None,
              model: str | None = None, text: str | None = None, before: int | None = None,
              limit: int = 50) -> list[TaskRow]:
    """Tasks newest first, filtered, for people paging through them (the dashboard): keyed
    by submission position (``before``: the last position of the previous page), so a page
    deep in 100,000 tasks costs what the first one does. ``text`` is a case-insensitive
    substring of the id or the title."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (("state", state), ("priority", priority), ("model", model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if text:
        like = "%" + "".join("\\" + c if c in "\\%_" else c for c in text.lower()) + "%"
        where.append("(lower(task_id) LIKE ? ESCAPE '\\' OR lower(title) LIKE ? ESCAPE '\\')")
        params += [like, like]
    if before is not None:
        where.append("submitted_position < ?")
        params.append(before)
    found = conn.execute(
        f"SELECT {TASK_COLUMNS} FROM queue {'WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY submitted_position DESC LIMIT ?", (*params, limit))
    return [TaskRow(*r) for r in found]


def task_total(conn: Db, state: str | None = None) -> int:
    """How many tasks there are (in ``state``), from the counts: no scan of the queue."""
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    (n,) = conn.execute(f"SELECT coalesce(sum(n), 0) FROM queue_counts {where}",
                        params).fetchone()
    return int(n)


def task_counts(conn: Db) -> dict[tuple[str, int], int]:
    """(state, priority rank) -> how many tasks."""
    found = conn.execute(
        "SELECT state, priority, sum(n) FROM queue_counts GROUP BY 1, 2 HAVING sum(n) <> 0")
    return {(state, priority): n for state, priority, n in found}


def workers(conn: Db) -> list[WorkerRow]:
    found = conn.execute(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY worker_id")
    return [WorkerRow(*r) for r in found]


def live_workers(conn: Db) -> list[WorkerRow]:
    """Workers whose process should be running (see ``machines.LIVE_WORKER_STATES``)."""
    return [row for row in workers(conn) if row.state in LIVE_WORKER_STATES]


def worker_counts(conn: Db) -> Counter[str]:
    return Counter(dict(conn.execute("SELECT state, count(*) FROM workers GROUP BY 1")))


def paused_models(conn: Db) -> list[ModelPause]:
    """Every model paused by hand (a pause whose time ended is listed until resumed)."""
    return model_pauses(conn)


def limits_in_use(conn: Db) -> list[tuple[str, str, int, int]]:
    """Every fleet-wide cap with the tasks running under it now: (key, value, cap, running)."""
    return [(key, value, cap, running) for key, value, cap, running in conn.execute(
        "SELECT l.key, l.value, l.cap, (SELECT count(*) FROM queue r LEFT JOIN workers w"
        f" ON w.worker_id = r.worker WHERE r.state = 'running' AND l.value = {RUNNING_VALUE})"
        " FROM limits l ORDER BY 1, 2")]


@dataclass(frozen=True)
class Waiting:
    """Queued tasks that no live worker can take now, and why: ``count`` tasks needing
    ``needs`` (e.g. ``model=claude``), ``why`` (e.g. ``no live worker has it``)."""

    count: int
    needs: str
    why: str

    def __str__(self) -> str:
        return f"{self.count} waiting for {self.needs}: {self.why}"


def waiting(conn: Db, now_us: int | None = None,
            budget: BudgetLimits | None = None) -> list[Waiting]:
    """The queued tasks no live worker can claim, grouped by what they need and why: first
    those whose time has not come (a delay, a retry's backoff). With ``budget`` (the
    settings' limits and default reservation), also those whose reservation what is left of
    today's budget cannot cover."""
    now = system_clock_us() if now_us is None else now_us
    found = []
    later, first = conn.execute(
        "SELECT count(*), min(not_before) FROM queue INDEXED BY queue_waiting"
        " WHERE state = 'queued' AND not_before > ? AND deps_open = 0", (now,)).fetchone()
    if later:
        found.append(Waiting(later, "their time", f"a delay or a retry's backoff; the first "
                             f"at {iso_time(first)}"))
    held_back = bool(later)  # some queued tasks may not run now: the counts would say more
    for blocked, count in conn.execute(
            "SELECT blocked, count(*) FROM queue WHERE state = 'queued' AND deps_open > 0"
            " GROUP BY 1 ORDER BY 2 DESC, 1"):
        held_back = True
        found.append(Waiting(count, "their dependencies", f"blocked: {blocked}" if blocked
                             else "not completed yet"))
    for pause in model_pauses(conn):
        if pause.until is not None and pause.until <= now:
            continue
        (held,) = conn.execute(
            "SELECT count(*) FROM queue WHERE state = 'queued' AND deps_open = 0 AND model = ?"
            " AND (not_before IS NULL OR not_before <= ?)", (pause.model, now)).fetchone()
        if held:
            until = "until resumed" if pause.until is None else f"until {iso_time(pause.until)}"
            why = f" ({pause.reason})" if pause.reason else ""
            found.append(Waiting(held, f"model={pause.model}", f"the model is paused {until}"
                                 f"{why}"))
    for key, value, cap, running in limits_in_use(conn):
        if running < cap or key not in LIMIT_KEYS:
            continue
        (held,) = conn.execute(  # tasks naming the value; open ones depend on the worker
            f"SELECT count(*) FROM queue WHERE state = 'queued' AND deps_open = 0 AND {key} = ?"
            " AND (not_before IS NULL OR not_before <= ?)", (value, now)).fetchone()
        if held:
            found.append(Waiting(held, f"{key}={value}", f"its fleet-wide cap of {cap} is in "
                                 f"use ({running} running)"))
    if budget is not None:
        found.extend(_over_budget(conn, budget, now))
    if held_back:  # some wait for their time or their dependencies: count the others
        groups = conn.execute(
            "SELECT shard, model, type, has_command, count(*) FROM queue WHERE state = 'queued'"
            " AND deps_open = 0 AND (not_before IS NULL OR not_before <= ?)"
            " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC", (now,))
    else:  # every queued task may run now: the counts, the same cost at any backlog
        groups = conn.execute(
            "SELECT nullif(shard, ''), nullif(model, ''), nullif(type, ''), has_command, sum(n)"
            " FROM queue_counts WHERE state = 'queued' GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0"
            " ORDER BY 5 DESC, 1, 2, 3, 4")
    live = [w for w in workers(conn) if w.state in ACTIVE_WORKER_STATES]
    switch = read_killswitch(conn)
    for shard, model, type_, has_command, count in groups:
        wanted = {"shard": shard, "model": model, "type": type_}
        needs = ", ".join(f"{k}={v}" for k, v in wanted.items() if v is not None) or "any worker"
        if switch.active:
            found.append(Waiting(count, needs, f"the kill switch is on ({switch.reason})"))
            continue
        fit = [w for w in live if all(v is None or getattr(w, k) == v for k, v in wanted.items())]
        runnable = [w for w in fit if w.has_exec or has_command]
        if not live:
            why = "no live worker"
        elif not fit:
            why = "no live worker has it"
        elif not runnable:
            needs, why = f"{needs} and a command", (
                "the tasks carry no command and no live worker that fits runs --exec")
        elif all(w.pause_requested for w in runnable):
            why = "every worker that could take them is paused"
        else:
            continue
        found.append(Waiting(count, needs, why))
    return found


def _over_budget(conn: Db, budget: BudgetLimits, now: int) -> list[Waiting]:
    """Queued tasks (their time come, no dependency open) whose reservation what is left of
    today's budget cannot cover. Those with a budget of their own reserve what it has left
    and are read through their partial index; every other one reserves the default, so they
    are all held or none is, and are counted from the counts (no read of the queue's rows:
    ``status`` at a million queued tasks costs what it does at ten)."""
    today = today_budget(conn, budget, now)
    left = max(to_units(today.left), 0)
    default = to_units(budget.default_reservation)
    time_come = "deps_open = 0 AND (not_before IS NULL OR not_before <= ?)"
    budgeted, held, least = conn.execute(
        "SELECT count(*), coalesce(sum(CASE WHEN budget_units - spent_units > ? THEN 1 END), 0),"
        " min(CASE WHEN budget_units - spent_units > ? THEN budget_units - spent_units END)"
        " FROM queue INDEXED BY queue_budgeted"
        f" WHERE state = 'queued' AND budget_units IS NOT NULL AND {time_come}",
        (left, left, now)).fetchone()
    if default > left:
        (queued,) = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM queue_counts WHERE state = 'queued'").fetchone()
        (later,) = conn.execute(
            "SELECT count(*) FROM queue INDEXED BY queue_waiting"
            " WHERE state = 'queued' AND not_before > ? AND deps_open = 0", (now,)).fetchone()
        (blocked,) = conn.execute(
            "SELECT count(*) FROM queue INDEXED BY queue_blocked"
            " WHERE state = 'queued' AND deps_open > 0").fetchone()
        unbudgeted = queued - later - blocked - budgeted
        if unbudgeted > 0:
            held += unbudgeted
            least = default if least is None else min(least, default)
    if not held:
        return []
    return [Waiting(held, "today's budget", today.why_not(from_units(least), held))]


#: An estimate reads at most the latest this many completed tasks of a kind, among the latest
#: ``ESTIMATE_WINDOW`` tasks submitted.
ESTIMATE_SAMPLES = 500
ESTIMATE_WINDOW = 5000


def estimate(conn: Db, type_: str | None, model: str | None) -> Estimate | None:
    """What the latest completed tasks of this type and model (their own fields; '' or None
    for none) cost and took in their successful attempt, or None with fewer than
    ``MIN_SAMPLES``. A bounded read of the queue view: the latest ``ESTIMATE_WINDOW`` rows by
    their primary key, whatever the size of the queue or the log. (An index of completed
    tasks by kind would have cost every queue update of every claim: the claim's hot path.)"""
    found = conn.execute(
        "SELECT spent_units - claim_spent_units, ran_us FROM (SELECT state, type, model,"
        " spent_units, claim_spent_units, ran_us, submitted_position FROM queue"
        " ORDER BY submitted_position DESC LIMIT ?) latest"
        " WHERE state = 'completed' AND coalesce(type, '') = ? AND coalesce(model, '') = ?"
        " AND ran_us IS NOT NULL ORDER BY submitted_position DESC LIMIT ?",
        (ESTIMATE_WINDOW, type_ or "", model or "", ESTIMATE_SAMPLES)).fetchall()
    from tri24es import scheduling

    return scheduling.estimate([(from_units(units), ran / 1e6) for units, ran in found])


# --- spend ---------------------------------------------------------------------------------


def today_budget(conn: Db, own: BudgetLimits, now_us: int) -> TodayBudget:
    """Today's limit (the last budget watchdog's, else ``own``, plus today's allowance),
    today's spend, and what running attempts still hold of it: what a claim reserves from."""
    return TodayBudget(*(from_units(units) for units in today_units(conn, own, now_us)))


#: The last day's bounds per zone: a claim that reserves asks for them every time.
#: Keyed by the zone setting (None: the machine's, looked up only when the day is over).
_DAYS: dict[tzinfo | None, tuple[int, int]] = {}


def today_units(conn: Db, own: BudgetLimits, now_us: int) -> tuple[int, int, int]:
    """``today_budget`` in 1e-10 USD, for the claim: (limit, spent, reserved). One statement
    of two indexed lookups: the day's quarter-hour buckets and the running tasks."""
    switch = read_killswitch(conn)
    limits, _ = enforced_limits(switch, own)
    day = _DAYS.get(limits.timezone)
    if day is None or not day[0] <= now_us < day[1]:
        day = _DAYS[limits.timezone] = day_bounds(now_us, limits.zone())
    if day[0] % BUCKET_US or day[1] % BUCKET_US:  # a zone off the quarter-hours
        spent, held = period_units(conn, *day), outstanding_units(conn)
    else:
        spent, held = conn.execute(
            "SELECT (SELECT coalesce(sum(amount_units), 0) FROM spend_buckets"
            f" WHERE bucket_start >= ? AND bucket_start < ?), ({OUTSTANDING})", day).fetchone()
    return to_units(limits.daily_limit + allowance_at(switch, now_us)), int(spent), int(held)



def window_total(conn: Db, since_us: int, until_us: int) -> Decimal:
    """Spend that occurred in [since, until): one range over the (time, amount) index."""
    (units,) = conn.execute(
        "SELECT coalesce(sum(amount_units), 0) FROM spend"
        " WHERE occurred_at >= ? AND occurred_at < ?",
        (since_us, until_us),
    ).fetchone()
    return from_units(units)


def period_total(conn: Db, start_us: int, end_us: int) -> Decimal:
    """Spend in [start, end) for bounds on quarter-hours (any time zone's midnight is):
    at most 96 bucket rows a day, however many spend events there were."""
    return from_units(period_units(conn, start_us, end_us))


def period_units(conn: Db, start_us: int, end_us: int) -> int:
    """``period_total`` in 1e-10 USD."""
    if start_us % BUCKET_US or end_us % BUCKET_US:
        table, column = "spend", "occurred_at"
    else:
        table, column = "spend_buckets", "bucket_start"
    (units,) = conn.execute(
        f"SELECT coalesce(sum(amount_units), 0) FROM {table}"
        f" WHERE {column} >= ? AND {column} < ?", (start_us, end_us)).fetchone()
    return int(units)


def spend_totals(conn: Db) -> tuple[Decimal, int]:
    """All the spend ever recorded, and in how many records."""
    units, events = conn.execute(
        "SELECT coalesce(sum(amount_units), 0), coalesce(sum(events), 0) FROM spend_buckets"
    ).fetchone()
    return from_units(units), events


def spend_by(conn: Db, by: str, since_us: int, until_us: int) -> dict[str, Decimal]:
    """Spend in [since, until) grouped by model, worker or task (largest first); ``-`` for
    spend recorded without one."""
    if by not in SPEND_GROUPS:
        raise ValueError(f"cannot group spend by {by!r}")
    found = conn.execute(
        f"SELECT coalesce({by}, '-'), sum(amount_units) AS units FROM spend"
        " WHERE occurred_at >= ? AND occurred_at < ? GROUP BY 1 ORDER BY units DESC, 1",
        (since_us, until_us),
    )
    return {name: from_units(units) for name, units in found}


def task_spend(conn: Db, task_id: str, since_us: int = 0,
               until_us: int = 2**62) -> Decimal:
    """What was spent on a task, in [since, until) if given (e.g. during one attempt)."""
    (units,) = conn.execute(
        "SELECT coalesce(sum(amount_units), 0) FROM spend"
        " WHERE task = ? AND occurred_at >= ? AND occurred_at < ?",
        (task_id, since_us, until_us),
    ).fetchone()
    return from_units(units)


def per_minute(conn: Db, now: int, minutes: int) -> list[Decimal]:
    """Spend in each of the last ``minutes`` whole minutes up to ``now``, oldest first."""
    start = now - minutes * MINUTE_US
    buckets = [0] * minutes
    rows = conn.execute(
        "SELECT (occurred_at - ?) / ?, sum(amount_units) FROM spend"
        " WHERE occurred_at > ? AND occurred_at <= ? GROUP BY 1",
        (start + 1, MINUTE_US, start, now),
    )
    for index, units in rows:
        buckets[min(int(index), minutes - 1)] += units
    return [from_units(units) for units in buckets]


def read_budget(conn: Db, limits: BudgetLimits, now_us: int,
                window_seconds: int | None = None) -> Reading:
    """Window total and rate (the last ``window_seconds``, default the limits' window, which
    starts no earlier than a forced reset), today's total, and the kill switch: a handful of
    indexed lookups at any log size."""
    switch = read_killswitch(conn)
    window = window_seconds or limits.window_seconds
    since = (window_start(now_us, window, switch) if window_seconds is None
             else now_us - window * 1_000_000)
    total = window_total(conn, since, now_us + 1)
    start, end = day_bounds(now_us, limits.zone())
    daily = period_total(conn, start, end)
    shortened = since > now_us - window * 1_000_000
    return Reading(now_us, window, total, rate_per_min(total, window), daily, switch,
                   allowance_at(switch, now_us), switch.rate_since if shortened else None)


def window_spends(conn: Db, limits: BudgetLimits, now_us: int) -> list[tuple[int, Decimal]]:
    """The rate window's spend (as ``read_budget`` counts it), oldest first: when the rate
    falls below its limit (``budget.rate_clears_at``)."""
    since = window_start(now_us, limits.window_seconds, read_killswitch(conn))
    return [(at, from_units(units)) for at, units in conn.execute(
        "SELECT occurred_at, amount_units FROM spend WHERE occurred_at >= ? AND occurred_at < ?"
        " ORDER BY occurred_at", (since, now_us + 1))]


# --- the fleet in numbers: status, status --at, replay --until ------------------------------


@dataclass(frozen=True)
class FleetCounts:
    """Tasks by (state, priority rank), workers by state, all the spend, the kill switch, as
    of log position ``head``."""

    tasks: Counter[tuple[str, int]]
    workers: Counter[str]
    spend_total: Decimal
    spend_events: int
    killswitch: KillSwitchView
    head: int
    spend_lines_skipped: int = 0  # lines that reported spend but could not be read


def lines_skipped(conn: Db) -> int:
    """How many lines that reported spend could not be read (SpendLinesSkipped)."""
    (n,) = conn.execute("SELECT coalesce(sum(lines), 0) FROM spend_skipped").fetchone()
    return int(n)


def fleet_counts(conn: Db, head: int) -> FleetCounts:
    """The counts as the view tables hold them now."""
    total, events = spend_totals(conn)
    return FleetCounts(Counter(task_counts(conn)), worker_counts(conn), total, events,
                       read_killswitch(conn), head, lines_skipped(conn))


def folded_counts(views: Views) -> FleetCounts:
    """The counts of views folded in memory (a past position)."""
    units = events = 0
    for bucket_units, bucket_events in views.spend.buckets.values():
        units += bucket_units
        events += bucket_events
    return FleetCounts(
        Counter((row.state, row.priority) for row in views.queue.values()),
        Counter(row.state for row in views.workers.values()),
        from_units(units), events, views.killswitch, views.position,
        sum(views.spend.skipped.values()))


def counts_at(store: EventStore, point: int | datetime) -> FleetCounts:
    """The counts as they were at a log position, or at a time: the log folded up to the
    last event recorded then."""
    from tri24es.projections.fold import fold_log

    position = position_at(store, to_us(point)) if isinstance(point, datetime) else point
    return folded_counts(fold_log(store, until_position=position))


# --- a glance: top, metrics ----------------------------------------------------------------


@dataclass
class WorkerLine:
    worker_id: str
    state: str
    current_task: str | None
    last_seen: int


@dataclass
class Glance:
    """Everything ``top`` shows and ``metrics`` serves, read in one snapshot."""

    now: int
    head: int
    queue: Counter[tuple[str, int]]  # (state, priority rank) -> tasks
    workers: list[WorkerLine]
    spend_total: Decimal
    window_total: Decimal
    window_seconds: int
    rate_limit: Decimal  # USD per minute
    per_minute: list[Decimal]  # the last hour, oldest first
    killswitch: KillSwitchView
    recent: list[RecordedEvent] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)

    @property
    def rate(self) -> Decimal:
        """USD per minute over the budget window, as the watchdog computes it."""
        return rate_per_min(self.window_total, self.window_seconds)

    def workers_by_state(self) -> Counter[str]:
        return Counter(w.state for w in self.workers)


def glance(store: EventStore, conn: Db, limits: BudgetLimits, now: int, *, minutes: int = 60,
           recent: int = 10, explain: bool = True) -> Glance:
    """The fleet at ``now``: indexed lookups, the same cost at any log size."""
    head = store.head()
    lines = [WorkerLine(*row) for row in conn.execute(
        "SELECT worker_id, state, current_task, last_seen FROM workers ORDER BY worker_id")]
    window = limits.window_seconds
    switch = read_killswitch(conn)
    total, _ = spend_totals(conn)
    last = store.read_page(max(head - recent, 0), recent) if recent else []
    return Glance(now, head, Counter(task_counts(conn)), lines, total,
                  window_total(conn, window_start(now, window, switch), now + 1), window,
                  limits.rate_limit, per_minute(conn, now, minutes), switch, last,
                  waiting(conn, now, limits) if explain else [])
