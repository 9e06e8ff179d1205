"""Event-log throughput on PostgreSQL beside SQLite, in the same run.

    python -m benchmarks.bench_postgres [--dsn URL] [--events N] [--batches N] [--rounds N]

The PostgreSQL store gets a fresh schema, dropped at the end; the DSN defaults to
TRI24ES_TEST_PG_DSN. SQLite runs in WAL mode at synchronous=NORMAL (its default);
PostgreSQL at the server's own settings (synchronous_commit=on by default).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg

from benchmarks.bench_eventlog import fresh, sample_events
from benchmarks.common import interleaved
from eventlog import NO_STREAM, EventStore, NewEvent
from eventlog.postgres import PostgresStore
from eventlog.sqlite import SQLiteStore


def contenders(store: EventStore, events: list[NewEvent], batches: int) -> dict[
    str, Callable[[], int]
]:
    streams = iter(range(10**9))

    def single() -> int:
        for e in fresh(events):
            store.append(f"single-{next(streams)}", [e], NO_STREAM)
        return len(events)

    def batched() -> int:
        batch = events[:1000]
        for _ in range(batches):
            store.append(f"batch-{next(streams)}", fresh(batch), NO_STREAM)
        return batches * len(batch)

    def read_all() -> int:
        return sum(1 for _ in store.read_all())

    return {"append, 1 event per commit": single, "append, 1,000-event batches": batched,
            "read_all (whole log)": read_all}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("TRI24ES_TEST_PG_DSN"))
    parser.add_argument("--events", type=int, default=2000, help="single appends per round")
    parser.add_argument("--batches", type=int, default=20, help="1,000-event batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set TRI24ES_TEST_PG_DSN")
    schema = f"bench_{secrets.token_hex(4)}"
    events = sample_events(max(args.events, 1000))[: args.events]
    sqlite = SQLiteStore(Path(tempfile.mkdtemp(prefix="tri24es-bench-")) / "events.db")
    postgres = PostgresStore(args.dsn, schema=schema)
    try:
        ours = contenders(sqlite, events, args.batches)
        theirs = contenders(postgres, events, args.batches)
        print(f"{'figure':<30} {'SQLite':>14} {'PostgreSQL':>14}  ratio")
        for name in ours:
            lite, pg = interleaved(ours[name], theirs[name], rounds=args.rounds)
            print(f"{name:<30} {lite:>10,.0f} ev/s {pg:>10,.0f} ev/s  {pg / lite:.2f}x")
        print(f"(log sizes at the end: SQLite {sqlite.head():,}, PostgreSQL {postgres.head():,})")
    finally:
        sqlite.close()
        postgres.close()
        with closing(psycopg.connect(args.dsn, autocommit=True)) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


if __name__ == "__main__":
    main()
