"""Recurring tasks: one row per schedule, with the task it makes at each of its slots."""

from __future__ import annotations

from dataclasses import dataclass

from tri24es.events import Envelope, ScheduleAdded, ScheduleRemoved
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db

DDL = """
CREATE TABLE IF NOT EXISTS schedules (
    name      TEXT    PRIMARY KEY,
    cron      TEXT    NOT NULL,
    timezone  TEXT    NOT NULL,
    added_at  INTEGER NOT NULL,   -- µs: no slot before it is fired
    position  INTEGER NOT NULL,   -- of the ScheduleAdded: the task template is that event
    version   INTEGER NOT NULL    -- the schedule stream's version
) WITHOUT ROWID;
"""

COLUMNS = "name, cron, timezone, added_at, position, version"


@dataclass(slots=True, frozen=True)
class ScheduleRow:
    name: str
    cron: str
    timezone: str
    added_at: int
    position: int
    version: int


SchedulesView = dict[str, ScheduleRow | None]  # None: removed (kept to be deleted inline)


class SchedulesProjection(Projection[SchedulesView]):
    name = "schedules"
    ddl = DDL
    tables = ("schedules",)
    handles = frozenset({ScheduleAdded, ScheduleRemoved})

    def new_view(self) -> SchedulesView:
        return {}

    def apply(self, view: SchedulesView, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, ScheduleAdded):
            view[event.name] = ScheduleRow(event.name, event.cron, event.timezone,
                                           envelope.recorded_at, envelope.position,
                                           envelope.version)
        elif isinstance(event, ScheduleRemoved):
            view[event.name] = None

    def load(self, conn: Db, envelope: Envelope) -> SchedulesView | None:
        name: str = envelope.event.name  # type: ignore[attr-defined]
        return {name: load_schedule(conn, name)}

    def save(self, conn: Db, view: SchedulesView) -> None:
        for name, row in view.items():
            conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            if row is not None:
                conn.execute(f"INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                             (row.name, row.cron, row.timezone, row.added_at, row.position,
                              row.version))

    def rows(self, view: SchedulesView) -> dict[str, list[Row]]:
        return {"schedules": sorted(
            (r.name, r.cron, r.timezone, r.added_at, r.position, r.version)
            for r in view.values() if r is not None)}


def load_schedule(conn: Db, name: str) -> ScheduleRow | None:
    found = conn.execute(f"SELECT {COLUMNS} FROM schedules WHERE name = ?", (name,)).fetchone()
    return None if found is None else ScheduleRow(*found)


def all_schedules(conn: Db) -> list[ScheduleRow]:
    return [ScheduleRow(*r) for r in conn.execute(
        f"SELECT {COLUMNS} FROM schedules ORDER BY name")]


SCHEDULES = SchedulesProjection()
