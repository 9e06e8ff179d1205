"""Keeping the views: creating their tables, catching them up with the log (``install``),
applying events inline in the transaction of their append (``apply_inline``), and folding the
whole log again (``rebuild``, ``verify``)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventlog import EventStore
from tri24es.events import Envelope, Event
from tri24es.projections import (
    CHECKPOINTS_DDL,
    VIEWS_VERSION,
    VIEWS_VERSION_DDL,
    connection_of,
    fold,
    up_to_date,
)
from tri24es.projections.base import Projection, Row
from tri24es.projections.fold import (
    PROJECTIONS,
    decode_skipping,
    fold_log,
    fold_projections,
)
from tri24es.projections.sql import CARRIED_ROWS, Db, ViewsConnection

_COMMENT = re.compile(r"--[^\n]*")


def _run_ddl(conn: Db, ddl: str) -> None:
    # Statement by statement: sqlite3's executescript would commit the open transaction.
    # Comments go first, so that one may hold a ";" (the DDL has no string literals).
    for statement in _COMMENT.sub("", ddl).split(";"):
        if statement.strip():
            conn.execute(statement)


def install(store: EventStore) -> None:
    """Create the view tables and checkpoints, and apply any events they have not seen.

    Views are disposable: when their tables were made by a version of tri24es with another
    ``VIEWS_VERSION``, they are dropped and rebuilt from the log."""
    if up_to_date(store):
        return
    # Without the map: a store whose views are outdated is refilled from the whole log here.
    with _without_mmap(store), store.transaction() as tx:
        conn = connection_of(tx)
        _run_ddl(conn, VIEWS_VERSION_DDL)
        found = conn.execute("SELECT version FROM views_version").fetchone()
        outdated = found is None or found[0] != VIEWS_VERSION
        if outdated:
            for table in (*(t for p in PROJECTIONS for t in p.tables), "checkpoints"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM views_version")
            conn.execute("INSERT INTO views_version VALUES (?)", (VIEWS_VERSION,))
        for projection in PROJECTIONS:
            _run_ddl(conn, projection.ddl)
        _run_ddl(conn, CHECKPOINTS_DDL)
        conn.executemany(
            "INSERT INTO checkpoints VALUES (?, 0) ON CONFLICT DO NOTHING",
            [(p.name,) for p in PROJECTIONS],
        )
        if outdated:
            _refill(store, conn)
            return
        behind = min(position for (position,) in conn.execute("SELECT position FROM checkpoints"))
        if behind < store.head():
            for page in store.read_pages(behind):
                apply_inline(conn, decode_skipping(page))


def _handlers(projections: Iterable[Projection[Any]]) -> dict[type[Event], list[Any]]:
    """Event type -> the projections it can change: the others never see it."""
    handlers: dict[type[Event], list[Any]] = {}
    for projection in projections:
        for event_type in projection.handles:
            handlers.setdefault(event_type, []).append(projection)
    return handlers


HANDLERS = _handlers(PROJECTIONS)
NOBODY: list[Projection[Any]] = []


def apply_inline(conn: ViewsConnection, envelopes: Iterable[Envelope]) -> None:
    """Apply just-appended events to the view tables, inside the appending transaction."""
    last = None
    for envelope in envelopes:
        for projection in HANDLERS.get(type(envelope.event), NOBODY):
            view = projection.load(conn, envelope)
            if view is not None:
                projection.apply(view, envelope)
                projection.save(conn, view)
        last = envelope.position
    if last is None:
        return
    # The checkpoint: once per transaction, just before it commits, however many appends.
    if conn.applied_up_to is None:
        conn.tx.before_commit(lambda: _save_checkpoint(conn))
    conn.applied_up_to = last


def _save_checkpoint(conn: ViewsConnection) -> None:
    position = conn.applied_up_to
    carry = conn.tx.carry
    if carry is not None and len(conn.rows) > CARRIED_ROWS:
        carry.pop(ViewsConnection, None)
    # executemany: on PostgreSQL it goes out with the COMMIT (see PostgresViews.executemany)
    conn.executemany("UPDATE checkpoints SET position = ? WHERE position < ?",
                     [(position, position)])


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild wrote: the position it folded to, and a few counts to report."""

    position: int
    tasks: int
    workers: int
    spend_events: int
    killswitch_active: bool


