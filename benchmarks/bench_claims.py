"""Claim + complete throughput and replay speed, beside raw sqlite3 in the same run.

    python -m benchmarks.bench_claims [--cycles N] [--backlog N] [--replay-events N]

The raw baseline is a minimal job queue in plain SQL (what litequeue-style libraries do):
BEGIN IMMEDIATE; SELECT the first queued row by priority; UPDATE it to running; COMMIT;
then BEGIN IMMEDIATE; UPDATE it to done; COMMIT. No events, no audit trail.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from benchmarks.common import Figure
from eventlog import EventStore, open_store
from tri24es import events as ev
from tri24es.names import SPEND_STREAM, Priority, task_stream
from tri24es.projections.fold import fold_log
from tri24es.services import Services, TaskSpec

RAW_QUEUE = """
CREATE TABLE q (id INTEGER PRIMARY KEY, task TEXT UNIQUE, priority INTEGER, state TEXT,
                worker TEXT);
CREATE INDEX q_claimable ON q (priority, id) WHERE state = 'queued';
"""
PRIORITIES = list(Priority)


def seed(path: str | Path, tasks: int) -> None:
    services = Services(open_store(str(path)), actor="bench")
    batch = 2000
    for start in range(0, tasks, batch):
        services.submit_many([
            TaskSpec(f"t{i}", f"task {i}", priority=PRIORITIES[i % 4])
            for i in range(start, min(tasks, start + batch))
        ])
    services.store.close()


def seed_raw(path: Path, tasks: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(RAW_QUEUE)
    conn.executemany("INSERT INTO q (task, priority, state) VALUES (?, ?, 'queued')",
                     [(f"t{i}", i % 4) for i in range(tasks)])
    conn.commit()
    conn.close()


Timed = tuple[int, float, float]  # (cycles done, monotonic start and end: set-up excluded)


def wait_until(start_at: float | None) -> float:
    """Sleep until the monotonic clock (one clock for every process) reads ``start_at``."""
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.monotonic()))
    return time.monotonic()


def cycles_ours(
    path: str, worker: str, limit: int, combined: bool = True, start_at: float | None = None
) -> Timed:
    """Claim + complete ``limit`` tasks. ``combined``: as the worker does it, completing a task
    and claiming the next in one transaction; else a transaction for each."""
    services = Services(open_store(path), actor=worker)
    services.start_worker(worker, pid=os.getpid(), pid_start_time=0, host="bench")
    done = 0
    start = wait_until(start_at)
    claim = services.claim(worker) if limit else None
    while claim is not None:
        done += 1
        more = done < limit
        if combined:
            claim = services.complete(claim.task_id, worker, claim.attempt, claim_next=more)
        else:
            services.complete(claim.task_id, worker, claim.attempt)
            claim = services.claim(worker) if more else None
    end = time.monotonic()
    services.stopped(worker)
    services.store.close()
    return done, start, end


def cycles_raw(
    path: str, worker: str, limit: int, combined: bool = True, start_at: float | None = None
) -> Timed:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous = NORMAL")
    done = 0
    start = wait_until(start_at)
    while done < limit:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id FROM q WHERE state = 'queued' ORDER BY priority, id"
                           " LIMIT 1").fetchone()
        if row is None:
            conn.execute("COMMIT")
            break
        conn.execute("UPDATE q SET state = 'running', worker = ? WHERE id = ?", (worker, row[0]))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE q SET state = 'done' WHERE id = ?", (row[0],))
        conn.execute("COMMIT")
        done += 1
    end = time.monotonic()
    conn.close()
    return done, start, end


def _worker_process(args: tuple[str, str, str, int, float | None]) -> Timed:
    kind, path, worker, limit, start_at = args
    return (cycles_ours if kind == "ours" else cycles_raw)(path, worker, limit, True, start_at)


def rate(timed: Timed) -> float:
    return timed[0] / (timed[2] - timed[1])


def parallel_rate(kind: str, path: str | Path, processes: int, per_process: int) -> float:
    """Cycles per second of ``processes`` workers on one store: all cycles over the time from
    their common start to the last one's end (set-up is excluded)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_worker_process,  # the imports, once per process
                 [(kind, str(path), f"warm{i}", 0, None) for i in range(processes)])
        start_at = time.monotonic() + 0.5  # every worker set up and waiting by then
        results = pool.map(_worker_process, [
            (kind, str(path), f"w{i}", per_process, start_at) for i in range(processes)
        ])
    return sum(done for done, _, _ in results) / (max(end for _, _, end in results) - start_at)


