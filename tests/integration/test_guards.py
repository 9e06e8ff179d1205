"""The append-only guards on both backends: found missing, disabled or changed, restored once,
and the restoration recorded (``eventlog/guards.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing

import pytest

from eventlog import GUARD_RESTORED, GUARD_STREAM, EventLogError, NewEvent, open_store, sqlite_path
from eventlog.store import check_chain

ATTACKS = {
    "sqlite": [
        "DROP TRIGGER events_are_append_only_delete",
        # Put back, but toothless: a trigger of that name that refuses nothing.
        "DROP TRIGGER events_are_append_only_update; CREATE TRIGGER "
        "events_are_append_only_update BEFORE UPDATE ON events WHEN 0 BEGIN SELECT 1; END",
    ],
    "postgresql": [
        "DROP TRIGGER events_are_append_only ON events",
        "ALTER TABLE events DISABLE TRIGGER events_are_append_only_truncate",
        "CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
    ],
}


def attack(url: str, sql: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.executescript(sql)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())


def test_a_guard_taken_away_is_restored_and_recorded(new_url: Callable[[], str]) -> None:
    url = new_url()
    backend = "sqlite" if sqlite_path(url) is not None else "postgresql"
    with open_store(url) as store:
        store.append("s", [NewEvent("Happened", b"{}")])
        assert store.guards_restored is None
        for n, sql in enumerate(ATTACKS[backend]):
            attack(url, sql)
            restored = store.check_guards()  # a long-running process looks again
            assert restored is not None, sql
            assert restored.position == store.head() == n + 2
            assert store.check_guards() is None  # restored: nothing more to say
        recorded = [e for e in store.read_all() if e.stream == GUARD_STREAM]
        assert [e.type for e in recorded] == [GUARD_RESTORED] * len(ATTACKS[backend])
        assert check_chain(store.read_all())[0] == store.head()  # recorded like any event
        with pytest.raises(EventLogError, match="append-only"), store.transaction() as tx:
            tx.connection.execute("DELETE FROM events")
    attack_then_open = ATTACKS[backend][0]
    attack(url, attack_then_open)
    with open_store(url) as again:  # and the next process to open it says so
        assert again.guards_restored is not None
        assert again.guards_restored.position == again.head()