def rebuild(
    store: EventStore, progress: Callable[[int], None] | None = None,
    every: int = fold.SPILL_EVENTS,
) -> Rebuilt:
    """Replace every view table with a fresh fold of the whole log, in one transaction: a
    rebuild stopped anywhere (even by SIGKILL) leaves the views as they were. The fold is
    written a batch of ``every`` events at a time, so its memory does not grow with the log."""
    install(store)
    with _without_mmap(store), store.transaction() as tx:
        return _refill(store, connection_of(tx), progress, every)


def _refill(
    store: EventStore, conn: Db, progress: Callable[[int], None] | None = None,
    every: int = fold.SPILL_EVENTS,
) -> Rebuilt:
    """Empty every view table and fold the whole log into it, page by page."""
    # Not the transaction's ViewsConnection: its row cache is for the live path's commands
    # (and would keep every row a replay touched until the commit).
    raw = conn.raw if isinstance(conn, ViewsConnection) else conn
    if isinstance(conn, ViewsConnection):  # every row is written anew
        conn.rows.clear()
        conn.carried = {}
    for projection in PROJECTIONS:
        projection.clear(raw)
    until = store.head()
    kept_whole = fold.spill_log(store, raw, until, progress, every)
    raw.execute("UPDATE checkpoints SET position = ?", (until,))
    (tasks,) = raw.execute("SELECT count(*) FROM queue").fetchone()
    (spend_events,) = raw.execute("SELECT count(*) FROM spend").fetchone()
    return Rebuilt(until, int(tasks), len(kept_whole["workers"]), int(spend_events),
                   kept_whole["killswitch"].active)


@contextlib.contextmanager
def _without_mmap(store: EventStore) -> Iterator[None]:
    """SQLite reads the log through plain reads for the while: mapped pages of the file count
    in the resident set, so a scan of the whole log would grow it by up to the map's size
    (256 MB) though the fold holds a batch. The map is given back afterwards."""
    with store.snapshot() as tx:
        db = tx.connection
        size = None
        if isinstance(db, sqlite3.Connection):
            (size,) = db.execute("PRAGMA mmap_size").fetchone()
            db.execute("PRAGMA mmap_size = 0")
    if size is None:  # no map: PostgreSQL
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):  # a store closed or gone meanwhile
            db.execute(f"PRAGMA mmap_size = {int(size)}")


def verify(store: EventStore, progress: Callable[[int], None] | None = None,
           only: Sequence[Projection[Any]] | None = None) -> list[str]:
    """Fold the log into a scratch copy and list every row where the live tables differ
    (of every view, or ``only`` those: a fold of just their events)."""
    install(store)
    with store.transaction() as tx:  # a consistent snapshot: no commit can land meanwhile
        conn = connection_of(tx)
        if only is None:
            folded = fold_log(store, progress=progress).by_projection()
        else:
            folded = fold_projections(store, only, store.head(), progress)
        differences = []
        for projection in only or PROJECTIONS:
            expected = projection.rows(folded[projection.name])
            live = projection.read_rows(conn)
            for table, rows in expected.items():
                differences.extend(_diff(table, rows, live[table]))
    return differences


def _diff(table: str, expected: list[Row], live: list[Row]) -> list[str]:
    want, have = set(expected), set(live)
    missing = sorted(want - have, key=repr)
    extra = sorted(have - want, key=repr)
    return [f"{table}: missing {row!r}" for row in missing] + [
        f"{table}: unexpected {row!r}" for row in extra
    ]
