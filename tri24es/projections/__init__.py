"""The views of the log: queue, workers, spend, kill switch (DESIGN.md §5).

They are applied *inline*, in the transaction of the append, so a reader never sees a view
older than the log; a checkpoint per projection records the last position applied.
``rebuild`` and ``verify`` fold the whole log again from scratch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from eventlog import EventStore, Transaction
from tri24es.events import Envelope, Event
from tri24es.projections.base import Projection, Row
from tri24es.projections.fold import (
    PROJECTIONS,
    Views,
    decode_skipping,
    fold_log,
    fold_projections,
)
from tri24es.projections.killswitch import KILLSWITCH, KillSwitchView, read_killswitch
from tri24es.projections.queue import QUEUE, QueueView, TaskRow
from tri24es.projections.spend import SPEND, SpendView
from tri24es.projections.sql import Db, ViewsConnection, has_table, views_db
from tri24es.projections.workers import WORKERS, WorkerRow, WorkersView

#: Bump when the shape of a view table changes: stores made before are rebuilt from the log.
VIEWS_VERSION = 7
VIEWS_VERSION_DDL = "CREATE TABLE IF NOT EXISTS views_version (version INTEGER NOT NULL)"

CHECKPOINTS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID
"""

__all__ = [
    "KILLSWITCH",
    "PROJECTIONS",
    "QUEUE",
    "SPEND",
    "WORKERS",
    "KillSwitchView",
    "QueueView",
    "SpendView",
    "TaskRow",
    "Views",
    "WorkerRow",
    "WorkersView",
    "apply_inline",
    "connection_of",
    "fold_log",
    "install",
    "read_killswitch",
    "rebuild",
    "verify",
]


def connection_of(tx: Transaction) -> ViewsConnection:
    """The transaction's connection for the view tables kept in it, with the rows read in it."""
    found: ViewsConnection | None = tx.scratch.get(ViewsConnection)
    if found is None:
        found = tx.scratch[ViewsConnection] = ViewsConnection(views_db(tx.connection), tx)
    return found


_COMMENT = re.compile(r"--[^\n]*")


def _run_ddl(conn: Db, ddl: str) -> None:
    # Statement by statement: sqlite3's executescript would commit the open transaction.
    # Comments go first, so that one may hold a ";" (the DDL has no string literals).
    for statement in _COMMENT.sub("", ddl).split(";"):
        if statement.strip():
            conn.execute(statement)


def _up_to_date(store: EventStore) -> bool:
    """Are the views of this version and caught up with the log? Read in a snapshot, so that
    the common case takes no write lock."""
    with store.snapshot() as tx:
        conn = connection_of(tx)
        if not (has_table(conn, "views_version") and has_table(conn, "checkpoints")):
            return False  # a new store
        (version,) = conn.execute("SELECT version FROM views_version").fetchone() or (None,)
        (behind,) = conn.execute("SELECT min(position) FROM checkpoints").fetchone()
        return bool(version == VIEWS_VERSION and behind is not None and behind >= store.head())


def install(store: EventStore) -> None:
    """Create the view tables and checkpoints, and apply any events they have not seen.

    Views are disposable: when their tables were made by a version of tri24es with another
    ``VIEWS_VERSION``, they are dropped and rebuilt from the log."""
    if _up_to_date(store):
        return
    with store.transaction() as tx:
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
    # executemany: on PostgreSQL it goes out with the COMMIT (see PostgresViews.executemany)
    conn.executemany("UPDATE checkpoints SET position = ? WHERE position < ?",
                     [(position, position)])


def rebuild(
    store: EventStore, progress: Callable[[int], None] | None = None
) -> Views:
    """Replace every view table with a fresh fold of the whole log, in one transaction."""
    install(store)
    with store.transaction() as tx:
        return _refill(store, connection_of(tx), progress)


def _refill(
    store: EventStore, conn: Db, progress: Callable[[int], None] | None = None
) -> Views:
    """Fold the whole log in memory and write every view table from it, in bulk."""
    views = fold_log(store, progress=progress)
    for projection, view in zip(PROJECTIONS, views.by_projection().values(), strict=True):
        projection.clear(conn)
        projection.write_all(conn, view)
    conn.execute("UPDATE checkpoints SET position = ?", (views.position,))
    return views


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
