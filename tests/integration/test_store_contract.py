"""The event store contract (eventlog/testing.py), on each durable backend in turn."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from eventlog import EventStore, open_store
from eventlog.model import system_clock_us
from eventlog.sqlite import GUARDS, LEGACY, SQLiteStore
from eventlog.testing import EventStoreContract, StoreFactory

#: The events table of files made before streams were found by their origin.
LEGACY_SCHEMA = """
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    metadata    BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL,
    hash        BLOB    NOT NULL,
    UNIQUE (stream, version)
);
"""


class TestStoreContract(EventStoreContract):
    @pytest.fixture
    def make_store(self, new_url: Callable[[], str]) -> Iterator[StoreFactory]:
        made: list[EventStore] = []

        def make(clock: Callable[[], int] | None = None) -> EventStore:
            made.append(open_store(new_url(), clock=clock or system_clock_us))
            return made[-1]

        yield make
        for store in made:
            store.close()


class TestLegacySQLiteContract(EventStoreContract):
    """Files made before origins keep their layout, and the whole contract holds on them."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[StoreFactory]:
        made: list[EventStore] = []
        paths = (tmp_path / f"legacy-{n}.db" for n in itertools.count())

        def make(clock: Callable[[], int] | None = None) -> EventStore:
            path = next(paths)
            with closing(sqlite3.connect(path)) as db:
                db.executescript(LEGACY_SCHEMA + ";".join(GUARDS.values()) + ";")
            store = open_store(str(path), clock=clock or system_clock_us)
            assert isinstance(store, SQLiteStore)
            assert store.statements is LEGACY
            made.append(store)
            return made[-1]

        yield make
        for store in made:
            store.close()
