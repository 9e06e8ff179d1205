"""The views of the log: queue, workers, spend, kill switch (DESIGN.md §5).

They are applied *inline*, in the transaction of the append, so a reader never sees a view
older than the log; a checkpoint per projection records the last position applied.
``upkeep`` creates them, catches them up and applies events inline; ``rebuild`` and
``verify`` (there too) fold the whole log again from scratch. Each projection's fold is its
module (``queue.py``, ...); what readers of its table need is in ``tables/``.

This package itself holds only what a read needs to trust the views, ``up_to_date``: a read
command that finds them current loads no fold and no event catalog.
"""

from __future__ import annotations

from eventlog import EventStore, Transaction
from tri24es.projections.sql import ViewsConnection, has_table, views_db

#: Bump when the shape of a view table changes: stores made before are rebuilt from the log.
#: 8: the queue fold applies a TaskUpdated's command and agent (``has_command``), which an
#: edited queue file records; views folded by an older version are not trusted with it.
#: 9: the queue keeps each claim's reservation, its spend at the claim, its time and the
#: attempt's duration (reservations and estimates).
#: 10: an index of the queued tasks that have a budget of their own (``queue_budgeted``).
VIEWS_VERSION = 10
VIEWS_VERSION_DDL = "CREATE TABLE IF NOT EXISTS views_version (version INTEGER NOT NULL)"

CHECKPOINTS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID
"""



def connection_of(tx: Transaction) -> ViewsConnection:
    """The transaction's connection for the view tables kept in it, with the rows read in it."""
    found: ViewsConnection | None = tx.scratch.get(ViewsConnection)
    if found is None:
        found = tx.scratch[ViewsConnection] = ViewsConnection(views_db(tx.connection), tx)
    return found


def up_to_date(store: EventStore) -> bool:
    """Are the views of this version and caught up with the log? Read in a snapshot, so that
    the common case takes no write lock."""
    with store.snapshot() as tx:
        conn = connection_of(tx)
        if not (has_table(conn, "views_version") and has_table(conn, "checkpoints")):
            return False  # a new store
        (version,) = conn.execute("SELECT version FROM views_version").fetchone() or (None,)
        (behind,) = conn.execute("SELECT min(position) FROM checkpoints").fetchone()
        return bool(version == VIEWS_VERSION and behind is not None and behind >= store.head())
