"""Fleet-wide caps: at most N running tasks per model, shard or type.

The view holds the caps; how many run is counted from the queue and workers tables in the
claim's own transaction (``FULL_LIMITS``), so no fold has to know which worker ran what.
"""

from __future__ import annotations

from tri24es.events import Envelope, LimitRemoved, LimitSet
from tri24es.names import LimitKey
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db
from tri24es.projections.tables.limits import RUNNING_VALUE

DDL = """
CREATE TABLE IF NOT EXISTS limits (
    key    TEXT    NOT NULL,   -- model, shard or type
    value  TEXT    NOT NULL,
    cap    INTEGER NOT NULL,   -- at most this many running at once
    PRIMARY KEY (key, value)
) WITHOUT ROWID;
"""

LimitsView = dict[tuple[str, str], int]


#: The caps reached now, as a common table expression for the claim: ``full_limits(key,
#: value)``. Over an empty limits table it costs next to nothing.
FULL_LIMITS = (
    "full_limits AS MATERIALIZED (SELECT l.key, l.value FROM limits l WHERE l.cap <= ("
    " SELECT count(*) FROM queue r LEFT JOIN workers w ON w.worker_id = r.worker"
    f" WHERE r.state = 'running' AND l.value = {RUNNING_VALUE}))")

#: The claim's test that a queued task would exceed no cap if the worker took it (the three
#: parameters: the worker's model, shard and type). The claim runs it only when some cap or
#: pause exists.
UNDER_LIMITS = (
    " AND NOT EXISTS (SELECT 1 FROM full_limits f"
    " WHERE f.value = CASE f.key WHEN 'model' THEN coalesce(queue.model, ?)"
    " WHEN 'shard' THEN coalesce(queue.shard, ?) ELSE coalesce(queue.type, ?) END)")


class LimitsProjection(Projection[LimitsView]):
    name = "limits"
    ddl = DDL
    tables = ("limits",)
    handles = frozenset({LimitSet, LimitRemoved})

    def new_view(self) -> LimitsView:
        return {}

    def apply(self, view: LimitsView, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, LimitSet):
            view[event.key.value, event.value] = event.cap
        elif isinstance(event, LimitRemoved):
            view.pop((event.key.value, event.value), None)

    def load(self, conn: Db, envelope: Envelope) -> LimitsView | None:
        return read_limits(conn)

    def save(self, conn: Db, view: LimitsView) -> None:
        conn.execute("DELETE FROM limits")  # a handful of rows: rewritten whole
        conn.executemany("INSERT INTO limits VALUES (?, ?, ?)",
                         [(key, value, cap) for (key, value), cap in view.items()])

    def rows(self, view: LimitsView) -> dict[str, list[Row]]:
        return {"limits": sorted((key, value, cap) for (key, value), cap in view.items())}


def read_limits(conn: Db) -> LimitsView:
    return {(key, value): cap for key, value, cap in conn.execute(
        "SELECT key, value, cap FROM limits")}


LIMITS = LimitsProjection()
__all__ = ["FULL_LIMITS", "LIMITS", "RUNNING_VALUE", "UNDER_LIMITS", "LimitKey", "LimitsView",
           "read_limits"]
