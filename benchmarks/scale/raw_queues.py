"""The raw baselines of the claim figures: a minimal job queue in plain SQL, one commit per
job (the previous job marked done and the next one claimed in one transaction, as
``tri24es worker`` does), on SQLite with the store's own PRAGMAs and on PostgreSQL with
``FOR UPDATE SKIP LOCKED``. No events, no audit trail, no leases.

Standard library and psycopg only: run by the harness in the project's venv.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from benchmarks.scale.protocol import main_of, report, run_timed

#: The store's PRAGMAs (eventlog/sqlite.py: PAGE_SIZE, TUNING; synchronous=NORMAL by default),
#: except that the raw queue keeps SQLite's own WAL autocheckpoint: it has no checkpoint thread.
SQLITE_PRAGMAS = ("page_size = 2048", "journal_mode = WAL", "synchronous = NORMAL",
                  "cache_size = -16000", "mmap_size = 268435456")
SQLITE_SCHEMA = """
CREATE TABLE q (id INTEGER PRIMARY KEY, task TEXT UNIQUE, priority INTEGER, state TEXT,
                worker TEXT);
CREATE INDEX q_claimable ON q (priority, id) WHERE state = 'queued';
"""
PG_SCHEMA = """
CREATE TABLE q (id bigint PRIMARY KEY, task text UNIQUE, priority int, state text,
                worker text);
CREATE INDEX q_claimable ON q (priority, id) WHERE state = 'queued';
"""


def sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def seed_sqlite(p: dict[str, Any]) -> None:
    conn = sqlite_connect(p["path"])
    conn.executescript(SQLITE_SCHEMA)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO q (id, task, priority, state) VALUES (?, ?, ?, 'queued')",
                     [(i, f"t{i}", i % 4) for i in range(p["jobs"])])
    conn.execute("COMMIT")
    conn.close()
    report(done=p["jobs"])


def work_sqlite(p: dict[str, Any]) -> None:
    conn = sqlite_connect(p["path"])
    worker = p["worker"]

    def work() -> list[str]:
        ran: list[str] = []
        previous = None
        while True:
            conn.execute("BEGIN IMMEDIATE")
            if previous is not None:
                conn.execute("UPDATE q SET state = 'done' WHERE id = ?", (previous,))
            row = conn.execute("SELECT id, task FROM q WHERE state = 'queued'"
                               " ORDER BY priority, id LIMIT 1").fetchone()
            if row is not None:
                conn.execute("UPDATE q SET state = 'running', worker = ? WHERE id = ?",
                             (worker, row[0]))
            conn.execute("COMMIT")
            if row is None:
                return ran
            previous = row[0]
            ran.append(row[1])

    run_timed(work)
    conn.close()


def seed_pg(p: dict[str, Any]) -> None:
    import psycopg

    with psycopg.connect(p["dsn"]) as conn:
        conn.execute(PG_SCHEMA.encode())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO q (id, task, priority, state) VALUES (%s, %s, %s,"
                            " 'queued')", [(i, f"t{i}", i % 4) for i in range(p["jobs"])])
    report(done=p["jobs"])


def loop_pg(conn: Any, worker: str) -> list[str]:
    """The raw loop on a psycopg connection, until nothing is left: the jobs it ran."""
    ran: list[str] = []
    previous = None
    while True:
        if previous is not None:
            conn.execute("UPDATE q SET state = 'done' WHERE id = %s", (previous,))
        row = conn.execute("SELECT id, task FROM q WHERE state = 'queued' ORDER BY"
                           " priority, id LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
        if row is not None:
            conn.execute("UPDATE q SET state = 'running', worker = %s WHERE id = %s",
                         (worker, row[0]))
        conn.commit()
        if row is None:
            return ran
        previous = row[0]
        ran.append(row[1])


def work_pg(p: dict[str, Any]) -> None:
    import psycopg

    conn = psycopg.connect(p["dsn"])
    run_timed(lambda: loop_pg(conn, p["worker"]))
    conn.close()


def done_count_sqlite(path: str) -> dict[str, int]:
    """Jobs by final state (the harness checks that none is left queued or running)."""
    conn = sqlite3.connect(path)
    counts = dict(conn.execute("SELECT state, count(*) FROM q GROUP BY state").fetchall())
    conn.close()
    return counts


if __name__ == "__main__":
    main_of({"seed_sqlite": seed_sqlite, "work_sqlite": work_sqlite, "seed_pg": seed_pg,
             "work_pg": work_pg})
