"""The kill switch: active or not, why, when, by whom, and the event that set it; and what
resets left behind for the budget: a fresh rate window (``--force``) and today's allowance;
and the limits the last budget watchdog started with (what a reset is checked against)."""

from __future__ import annotations

import operator
from dataclasses import fields
from decimal import Decimal

import orjson

from tri24es.events import (
    BudgetWatchdogStarted,
    Envelope,
    Event,
    KillSwitchActivated,
    KillSwitchReset,
)
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db, keep
from tri24es.projections.tables.killswitch import COLUMNS, KillSwitchView, read_killswitch
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

SAVE = (
    f"INSERT INTO killswitch (id, {COLUMNS}) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS.split(", "))
)





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






KILLSWITCH = KillSwitchProjection()
