"""Throughput on PostgreSQL beside SQLite, in the same run: appends, reads, claim+complete
cycles with 1 and 4 processes (checked: 0 duplicates, 0 lost), migration and replay.

    python -m benchmarks.bench_postgres [--dsn URL] [--events N] [--batches N] [--rounds N]
                                        [--cycles N] [--replay-events N]

The PostgreSQL store gets a fresh schema, dropped at the end; the DSN defaults to
TRI24ES_TEST_PG_DSN. SQLite runs in WAL mode at synchronous=NORMAL (its default);
PostgreSQL at the server's own settings (synchronous_commit=on by default).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg

from benchmarks.bench_claims import (
    check_exactly_once,
    cycles_ours,
    parallel_rate,
    rate,
    seed,
    write_replay_log,
)
from benchmarks.bench_eventlog import fresh, sample_events
from benchmarks.common import interleaved
from eventlog import NO_STREAM, EventStore, NewEvent, open_store
from eventlog.postgres import PostgresStore
from eventlog.sqlite import SQLiteStore
from tri24es.migrate import migrate
from tri24es.projections import connection_of, reads
from tri24es.projections.fold import fold_log


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


def claim_rates(sqlite_url: str, postgres_url: str, cycles: int) -> None:
    """Claim + complete cycles, as the worker does them (one commit per task), 1 and 4
    processes; then every task must be completed exactly once and none left running."""
    for processes in (1, 4):
        rates = []
        for url in (sqlite_url, postgres_url):
            seed(url, cycles + 100)
            per = cycles // processes
            if processes == 1:
                rates.append(rate(cycles_ours(url, "w1", per)))
            else:
                rates.append(parallel_rate("ours", url, processes, per))
            twice, late = check_exactly_once(url)
            lost = left_running(url)
            print(f"  {processes} proc on {url.split(':')[0]}: {twice} completed twice,"
                  f" {late} late claims, {lost} lost (left running)")
        name = f"claim+complete, {processes} proc"
        print(f"{name:<30} {rates[0]:>8,.0f} cycles/s {rates[1]:>8,.0f} cycles/s"
              f"  {rates[1] / rates[0]:.2f}x")


def left_running(url: str) -> int:
    with open_store(url) as store, store.snapshot() as tx:
        return len(reads.tasks(connection_of(tx), "running"))


def replay_rates(work: Path, postgres_url: str, events: int) -> None:
    """The same log on both: written to SQLite, migrated to PostgreSQL, folded from each."""
    with open_store(str(work / "replay.db")) as lite, open_store(postgres_url) as pg:
        write_replay_log(lite, events)
        start = time.perf_counter()
        migrate(lite, pg)
        moved = time.perf_counter() - start
        print(f"{'migrate (copy, verify, views)':<30} {'':>17} {lite.head() / moved:>8,.0f} ev/s")
        rates = []
        for store in (lite, pg):
            start = time.perf_counter()
            fold_log(store)
            rates.append(store.head() / (time.perf_counter() - start))
        name = f"replay {lite.head():,} events"
        print(f"{name:<30} {rates[0]:>10,.0f} ev/s {rates[1]:>10,.0f} ev/s"
              f"  {rates[1] / rates[0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("TRI24ES_TEST_PG_DSN"))
    parser.add_argument("--events", type=int, default=2000, help="single appends per round")
    parser.add_argument("--batches", type=int, default=20, help="1,000-event batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=1000, help="claim+complete cycles")
    parser.add_argument("--replay-events", type=int, default=100_000)
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
    schemas = [schema]
    try:
        for kind in ("claims", "replay"):
            schemas.append(f"{schema}_{kind}")
        work = Path(tempfile.mkdtemp(prefix="tri24es-bench-"))
        claim_rates(str(work / "claims.db"), with_schema(args.dsn, schemas[1]), args.cycles)
        replay_rates(work, with_schema(args.dsn, schemas[2]), args.replay_events)
    finally:
        with closing(psycopg.connect(args.dsn, autocommit=True)) as admin:
            for name in schemas:
                admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


def with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


if __name__ == "__main__":
    main()
