"""One SQL dialect for the view tables, on SQLite and on PostgreSQL.

The views are written in the store's own transaction, through the backend's own connection.
Their SQL is written once, for SQLite (``?`` parameters, ``INTEGER``, ``INDEXED BY`` hints,
``WITHOUT ROWID``), in the subset both databases share otherwise (``INSERT ... ON CONFLICT``,
partial indexes, ``coalesce``). On PostgreSQL each statement is translated once and cached:
a few textual rules rather than a query builder, because the statements are few and fixed.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

from eventlog import Transaction
from tri24es.errors import Tri24esError

R = TypeVar("R")


class ViewsUnavailable(Tri24esError):
    """The views cannot be kept on this store."""


class Rows(Protocol):
    """What a query returns: its rows, one or all."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """The part of a DB-API connection the views use (``sqlite3.Connection`` is one)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"%"), "%%"),  # psycopg reads % as the start of a placeholder
    (re.compile(r"\?"), "%s"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),  # microseconds and 1e-10 USD units pass 2**31
    (re.compile(r"\s+INDEXED BY \w+"), ""),  # a SQLite planner hint
    (re.compile(r"\s+WITHOUT ROWID"), ""),  # a SQLite storage choice
)


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """The statement in PostgreSQL's dialect."""
    for pattern, replacement in _RULES:
        sql = pattern.sub(replacement, sql)
    return sql


class PostgresViews:
    """A psycopg connection that takes the views' SQLite-dialect statements."""

    __slots__ = ("_conn", "_query")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        # The store's own connection runs a statement without psycopg's cursor (and sends
        # the writes it holds with it): eventlog.pgpipe. Any other takes psycopg's execute.
        self._query = getattr(conn, "query", None) or conn.execute

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        rows: Rows = self._query(to_postgres(sql), parameters)
        return rows

    def read_together(self, reads: Sequence[tuple[str, Sequence[Any]]]) -> list[Rows] | None:
        run = getattr(self._conn, "run", None)
        if run is None:
            return None
        found: list[Rows] = run([(to_postgres(sql), parameters) for sql, parameters in reads])
        return found

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object:
        # The views' writes (nothing reads what executemany returns) wait for the store's
        # next round trip when its connection can hold them (eventlog.pgpipe).
        defer = getattr(self._conn, "defer", None)
        if defer is not None:
            defer(to_postgres(sql), list(parameters))
            return None
        with self._conn.cursor() as cursor:
            cursor.executemany(to_postgres(sql), parameters)
        return None


@functools.cache
def _numeric_as_int_loader() -> type:
    """A psycopg loader for NUMERIC that returns an int when the value is whole.

    The views store only integers, but PostgreSQL sums BIGINTs as NUMERIC: without this a
    ``sum()`` would come back as a Decimal on PostgreSQL and an int on SQLite."""
    from psycopg.adapt import Loader

    class NumericAsInt(Loader):
        def load(self, data: Any) -> int | Decimal:
            text = bytes(data).decode()
            return Decimal(text) if "." in text or "N" in text else int(text)

    return NumericAsInt


