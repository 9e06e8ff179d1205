"""Single appends: one event per commit into a new stream, tri24es's store beside a raw
single-row INSERT commit and eventsourcing's recorder, on SQLite and on PostgreSQL. Each
round starts from a fresh store; the events are made before the timed part.

Workload modes (run by the harness in the project's venv): ``ours``, ``raw_sqlite``,
``raw_pg``."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from benchmarks.scale.launch import Workload, WorkloadFailed, run_one
from benchmarks.scale.peersenv import PeersEnv
from benchmarks.scale.pg import PgServer, es_params
from benchmarks.scale.protocol import main_of, run_timed
from benchmarks.scale.raw_queues import SQLITE_PRAGMAS
from benchmarks.scale.report import Goal, Results, Row, Series

MODULE = "benchmarks.scale.appends"
RAW_COLUMNS = ("stream text, version integer, event_id text, type text, data bytea, "
               "metadata bytea, recorded_at bigint, hash bytea")
INSERT = ("INSERT INTO events (stream, version, event_id, type, data, metadata, recorded_at,"
          " hash) VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0})")


def sample(n: int) -> list[Any]:
    from benchmarks.bench_eventlog import sample_events

    return sample_events(n)


def ours(p: dict[str, Any]) -> None:
    from eventlog import NO_STREAM, open_store

    store = open_store(p["url"])
    events = sample(p["events"])

    def work() -> list[str]:
        for i, e in enumerate(events):
            store.append(f"task-{i}", [e], NO_STREAM)
        return [e.event_id for e in events]

    run_timed(work)
    store.close()


def rows(n: int) -> list[tuple[Any, ...]]:
    return [(f"task-{i}", 1, e.event_id, e.type, e.data, e.metadata, i, bytes(32))
            for i, e in enumerate(sample(n))]


def raw_sqlite(p: dict[str, Any]) -> None:
    conn = sqlite3.connect(p["path"], isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(f"CREATE TABLE events (position INTEGER PRIMARY KEY, "
                 f"{RAW_COLUMNS.replace('bytea', 'blob')})")
    todo, insert = rows(p["events"]), INSERT.format("?")

    def work() -> list[str]:
        for row in todo:
            conn.execute("BEGIN")
            conn.execute(insert, row)
            conn.execute("COMMIT")
        return [r[2] for r in todo]

    run_timed(work)
    conn.close()


def raw_pg(p: dict[str, Any]) -> None:
    import psycopg

    conn = psycopg.connect(p["dsn"])
    conn.execute(f"CREATE TABLE events (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY"
                 f" KEY, {RAW_COLUMNS})".encode())
    conn.commit()
    todo, insert = rows(p["events"]), INSERT.format("%s")

    def work() -> list[str]:
        for row in todo:
            conn.execute(insert.encode(), row)
            conn.commit()
        return [r[2] for r in todo]

    run_timed(work)
    conn.close()


def measure(results: Results, *, work: Path, pg: PgServer | None, peers: PeersEnv,
            events: int, rounds: int) -> None:
    payload = sample(1)[0].data.decode()
    for backend in ("sqlite", "pg"):
        if backend == "pg" and pg is None:
            continue
        n = events if backend == "sqlite" else max(events // 5, 50)
        title = f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'} single append"
        contenders = {"tri24es": ("ours", None), "raw single-row INSERT": (
            f"raw_{backend}", None), "eventsourcing": ("appends", "eventsourcing")}
        series = {name: Series(name, "events/s") for name in contenders}
        if not peers.has("eventsourcing"):
            series["eventsourcing"].error = peers.status.get("eventsourcing", "not installed")
        for r in range(rounds):
            for name, (mode, peer) in contenders.items():
                s = series[name]
                if s.error:
                    continue
                path = work / f"append-{backend}-{mode}-{r}.db"
                dsn = pg.fresh() if backend == "pg" and pg is not None else None
                params: dict[str, Any] = {"mode": mode, "events": n, "path": str(path),
                                          "url": dsn or str(path), "dsn": dsn,
                                          "payload": payload}
                if peer is not None and dsn is not None:
                    params |= es_params(dsn)
                    del params["path"]
                python = sys.executable if peer is None else str(peers.python)
                module = MODULE if peer is None else "benchmarks.scale.peer.es"
                try:
                    result = run_one(Workload(python, module, params))
                except WorkloadFailed as e:
                    s.error = str(e)
                    continue
                finally:
                    if dsn is not None and pg is not None:
                        pg.drop(dsn)
                rate = result["done"] / (result["end"] - result["start"])
                s.runs.append(rate)
                s.add_checks(missing=n - len(set(result["ran"])))
                print(f"    {title} round {r + 1}: {name} {rate:,.0f} events/s", flush=True)
        results.add(Row(title, series["tri24es"], series["raw single-row INSERT"],
                        Goal("ratio", ">=", 0.7) if backend == "pg" else None,
                        "plain table (position, the same columns), one INSERT per commit",
                        "raw single-row INSERT"))
        results.add(Row(title, series["tri24es"], series["eventsourcing"], None,
                        "its recorder's insert_events, one event in a new sequence per commit",
                        "eventsourcing"))


if __name__ == "__main__":
    main_of({"ours": ours, "raw_sqlite": raw_sqlite, "raw_pg": raw_pg})
