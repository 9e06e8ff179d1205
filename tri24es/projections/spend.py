"""Spend: one row per SpendRecorded (indexed by time) plus 15-minute totals.

Amounts are kept as integers of 1e-10 dollars (``Money`` has at most ten decimal places), so
SQL sums are exact. Daily totals in any time zone are a sum of at most 96 quarter-hour
buckets, whatever the number of spend events, and the rolling window is an indexed range.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Any

from tri24es.events import Envelope, SpendLinesSkipped, SpendRecorded
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db
from tri24es.projections.tables.money import BUCKET_US, UNITS_PER_USD
from tri24es.timeutil import to_us

DDL = """
CREATE TABLE IF NOT EXISTS spend (
    position      INTEGER PRIMARY KEY,  -- of the SpendRecorded event
    occurred_at   INTEGER NOT NULL,     -- microseconds since the epoch
    amount_units  INTEGER NOT NULL,     -- 1e-10 USD
    model         TEXT,
    worker        TEXT,
    task          TEXT,
    source        TEXT NOT NULL,
    flagged       TEXT
);
CREATE INDEX IF NOT EXISTS spend_by_time ON spend (occurred_at, amount_units);
CREATE TABLE IF NOT EXISTS spend_buckets (
    bucket_start  INTEGER PRIMARY KEY,  -- microseconds, a multiple of 15 minutes
    amount_units  INTEGER NOT NULL,
    events        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS spend_skipped (
    source        TEXT PRIMARY KEY,     -- "worker" (agent output), "spend.jsonl"
    lines         INTEGER NOT NULL      -- lines that looked like spend but could not be read
);
"""






@dataclass(slots=True)
class SpendRow:
    position: int
    occurred_at: int
    amount_units: int
    model: str | None
    worker: str | None
    task: str | None
    source: str
    flagged: str | None


# attrgetter: much cheaper than dataclasses.astuple, which deep-copies every field.
_as_tuple = operator.attrgetter(*(f.name for f in fields(SpendRow)))


@dataclass(slots=True)
class SpendView:
    rows: dict[int, SpendRow] = field(default_factory=dict)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # start -> [units, events]
    skipped: dict[str, int] = field(default_factory=dict)  # source -> unreadable lines


class SpendProjection(Projection[SpendView]):
    name = "spend"
    ddl = DDL
    tables = ("spend", "spend_buckets", "spend_skipped")
    handles = frozenset({SpendRecorded, SpendLinesSkipped})

    def new_view(self) -> SpendView:
        return SpendView()

    def apply(self, view: SpendView, envelope: Envelope) -> None:
        event = envelope.event
        if not isinstance(event, SpendRecorded):
            if isinstance(event, SpendLinesSkipped):
                view.skipped[event.source] = view.skipped.get(event.source, 0) + event.count
            return
        occurred = to_us(event.occurred_at)
        units = int(event.amount * UNITS_PER_USD)  # to_units, inlined: a replay calls it a lot
        position = envelope.position
        view.rows[position] = SpendRow(
            position, occurred, units, event.model, event.worker, event.task,
            event.source, event.flagged,
        )
        start = occurred - occurred % BUCKET_US
        bucket = view.buckets.get(start)
        if bucket is None:
            view.buckets[start] = [units, 1]
        else:
            bucket[0] += units
            bucket[1] += 1

    def spill(self, conn: Db, view: SpendView) -> None:
        # A spend row never changes once written: out it goes. The quarter-hour buckets (96 a
        # day of spend) and the skipped lines stay until ``finish``.
        if view.rows:
            conn.executemany("INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [_as_tuple(r) for r in view.rows.values()])
            view.rows.clear()

    def finish(self, conn: Db, view: SpendView) -> None:
        self.spill(conn, view)
        self.write_all(conn, view)

    def pack(self, view: SpendView) -> Any:
        # Pickling a row object costs three times as much as its tuple.
        return [_as_tuple(row) for row in view.rows.values()], view.buckets, view.skipped

    def unpack(self, packed: Any) -> SpendView:
        rows, buckets, skipped = packed
        return SpendView({row[0]: SpendRow(*row) for row in rows}, buckets, skipped)

    def load(self, conn: Db, envelope: Envelope) -> SpendView | None:
        event = envelope.event
        if isinstance(event, SpendLinesSkipped):
            found = conn.execute("SELECT lines FROM spend_skipped WHERE source = ?",
                                 (event.source,)).fetchone()
            return SpendView(skipped={event.source: found[0]} if found else {})
        if not isinstance(event, SpendRecorded):
            return None
        occurred = to_us(event.occurred_at)
        start = occurred - occurred % BUCKET_US
        found = conn.execute(
            "SELECT amount_units, events FROM spend_buckets WHERE bucket_start = ?", (start,)
        ).fetchone()
        return SpendView(buckets={start: list(found)} if found else {})

    def save(self, conn: Db, view: SpendView) -> None:
        conn.executemany(
            "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_as_tuple(r) for r in view.rows.values()],
        )
        conn.executemany(
            "INSERT INTO spend_buckets VALUES (?, ?, ?) ON CONFLICT (bucket_start) DO UPDATE"
            " SET amount_units = excluded.amount_units, events = excluded.events",
            [(start, units, count) for start, (units, count) in view.buckets.items()],
        )
        if view.skipped:
            conn.executemany(
                "INSERT INTO spend_skipped VALUES (?, ?) ON CONFLICT (source) DO UPDATE"
                " SET lines = excluded.lines", list(view.skipped.items()))

    def rows(self, view: SpendView) -> dict[str, list[Row]]:
        return {
            "spend": sorted(_as_tuple(r) for r in view.rows.values()),
            "spend_buckets": sorted((s, u, n) for s, (u, n) in view.buckets.items()),
            "spend_skipped": sorted(view.skipped.items()),
        }


SPEND = SpendProjection()