def views_db(conn: object) -> Db:
    """The connection of a store's transaction, as the views use it."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    # (the store's own connection is a subclass of psycopg's: eventlog.postgres)
    if any(c.__module__.startswith("psycopg") for c in type(conn).__mro__):
        adapters: Any = getattr(conn, "adapters")  # noqa: B009 - psycopg is an optional extra
        if adapters.get_loader(1700, 0) is not _numeric_as_int_loader():  # 1700: numeric, text
            adapters.register_loader("numeric", _numeric_as_int_loader())
        return PostgresViews(conn)
    raise ViewsUnavailable(
        "the views (queue, workers, spend, kill switch) need a SQLite or PostgreSQL store; "
        "the in-memory backend keeps the event log only"
    )


class ViewsConnection:
    """The views' connection within one transaction, with the rows read and changed in it.

    A command reads the rows it decides on (the task it completes, the worker that claims);
    the inline projections then apply its events to those same row objects instead of
    reading them again: a claim-and-complete makes four statements fewer (four round trips
    on PostgreSQL). The rows live as long as the transaction, so nothing outlives a commit
    or a rollback, and a row is cached only once read or written in this transaction."""

    __slots__ = ("_held", "applied_up_to", "carried", "execute", "executemany", "raw", "rows",
                 "tx")

    def __init__(self, raw: Db, tx: Transaction) -> None:
        self.raw = raw
        self.tx = tx
        #: The last position the views were brought to in this transaction (saved as the
        #: checkpoint when it commits).
        self.applied_up_to: int | None = None
        # The backend's own bound methods: no call layer of ours on the hot path (while no
        # write is held back: see ``held``).
        self.execute: Callable[..., Rows] = raw.execute
        self.executemany: Callable[..., object] = raw.executemany
        #: (table, key) -> the row object this transaction read or wrote.
        self.rows: dict[tuple[str, object], Any] = {}
        #: The rows the last write transaction read or wrote, as it committed them, when
        #: nothing wrote to the store since (``Transaction.carried``): each one copied into
        #: ``rows`` when first asked for (``kept``), so that no row object a command returned
        #: changes afterwards. This transaction's ``rows`` go on to the next in turn.
        self.carried: Mapping[tuple[str, object], Any] = {}
        carry = tx.carry
        if carry is not None:
            found = tx.carried.get(ViewsConnection)
            if found is not None:
                self.carried = found
            carry[ViewsConnection] = self.rows
        #: table -> the writes to it held back, and what writes them.
        self._held: dict[str, tuple[dict[Any, Any], HeldWrites]] = {}

    def held(self, table: str, write: HeldWrites) -> dict[Any, Any]:
        """The writes to ``table`` this transaction holds back, for the caller to add to (by
        a key of its choosing: a later write of a key replaces the earlier one, or adds to
        it). ``write(db, writes)`` writes them once, before any statement that names the
        table (a read, a write) and before the commit: a row saved twice in a transaction
        (a worker completing a task and claiming the next) is written once, and moves of
        the counts that cancel out are not written at all. ``table`` in lower case (``flush``)."""
        found = self._held.get(table)
        if found is None:
            if not self._held:
                self.execute = self._execute_held
                self.executemany = self._executemany_held
                self.tx.before_commit(self.flush)
            found = self._held[table] = ({}, write)
        return found[0]

    def flush(self, sql: str | None = None) -> None:
        """Write the writes held back (of the tables ``sql`` names; all of them without).
        SQLite's names are case-insensitive (``FROM Workers`` reads ``workers``): the tables,
        named in lower case, are looked for in the statement in lower case."""
        held = self._held
        if sql is not None:
            sql = sql.lower()
        for table in [t for t in held if sql is None or t in sql]:
            writes, write = held.pop(table)
            if writes:
                write(self.raw, writes)
        if not held:
            self.execute = self.raw.execute
            self.executemany = self.raw.executemany

    def read_together(self, reads: Sequence[tuple[str, Sequence[Any]]]) -> list[Rows] | None:
        """The rows of ``reads`` in one round trip where the connection can (PostgreSQL);
        None where it cannot (SQLite, whose reads cost no round trip)."""
        together = getattr(self.raw, "read_together", None)
        if together is None:
            return None
        for sql, _ in reads:
            if self._held:
                self.flush(sql)
        found: list[Rows] | None = together(reads)
        return found

    def _execute_held(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        self.flush(sql)
        return self.raw.execute(sql, parameters)

    def _executemany_held(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object:
        self.flush(sql)
        return self.raw.executemany(sql, parameters)


#: A transaction that touched more rows than this leaves none to the next (a catch-up of the
#: views, a bulk submit): they would stay in memory until the store's next write.
CARRIED_ROWS = 256

#: Writes the writes held back for one table (``ViewsConnection.held``).
HeldWrites = Callable[[Db, dict[Any, Any]], None]


def held(db: Db, table: str, write: HeldWrites) -> dict[Any, Any] | None:
    """``db``'s writes held back for ``table`` (None: ``db`` holds none back; write now)."""
    return db.held(table, write) if isinstance(db, ViewsConnection) else None


def kept(db: Db, table: str, key: object) -> Any | None:
    """The row of ``table`` at ``key`` this transaction has read or written (or the last
    write transaction did, when nothing wrote since: then a copy of it), if any."""
    if not isinstance(db, ViewsConnection):
        return None
    row = db.rows.get((table, key))
    if row is None and db.carried:
        was = db.carried.get((table, key))
        if was is not None:
            row = db.rows[table, key] = _copy(was)
    return row


#: Row class -> its fields' values, in the order its constructor takes them.
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _copy(row: R) -> R:
    """A new row object with the same values (a slotted dataclass: no ``__dict__`` to copy;
    the constructor with every field is ~6x quicker than ``copy.copy``)."""
    cls = type(row)
    values = _FIELDS.get(cls)
    if values is None:
        values = _FIELDS[cls] = operator.attrgetter(
            *(f.name for f in dataclasses.fields(row)))  # type: ignore[arg-type]
    return cls(*values(row))


def keep(db: Db, table: str, key: object, row: R, *, saved: bool = False) -> R:
    """The transaction's own object for this row. A row just read yields to the one the
    transaction holds already (the same row, perhaps changed since); a row just ``saved``
    replaces it (a fold may build a new row, as a worker's restart does)."""
    if not isinstance(db, ViewsConnection):
        return row
    if saved:
        db.rows[table, key] = row
        return row
    return cast(R, db.rows.setdefault((table, key), row))


def has_table(db: Db, name: str) -> bool:
    if isinstance(db, ViewsConnection):
        db = db.raw
    if isinstance(db, sqlite3.Connection):
        sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?"
    else:  # PostgreSQL: the store's schema is first on the search path
        sql = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
    return db.execute(sql, (name,)).fetchone() is not None
