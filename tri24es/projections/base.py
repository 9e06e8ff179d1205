"""What every projection is: a pure fold over events, and the SQL that keeps its tables.

A projection's *view* is plain Python data. ``apply(view, envelope)`` is the fold step: it
changes only the view, does no I/O, and is the one piece of logic both paths share:

- inline: in the transaction of the append, ``load`` the rows an event touches into a small
  view, ``apply``, ``save`` them back;
- replay: fold the log into fresh tables a batch of events at a time: ``prefetch`` the
  stored rows a batch touches, ``apply`` the batch, ``spill`` what need not stay in memory,
  and ``finish`` with what is left (by default the whole view, by ``write_all``);
- ``replay --verify`` and ``--until``: fold the whole log into a view in memory.

Because both paths run the same ``apply``, a replay cannot disagree with the live tables
unless something bypassed the services.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from tri24es.events import Envelope, Event
from tri24es.machines import IllegalTransition
from tri24es.projections.sql import Db

V = TypeVar("V")
S = TypeVar("S", bound=enum.Enum)

Row = tuple[Any, ...]


class Projection(abc.ABC, Generic[V]):
    name: str
    ddl: str  # CREATE TABLE/INDEX IF NOT EXISTS statements
    tables: tuple[str, ...]
    handles: frozenset[type[Event]]  # the event types that can change this view

    @abc.abstractmethod
    def new_view(self) -> V:
        """An empty view: the state before the first event."""

    @abc.abstractmethod
    def apply(self, view: V, envelope: Envelope) -> None:
        """The fold step. Pure: touches nothing but ``view``."""

    def fold(self, envelopes: Iterable[Envelope], view: V | None = None) -> V:
        view = self.new_view() if view is None else view
        for envelope in envelopes:
            if type(envelope.event) in self.handles:
                self.apply(view, envelope)
        return view

    @abc.abstractmethod
    def load(self, conn: Db, envelope: Envelope) -> V | None:
        """The part of the stored view that ``envelope`` touches; None if it touches nothing."""

    @abc.abstractmethod
    def save(self, conn: Db, view: V) -> None:
        """Write back every row of a view made by ``load`` (and changed by ``apply``)."""

    @abc.abstractmethod
    def rows(self, view: V) -> dict[str, list[Row]]:
        """The view as the rows of each table, sorted: what ``write_all`` stores and what
        ``replay --verify`` compares."""

    def pack(self, view: V) -> Any:
        """The view as data for another process to unpickle (a split replay): by default the
        view itself; a view of many objects is quicker to send as tuples."""
        return view

    def unpack(self, packed: Any) -> V:
        """The view from what ``pack`` made."""
        return packed  # type: ignore[no-any-return]

    # A replay page by page (``upkeep.rebuild``). A projection whose view grows with the
    # log (one row per task, per spend event) keeps only the rows of the current batch in
    # memory; the others are small (one row per worker, limit, schedule) and kept whole.

    def spilling_view(self) -> V:
        """An empty view for a replay page by page."""
        return self.new_view()

    def prefetch(self, conn: Db, view: V, envelopes: Sequence[Envelope]) -> None:
        """Before ``envelopes`` are applied to ``view``: load into it the rows they touch that
        an earlier ``spill`` wrote out. By default nothing: the view is kept whole."""

    def spill(self, conn: Db, view: V) -> None:
        """After a batch: write out what ``view`` need not keep, and drop it from memory."""

    def finish(self, conn: Db, view: V) -> None:
        """At the end of the log: write what ``view`` still holds."""
        self.write_all(conn, view)

    def write_all(self, conn: Db, view: V) -> None:
        for table, rows in self.rows(view).items():
            if rows:
                marks = ",".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def read_rows(self, conn: Db) -> dict[str, list[Row]]:
        """The live tables' rows, in the same order and shape as ``rows``."""
        return {
            table: [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in self.tables
        }

    def clear(self, conn: Db) -> None:
        for table in self.tables:
            conn.execute(f"DELETE FROM {table}")


def fixed_moves(
    states: Iterable[S],
    kinds: Iterable[type[Event]],
    advance: Callable[[S, Event], S | None],
    decided_by_fields: Callable[[S, type[Event]], bool],
) -> dict[tuple[str, type[Event]], str]:
    """(state value, event type) -> the next state's value, for every legal move that depends
    on nothing but the two: asked of the machine once, instead of once per event in a replay.
    Left out are the moves an event's fields decide and those the machine refuses; a fold
    asks ``advance`` for those, which decides or raises."""
    moves: dict[tuple[str, type[Event]], str] = {}
    for state in states:
        for kind in kinds:
            if decided_by_fields(state, kind):
                continue
            try:
                moved = advance(state, kind.model_construct())
            except IllegalTransition:
                continue
            if moved is not None:
                moves[state.value, kind] = moved.value
    return moves
