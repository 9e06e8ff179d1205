"""Event-log throughput against raw sqlite3 in the same run, at the same synchronous setting.

    python -m benchmarks.bench_eventlog [--events N] [--synchronous NORMAL|FULL] [--markdown]

Baselines: "raw" inserts the same values into a plain table (rowid only); "raw same schema"
inserts them with plain SQL into a table with the store's own schema and indexes, without
the store's version check, hash chain or Python layer. Reads: a raw ``SELECT *`` scan.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import MARKDOWN_HEADER, Figure, interleaved
from eventlog import NewEvent, open_store
from eventlog.sqlite import SCHEMA
from tri24es.events import Metadata, TaskClaimed, decode_all, encode

PLAIN_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, event_id TEXT, type TEXT,
    data BLOB, metadata BLOB, recorded_at INTEGER, hash BLOB
)
"""
INSERT = (
    "INSERT INTO events (stream, version, event_id, type, data, metadata, recorded_at, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The store's own table takes the position of the stream's first event too (eventlog.sqlite).
INSERT_SAME = (
    "INSERT INTO events (stream, version, event_id, type, data, metadata, recorded_at, hash,"
    " origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?2 = 1 THEN"
    " (SELECT coalesce(max(position), 0) + 1 FROM events)"
    " ELSE (SELECT position FROM events WHERE stream = ?1 AND version = 1) END)"
)
FAKE_HASH = bytes(32)


def sample_events(n: int) -> list[NewEvent]:
    """TaskClaimed events, the commonest event of a busy fleet."""
    lease = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    meta = Metadata(actor="worker-1", trace_id="bench", host="bench-host", pid=4242)
    return [
        encode(
            TaskClaimed(task_id=f"task-{i}", worker="worker-1", attempt=1,
                        lease_expires_at=lease + timedelta(seconds=i)),
            meta,
        )
        for i in range(n)
    ]


def raw_connection(path: Path, synchronous: str, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.executescript(schema)
    conn.commit()
    return conn


class Contenders:
    """The store and the two raw baselines, each with a fresh supply of events per round."""

    def __init__(self, work: Path, synchronous: str) -> None:
        self.store = open_store(str(work / "store.db"), synchronous=synchronous)
        self.plain = raw_connection(work / "plain.db", synchronous, PLAIN_SCHEMA)
        self.same = raw_connection(work / "same.db", synchronous, SCHEMA)
        self.streams = 0

    def next_stream(self) -> str:
        self.streams += 1
        return f"task-{self.streams}"

    def rows(self, events: list[NewEvent]) -> list[tuple[object, ...]]:
        stream = self.next_stream()
        return [(stream, i + 1, e.event_id, e.type, e.data, e.metadata, 0, FAKE_HASH)
                for i, e in enumerate(events)]

    def single(self, events: list[NewEvent]) -> tuple[Callable[[], int], ...]:
        def ours() -> int:
            for e in fresh(events):
                self.store.append(self.next_stream(), [e], 0)
            return len(events)

        def raw(conn: sqlite3.Connection) -> Callable[[], int]:
            def run() -> int:
                for row in [self.rows([e])[0] for e in fresh(events)]:
                    conn.execute(INSERT if conn is self.plain else INSERT_SAME, row)
                    conn.commit()
                return len(events)
            return run

        return ours, raw(self.plain), raw(self.same)

    def batches(self, batch: list[NewEvent], count: int) -> tuple[Callable[[], int], ...]:
        def ours() -> int:
            for events in [fresh(batch) for _ in range(count)]:
                self.store.append(self.next_stream(), events, 0)
            return count * len(batch)

        def raw(conn: sqlite3.Connection) -> Callable[[], int]:
            def run() -> int:
                for rows in [self.rows(fresh(batch)) for _ in range(count)]:
                    conn.executemany(INSERT if conn is self.plain else INSERT_SAME, rows)
                    conn.commit()
                return count * len(batch)
            return run

        return ours, raw(self.plain), raw(self.same)

    def reads(self) -> tuple[Callable[[], int], ...]:
        def ours() -> int:
            return sum(1 for _ in decode_all(self.store.read_all()))

        def raw(conn: sqlite3.Connection) -> Callable[[], int]:
            return lambda: sum(1 for _ in conn.execute("SELECT * FROM events"))

        return ours, raw(self.plain), raw(self.same)


def fresh(events: list[NewEvent]) -> list[NewEvent]:
    """The same payloads under new event ids (made outside the timed part where possible)."""
    return [NewEvent(e.type, e.data, e.metadata) for e in events]


def run(n_single: int, n_batches: int, synchronous: str, rounds: int) -> list[Figure]:
    c = Contenders(Path(tempfile.mkdtemp(prefix="tri24es-bench-")), synchronous)
    events = sample_events(max(n_single, 1000))
    single = c.single(events[:n_single])
    batches = c.batches(events[:1000], n_batches)
    figures = [
        Figure("append, 1 event per commit", "events/s",
               *interleaved(*single, rounds=rounds), goal=0.5),
        Figure("append, 1,000-event batches", "events/s",
               *interleaved(*batches, rounds=rounds), goal=0.5),
        Figure("read_all + decode to event models", "events/s",
               *interleaved(*c.reads(), rounds=rounds), goal=0.4),
    ]
    c.store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="single appends per round")
    parser.add_argument("--batches", type=int, default=20, help="1,000-event batches per round")
    parser.add_argument("--synchronous", default="NORMAL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true", help="print a README table")
    args = parser.parse_args()
    print(f"eventlog vs raw sqlite3 {sqlite3.sqlite_version}, WAL, synchronous={args.synchronous}")
    figures = run(args.events, args.batches, args.synchronous, args.rounds)
    for figure in figures:
        print(figure.line())
    if args.markdown:
        print(MARKDOWN_HEADER)
        for figure in figures:
            print(figure.markdown_row())


if __name__ == "__main__":
    main()
