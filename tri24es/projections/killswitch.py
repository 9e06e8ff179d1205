"""The kill switch: active or not, why, when, by whom, and the event that set it; and what
resets left behind for the budget: a fresh rate window (``--force``) and today's allowance;
and the limits the last budget watchdog started with (what a reset is checked against)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from decimal import Decimal

import orjson

from tri24es.events import (
    KILL_SWITCH_STREAM,
    BudgetWatchdogStarted,
    Envelope,
    Event,
    KillSwitchActivated,
    KillSwitchReset,
)
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db, ViewsConnection, keep, kept
from tri24es.timeutil import to_us

DDL = """
CREATE TABLE IF NOT EXISTS killswitch (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    active      INTEGER NOT NULL,
    reason      TEXT,
    changed_at  INTEGER,   -- microseconds since the epoch
    changed_by  TEXT,
    position    INTEGER,   -- of the event that set the current state
    rate        TEXT,      -- USD/min at activation
    daily       TEXT,      -- USD today at activation
    rate_since  INTEGER,   -- microseconds: spend before it does not count toward the rate
    allowance   TEXT,      -- USD allowed over the daily limit in [allowance_start, _end)
    allowance_start INTEGER,
    allowance_end   INTEGER,
    watchdog    TEXT       -- JSON: the last BudgetWatchdogStarted, with its time ("at")
);
"""

COLUMNS = ("active, reason, changed_at, changed_by, position, rate, daily, rate_since, "
           "allowance, allowance_start, allowance_end, watchdog")
SAVE = (
    f"INSERT INTO killswitch (id, {COLUMNS}) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS.split(", "))
)

#: The view's row, and the type of the kill switch stream's last event (``last_type``).
WITH_LAST_TYPE = (
    f"SELECT {COLUMNS}, (SELECT type FROM events WHERE stream = ? ORDER BY version DESC"
    " LIMIT 1) FROM (SELECT 1) AS one LEFT JOIN killswitch ON 1 = 1")


@dataclass(slots=True)
class KillSwitchView:
    active: bool = False
    reason: str | None = None
    changed_at: int | None = None
    by: str | None = None
    position: int | None = None
    rate: str | None = None
    daily: str | None = None
    rate_since: int | None = None  # the last forced reset (it outlives later activations)
    allowance: str | None = None  # USD, for the day below
    allowance_start: int | None = None
    allowance_end: int | None = None
    watchdog: str | None = None  # JSON of the last BudgetWatchdogStarted, and "at"


# attrgetter: much cheaper than dataclasses.astuple, which deep-copies every field.
_as_tuple = operator.attrgetter(*(f.name for f in fields(KillSwitchView)))


class KillSwitchProjection(Projection[KillSwitchView]):
    name = "killswitch"
    ddl = DDL
    tables = ("killswitch",)
    handles: frozenset[type[Event]] = frozenset(
        (KillSwitchActivated, KillSwitchReset, BudgetWatchdogStarted))

    def new_view(self) -> KillSwitchView:
        return KillSwitchView()

    def apply(self, view: KillSwitchView, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, BudgetWatchdogStarted):
            view.watchdog = orjson.dumps(
                {**event.model_dump(mode="json"), "at": envelope.recorded_at}).decode()
            return
        if isinstance(event, KillSwitchActivated):
            view.active, view.reason, view.by = True, event.reason, None
            view.rate, view.daily = str(event.rate), str(event.daily)
        elif isinstance(event, KillSwitchReset):
            view.active, view.reason, view.by = False, event.reason, event.by
            view.rate = view.daily = None
            if event.rate_window_start is not None:
                view.rate_since = to_us(event.rate_window_start)
            if event.allow_today is not None and event.day_start and event.day_end:
                _allow(view, event.allow_today, to_us(event.day_start), to_us(event.day_end))
        else:
            return
        view.changed_at, view.position = envelope.recorded_at, envelope.position

    def load(self, conn: Db, envelope: Envelope) -> KillSwitchView | None:
        if not isinstance(envelope.event,
                          KillSwitchActivated | KillSwitchReset | BudgetWatchdogStarted):
            return None
        return read_killswitch(conn)

    def save(self, conn: Db, view: KillSwitchView) -> None:
        row = _as_tuple(view)
        conn.execute(SAVE, (int(view.active), *row[1:]))
        keep(conn, "killswitch", 1, view, saved=True)

    def rows(self, view: KillSwitchView) -> dict[str, list[Row]]:
        if view == KillSwitchView():  # nothing recorded yet: no row
            return {"killswitch": []}
        return {"killswitch": [(1, int(view.active), *_as_tuple(view)[1:])]}


def _allow(view: KillSwitchView, amount: Decimal, start: int, end: int) -> None:
    """Allowances for one day add up; one for another day replaces them."""
    earlier = Decimal(view.allowance or 0) if view.allowance_start == start else Decimal(0)
    view.allowance, view.allowance_start, view.allowance_end = str(earlier + amount), start, end


def read_killswitch(conn: Db) -> KillSwitchView:
    """The kill switch. A view that says off is checked against the log (the stream's last
    event, one index step): someone who can write the database can turn the view off with
    one UPDATE, but not the switch, which stays on until a KillSwitchReset is recorded."""
    view: KillSwitchView | None = kept(conn, "killswitch", 1)
    if view is None:
        if not isinstance(conn, ViewsConnection):
            row = conn.execute(f"SELECT {COLUMNS} FROM killswitch").fetchone()
            return KillSwitchView() if row is None else KillSwitchView(bool(row[0]), *row[1:])
        # The view and the log's word in one statement (one round trip on PostgreSQL, where
        # a claim makes it under the write lock): the events table is beside the views on
        # both backends that keep views. The LEFT JOIN gives a row when the view has none.
        row = conn.execute(WITH_LAST_TYPE, (KILL_SWITCH_STREAM,)).fetchone()
        fresh = KillSwitchView() if row[0] is None else KillSwitchView(bool(row[0]), *row[1:-1])
        if not fresh.active and row[-1] == KillSwitchActivated.topic:
            fresh = KillSwitchView(active=True, reason=VIEW_DISAGREES)
        view = keep(conn, "killswitch", 1, fresh)
    return view


#: The reason a kill switch read as on shows when only the log says so.
VIEW_DISAGREES = ("the log says the kill switch is on, its view says off (changed outside "
                  "tri24es: see `tri24es audit verify`)")


KILLSWITCH = KillSwitchProjection()