def check_exactly_once(path: str | Path) -> tuple[int, int]:
    """(tasks completed more than once, claims of already completed tasks)."""
    store = open_store(str(path))
    completed: dict[str, int] = {}
    late_claims = 0
    for e in store.read_all(types=["TaskCompleted", "TaskClaimed"]):
        task = e.stream
        if e.type == "TaskCompleted":
            completed[task] = completed.get(task, 0) + 1
        elif task in completed:
            late_claims += 1
    store.close()
    return sum(1 for n in completed.values() if n > 1), late_claims


def claim_figures(work: Path, cycles: int, backlog: int) -> list[Figure]:
    figures = []
    for processes, combined in ((1, False), (1, True), (4, True)):
        label = f"{processes}-{combined}"
        ours_db, raw_db = work / f"ours{label}.db", work / f"raw{label}.db"
        seed(ours_db, cycles + 100)
        seed_raw(raw_db, cycles + 100)
        per = cycles // processes
        if processes == 1:
            ours = rate(cycles_ours(str(ours_db), "w1", per, combined))
            raw = rate(cycles_raw(str(raw_db), "w1", per))
        else:
            ours = parallel_rate("ours", ours_db, processes, per)
            raw = parallel_rate("raw", raw_db, processes, per)
        dupes, late = check_exactly_once(ours_db)
        how = "1 commit per task" if combined else "2 commits per task"
        figures.append(Figure(f"claim+complete, {processes} proc, {how}", "cycles/s", ours, raw))
        print(f"  {processes} process(es), {how}: {dupes} tasks completed twice,"
              f" {late} late claims")
    small, large = work / "backlog-small.db", work / "backlog-large.db"
    seed(small, 1000)
    seed(large, backlog)
    for db in (small, large):  # start both from a checkpointed WAL, as after a quiet period
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Alternate the two stores, 200 cycles at a time, so that machine noise hits both alike.
    timings: dict[Path, list[Timed]] = {small: [], large: []}
    for i in range(4):
        for db in (small, large):
            timings[db].append(cycles_ours(str(db), f"wb{i}", 200))
    rates = [sum(n for n, _, _ in timings[db]) / sum(end - start for _, start, end in timings[db])
             for db in (small, large)]
    figures.append(Figure(f"claim+complete, {backlog:,} backlog vs 1,000", "cycles/s",
                          rates[1], rates[0], goal=0.9))
    return figures


def write_replay_log(store: EventStore, events: int) -> None:
    """A realistic log: per task, submit, claim, renew and complete, and one spend."""
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    per_task = 5
    for start in range(0, events // per_task, 1000):
        with store.transaction() as tx:
            for i in range(start, min(events // per_task, start + 1000)):
                tid = f"t{i}"
                tx.append(task_stream(tid), [ev.encode(e) for e in (
                    ev.TaskSubmitted(task_id=tid, title=tid, priority=PRIORITIES[i % 4]),
                    ev.TaskClaimed(task_id=tid, worker="w1", attempt=1, lease_expires_at=now),
                    ev.LeaseRenewed(task_id=tid, worker="w1", attempt=1, lease_expires_at=now),
                    ev.TaskCompleted(task_id=tid, worker="w1", attempt=1),
                )], 0)
                tx.append(SPEND_STREAM, [ev.encode(ev.SpendRecorded(
                    amount=Decimal("0.01"), occurred_at=now, task=tid, worker="w1"))])


def replay_figure(work: Path, events: int) -> Figure:
    """Fold a realistic log (submit, claim, renew, complete, spend per task) into all views."""
    path = work / "replay.db"
    store = open_store(str(path))
    write_replay_log(store, events)
    total = store.head()
    start = time.perf_counter()
    fold_log(store)
    ours = total / (time.perf_counter() - start)
    raw_conn = sqlite3.connect(path)
    start = time.perf_counter()
    scanned = sum(1 for _ in raw_conn.execute("SELECT * FROM events"))
    raw = scanned / (time.perf_counter() - start)
    store.close()
    return Figure(f"replay {total:,} events, 4 projections", "events/s", ours, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--replay-events", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tri24es-bench-"))
    print(f"claims and replay vs raw sqlite3 {sqlite3.sqlite_version}, WAL, synchronous=NORMAL")
    figures = claim_figures(work, args.cycles, args.backlog)
    figures.append(replay_figure(work, args.replay_events))
    for figure in figures:
        print(figure.line())


if __name__ == "__main__":
    main()
