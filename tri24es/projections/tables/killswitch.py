"""The kill switch table as readers see it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from tri24es.names import KILL_SWITCH_ACTIVATED, KILL_SWITCH_STREAM
from tri24es.projections.sql import Db, Rows, ViewsConnection, keep, kept

COLUMNS = ("active, reason, changed_at, changed_by, position, rate, daily, rate_since, "
           "allowance, allowance_start, allowance_end, watchdog")


#: The view's row (a row of NULLs when it has none).
WITH_VIEW = f"SELECT {COLUMNS} FROM (SELECT 1) AS one LEFT JOIN killswitch ON 1 = 1"
#: The view's row and the type of the kill switch stream's last event (``last_type``), in
#: one round trip on PostgreSQL (SQLite finds a stream by its origin: it asks the store).
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


def read_killswitch(conn: Db, found: Rows | None = None) -> KillSwitchView:
    """The kill switch. A view that says off is checked against the log (the stream's last
    event, one index step): someone who can write the database can turn the view off with
    one UPDATE, but not the switch, which stays on until a KillSwitchReset is recorded.
    (``found``: what ``WITH_LAST_TYPE`` returned, read ahead with others.)"""
    view: KillSwitchView | None = kept(conn, "killswitch", 1)
    if view is None:
        if not isinstance(conn, ViewsConnection):
            row = conn.execute(f"SELECT {COLUMNS} FROM killswitch").fetchone()
            return KillSwitchView() if row is None else KillSwitchView(bool(row[0]), *row[1:])
        # The view and the log's word in one statement (one round trip on PostgreSQL, where
        # a claim makes it under the write lock): the events table is beside the views on
        # both backends that keep views. The LEFT JOIN gives a row when the view has none.
        if found is not None:
            row = found.fetchone()
            last_type = row[-1]
        elif isinstance(conn.raw, sqlite3.Connection):  # no round trips: the store's own look
            row = (*conn.execute(WITH_VIEW).fetchone(), None)
            last_type = conn.tx.last_type(KILL_SWITCH_STREAM)
        else:
            row = conn.execute(WITH_LAST_TYPE, (KILL_SWITCH_STREAM,)).fetchone()
            last_type = row[-1]
        fresh = KillSwitchView() if row[0] is None else KillSwitchView(bool(row[0]), *row[1:-1])
        if not fresh.active and last_type == KILL_SWITCH_ACTIVATED:
            fresh = KillSwitchView(active=True, reason=VIEW_DISAGREES)
        view = keep(conn, "killswitch", 1, fresh)
    return view


#: The reason a kill switch read as on shows when only the log says so.
VIEW_DISAGREES = ("the log says the kill switch is on, its view says off (changed outside "
                  "tri24es: see `tri24es audit verify`)")
