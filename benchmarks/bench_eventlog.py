"""Event-log throughput against raw sqlite3 in the same run, at the same synchronous setting.

    python -m benchmarks.bench_eventlog [--events N] [--synchronous NORMAL|FULL]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import Figure, interleaved
from eventlog import NewEvent, open_store
from tri24es.events import Metadata, TaskClaimed, decode_all, encode

RAW_SCHEMA = """
CREATE TABLE raw (
    id INTEGER PRIMARY KEY, stream TEXT, version INTEGER, event_id TEXT, type TEXT,
    data BLOB, metadata BLOB, recorded_at INTEGER
)
"""


def sample_events(n: int) -> list[NewEvent]:
    lease = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    meta = Metadata(actor="worker-1", trace_id="bench", host="bench-host", pid=4242)
    return [
        encode(
            TaskClaimed(
                task_id=f"task-{i}", worker="worker-1", attempt=1,
                lease_expires_at=lease + timedelta(seconds=i),
            ),
            meta,
        )
        for i in range(n)
    ]


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(RAW_SCHEMA)
    conn.commit()
    return conn


def raw_rows(events: list[NewEvent], start: int) -> list[tuple[object, ...]]:
    return [
        (f"task-{start + i}", 1, e.event_id, e.type, e.data, e.metadata, 0)
        for i, e in enumerate(events)
    ]


INSERT_RAW = (
    "INSERT INTO raw (stream, version, event_id, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def run(n_single: int, n_batch: int, synchronous: str, rounds: int) -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="tri24es-bench-"))
    store = open_store(str(work / "store.db"), synchronous=synchronous)
    raw = raw_connection(work / "raw.db", synchronous)
    figures = []
    counter = {"ours": 0, "raw": 0}

    def fresh(events: list[NewEvent]) -> list[NewEvent]:
        return [NewEvent(e.type, e.data, e.metadata) for e in events]

    single = sample_events(n_single)

    def ours_single() -> int:
        base = counter["ours"]
        for i, e in enumerate(fresh_single.pop()):
            store.append(f"task-{base + i}", [e], 0)
        counter["ours"] += n_single
        return n_single

    def raw_single() -> int:
        rows = raw_rows(single, counter["raw"])
        for row in rows:
            raw.execute(INSERT_RAW, row)
            raw.commit()
        counter["raw"] += n_single
        return n_single

    fresh_single = [fresh(single) for _ in range(rounds)]
    figures.append(Figure("append, 1 event per commit", "events/s",
                          *interleaved(ours_single, raw_single, rounds), goal=0.5))

    batch = sample_events(1000)
    batches_per_round = max(1, n_batch // 1000)
    fresh_batches = [[fresh(batch) for _ in range(batches_per_round)] for _ in range(rounds)]

    def ours_batch() -> int:
        for i, events in enumerate(fresh_batches.pop()):
            store.append(f"bulk-{counter['ours']}-{i}", events, 0)
        counter["ours"] += 1
        return batches_per_round * 1000

    def raw_batch() -> int:
        for _ in range(batches_per_round):
            raw.executemany(INSERT_RAW, raw_rows(batch, 0))
            raw.commit()
        return batches_per_round * 1000

    figures.append(Figure("append, 1,000-event batches", "events/s",
                          *interleaved(ours_batch, raw_batch, rounds), goal=0.5))

    def ours_read() -> int:
        return sum(1 for _ in decode_all(store.read_all()))

    def raw_read() -> int:
        return sum(1 for _ in raw.execute("SELECT * FROM raw"))

    figures.append(Figure("read_all + decode to event models", "events/s",
                          *interleaved(ours_read, raw_read, rounds), goal=0.4))
    store.close()
    raw.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="single appends per round")
    parser.add_argument("--batch-events", type=int, default=50_000, help="batched events per round")
    parser.add_argument("--synchronous", default="NORMAL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"eventlog vs raw sqlite3 {sqlite3.sqlite_version}, WAL, synchronous={args.synchronous}")
    for figure in run(args.events, args.batch_events, args.synchronous, args.rounds):
        print(figure.line())


if __name__ == "__main__":
    main()
