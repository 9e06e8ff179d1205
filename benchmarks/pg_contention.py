"""Where the time of a claim+complete cycle goes on PostgreSQL with 1 and with N processes,
in the same run (issue 20): what the store's backends wait on (pg_stat_activity sampled
every few milliseconds), how long a cycle holds the write lock, and the client's CPU.

    python -m benchmarks.pg_contention [--dsn URL] [--jobs N] [--processes 1 4] [--rounds 3]

Per cycle, measured in each worker process around every round trip of the store's
connection: ``hold`` is from the end of the transaction's first round trip (the lock is
held by then) to the start of its last (whose COMMIT releases it: the publication's flush
that follows is not counted), ``lock wait`` is the first round trip's time beyond one
process's, ``client CPU`` is the thread's CPU time (``time.thread_time``) per cycle.
The sampler counts, over the worker backends, the share of samples in each state: on the
advisory lock (``Lock:advisory``), waiting for the client (``Client:ClientRead``: the
client's CPU and the network), the WAL flush (``IO:WALSync``/``WALWrite``/``LWLock:WALWrite``),
running (no wait event) and others. Each run gets a fresh schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import secrets
import statistics
import threading
import time
from typing import Any

import psycopg

from benchmarks.bench_claims import check_exactly_once, seed
from eventlog import open_store
from eventlog.postgres import PostgresStore
from tri24es.services import Services


def _worker(url: str, name: str, ready: Any, go: Any, out: Any) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    services = Services(store, actor=name)
    services.start_worker(name, pid=os.getpid(), pid_start_time=0, host="bench")
    db = store._db
    trips: list[tuple[float, float]] = []
    original = db.run

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            trips.append((started, time.perf_counter()))

    db.run = timed  # type: ignore[method-assign]
    ready.put(db.info.backend_pid)
    go.wait()
    holds, firsts, cpus, walls = [], [], [], []
    cpu0, t0 = time.thread_time(), time.perf_counter()
    claim = services.claim(name)
    done = 0
    while claim is not None:
        trips.clear()
        c, w = time.thread_time(), time.perf_counter()
        claim = services.complete(claim.task_id, name, claim.attempt, claim_next=True)
        cpus.append(time.thread_time() - c)
        walls.append(time.perf_counter() - w)
        done += 1
        if len(trips) >= 2:
            firsts.append(trips[0][1] - trips[0][0])
            holds.append(trips[-1][0] - trips[0][1])
    elapsed = time.perf_counter() - t0
    out.put({"done": done, "elapsed": elapsed, "cpu": time.thread_time() - cpu0,
             "holds": holds, "firsts": firsts, "cpus": cpus, "walls": walls,
             "trips": len(trips)})
    services.stopped(name)
    store.close()


def _state(wait_type: str | None, wait: str | None, state: str | None) -> str:
    if state != "active" and wait == "ClientRead":
        return "client"
    if wait_type == "Lock" and wait == "advisory":
        return "lock"
    if wait in ("WALSync", "WALWrite", "WALInitSync", "WALInitWrite") or \
            (wait_type == "LWLock" and wait == "WALWrite"):
        return "flush"
    if wait is None and state == "active":
        return "running"
    return f"{wait_type}:{wait}"


def run(dsn: str, jobs: int, processes: int) -> dict[str, Any]:
    schema = f"contention_{secrets.token_hex(4)}"
    url = f"{dsn}?options=-csearch_path%3D{schema}"
    try:
        seed(url, jobs)
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_worker, args=(url, f"w{n}", ready, go, out))
                 for n in range(processes)]
        for p in procs:
            p.start()
        pids = [ready.get(timeout=60) for _ in procs]
        samples: collections.Counter[str] = collections.Counter()
        holders: collections.Counter[str] = collections.Counter()
        stop = threading.Event()

        def sample() -> None:
            with psycopg.connect(dsn, autocommit=True) as db:
                query = (b"SELECT a.wait_event_type, a.wait_event, a.state, EXISTS (SELECT 1"
                         b" FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'"
                         b" AND l.granted) FROM pg_stat_activity a WHERE a.pid = ANY(%s)")
                while not stop.is_set():
                    rows = db.execute(query, (pids,)).fetchall()
                    held = [_state(*row[:3]) for row in rows if row[3]]
                    for row in rows:
                        samples[_state(*row[:3])] += 1
                    holders[held[0] if held else "(free)"] += 1
                    time.sleep(0.003)

        sampler = threading.Thread(target=sample)
        load = os.getloadavg()[0]
        go.set()
        sampler.start()
        results = [out.get(timeout=600) for _ in procs]
        stop.set()
        sampler.join()
        for p in procs:
            p.join()
        twice, late = check_exactly_once(url)
        if twice or late:
            raise SystemExit(f"not exactly once: {twice} completed twice, {late} late claims")
    finally:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
    done = sum(r["done"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    total = sum(samples.values()) or 1

    def med(key: str) -> float:
        return statistics.median(x for r in results for x in r[key]) * 1e3

    return {"processes": processes, "rate": done / elapsed, "load": load,
            "hold_ms": med("holds"), "first_trip_ms": med("firsts"),
            "cpu_ms": sum(r["cpu"] for r in results) / done * 1e3,
            "cycle_ms": med("walls"),
            "waits": {k: round(v / total, 3) for k, v in samples.most_common()},
            "holder": {k: round(v / (sum(holders.values()) or 1), 3)
                       for k, v in holders.most_common()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "TRI24ES_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    by: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for round_ in range(options.rounds):
        for processes in options.processes:
            r = run(options.dsn, options.jobs, processes)
            by[processes].append(r)
            print(f"round {round_} P={processes}: {r['rate']:.0f} cycles/s, cycle "
                  f"{r['cycle_ms']:.2f} ms, lock held {r['hold_ms']:.2f} ms, first trip "
                  f"{r['first_trip_ms']:.2f} ms, client CPU {r['cpu_ms']:.2f} ms/cycle, "
                  f"load {r['load']:.1f}; backends: {r['waits']}; the lock's holder: "
                  f"{r['holder']}", flush=True)
    if len(options.processes) > 1:
        base = options.processes[0]
        for processes in options.processes[1:]:
            ratios = [b["rate"] / a["rate"] for a, b in zip(by[base], by[processes],
                                                             strict=True)]
            print(f"P={processes} / P={base}: median {statistics.median(ratios):.2f}x "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
