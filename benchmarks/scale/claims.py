"""Claim + complete throughput: tri24es, the raw one-commit-per-job queue and the peer
queues, each draining the same backlog with 1 and 4 processes, rounds interleaved. After
every run the ids that the handlers ran are checked: a job run twice is a duplicate, a job
never run is lost (tri24es's log and views are checked as well)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.scale.launch import GroupResult, Workload, WorkloadFailed, run_group, run_one
from benchmarks.scale.ours import audit
from benchmarks.scale.peersenv import PeersEnv
from benchmarks.scale.pg import PgServer
from benchmarks.scale.raw_queues import done_count_sqlite
from benchmarks.scale.report import Goal, Results, Row, Series


@dataclass(frozen=True)
class Queue:
    name: str
    module: str
    seed: str
    work: str
    peer: str | None = None  # the peer it needs from the peers' venv; None: the project's venv
    note: str = ""


OURS_SQLITE = Queue("tri24es", "benchmarks.scale.ours", "seed", "work")
RAW_SQLITE = Queue("raw 1-commit queue", "benchmarks.scale.raw_queues", "seed_sqlite",
                   "work_sqlite")
SQLITE_PEERS = [
    Queue("litequeue", "benchmarks.scale.peer.sqlite_queues", "seed_litequeue",
          "work_litequeue", "litequeue", "2 commits per job (pop, done); its pop orders by"
          " message id over the status index, so it slows as finished jobs pile up (1k jobs"
          " drain several times faster per job than 10k)"),
    Queue("huey", "benchmarks.scale.peer.sqlite_queues", "seed_huey", "work_huey", "huey",
          "dequeue deletes the job before it runs (at most once)"),
    Queue("persist-queue", "benchmarks.scale.peer.sqlite_queues", "seed_persistqueue",
          "work_persistqueue", "persist-queue", "SQLiteAckQueue: get, then ack"),
]
OURS_PG = Queue("tri24es", "benchmarks.scale.ours", "seed", "work")
RAW_PG = Queue("raw SKIP LOCKED", "benchmarks.scale.raw_queues", "seed_pg", "work_pg")
PG_PEERS = [
    Queue("PgQueuer", "benchmarks.scale.peer.pg_queues", "seed_pgqueuer", "work_pgqueuer",
          "PgQueuer", "defaults: 10 jobs per dequeue, completions logged in batches"),
    Queue("Procrastinate", "benchmarks.scale.peer.pg_queues", "seed_procrastinate",
          "work_procrastinate", "Procrastinate", "defaults: 1 job at a time"),
]


class Target:
    """Where one contender's round keeps its queue: a fresh SQLite path or database."""

    def __init__(self, work: Path, pg: PgServer | None, label: str) -> None:
        self.pg = pg
        self.path = work / label
        self.dsn = pg.fresh() if pg is not None else None

    @property
    def params(self) -> dict[str, Any]:
        if self.dsn is not None:
            return {"dsn": self.dsn, "url": self.dsn}
        return {"path": str(self.path), "url": str(self.path)}

    def close(self) -> None:
        if self.pg is not None and self.dsn is not None:
            self.pg.drop(self.dsn)
        elif self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for p in self.path.parent.glob(self.path.name + "*"):  # -wal, -shm, .bells/
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()


def drain_round(queue: Queue, python: str, target: Target, jobs: int,
                processes: int) -> tuple[GroupResult, dict[str, int]]:
    """Seed ``jobs`` jobs, drain them with ``processes`` processes from a common start."""
    params = target.params
    run_one(Workload(python, queue.module, params | {"mode": queue.seed, "jobs": jobs}))
    result = run_group([
        Workload(python, queue.module, params | {"mode": queue.work, "worker": f"w{i}"})
        for i in range(processes)
    ])
    checks = {"duplicates": result.duplicates(), "lost": result.lost(f"t{i}" for i in
                                                                     range(jobs))}
    if queue is OURS_SQLITE or queue is OURS_PG:
        found = audit(target.params["url"])
        checks |= {k: v for k, v in found.items() if k != "late_claims"} | {
            "claimed_after_completion": found["late_claims"],
            # waits past the busy timeout, ridden out as the worker does (see ours.steady)
            "store_locked_retries": sum(int(p.get("store_locked_retries", 0))
                                        for p in result.per_process)}
    elif queue is RAW_SQLITE:
        states = done_count_sqlite(str(target.path))
        checks["left_undone"] = sum(n for s, n in states.items() if s != "done")
    return result, checks


def measure(results: Results, *, backend: str, work: Path, pg: PgServer | None,
            peers: PeersEnv, jobs: int, rounds: int, processes: tuple[int, ...]) -> None:
    ours, raw, others = ((OURS_SQLITE, RAW_SQLITE, SQLITE_PEERS) if backend == "sqlite"
                         else (OURS_PG, RAW_PG, PG_PEERS))
    for n in processes:
        title = f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'} claim+complete, {n} proc"
        queues = [ours, raw, *others]
        series = {q.name: Series(q.name, "jobs/s") for q in queues}
        for q in others:
            if not peers.has(q.peer or ""):
                series[q.name].error = peers.status.get(q.peer or "", "not installed")
        for r in range(rounds):
            for q in queues:
                s = series[q.name]
                if s.error:
                    continue
                python = sys.executable if q.peer is None else str(peers.python)
                target = Target(work, pg, f"{backend}-{q.name.replace(' ', '_')}-p{n}-r{r}")
                try:
                    result, checks = drain_round(q, python, target, jobs, n)
                except WorkloadFailed as e:
                    s.error = str(e)
                    print(f"  {title}: {q.name} failed: {e}", file=sys.stderr)
                    continue
                finally:
                    target.close()
                s.runs.append(result.rate)
                s.add_checks(**checks)
                print(f"    {title} round {r + 1}: {q.name} {result.rate:,.0f} jobs/s "
                      f"({result.done} jobs in {result.seconds:.2f} s) {checks}", flush=True)
        for q in [raw, *others]:
            goal = None
            if q is raw:
                goal = Goal("ratio", ">=", 0.5 if backend == "pg" else 0.3)
            elif backend == "pg":
                goal = Goal("ratio", ">=", 1.5)
            results.add(Row(title, series[ours.name], series[q.name], goal, q.note, q.name))
        results.sections.setdefault("claims", {})[title] = {
            name: {"runs": s.runs, "checks": s.checks, "error": s.error}
            for name, s in series.items()}
    if backend == "pg" and len(processes) > 1:
        one, four = (series_of(results, f"PostgreSQL claim+complete, {n} proc")
                     for n in (processes[0], processes[-1]))
        if one is not None and four is not None:
            results.add(Row(f"PostgreSQL claim+complete, {processes[-1]} proc vs 1", four,
                            Series(f"tri24es, {processes[0]} proc", "jobs/s", one.runs),
                            Goal("ratio", ">=", 2.5)))
    if backend == "pg":
        # What bounds the goals (no goal of their own): how far the raw loop itself scales
        # on this machine's cores, and how far ahead of a loop that commits each job the
        # peer that takes jobs in batches runs.
        raws = [versus_of(results, f"PostgreSQL claim+complete, {n} proc", raw.name)
                for n in processes]
        if len(processes) > 1 and raws[0] is not None and raws[-1] is not None:
            results.add(Row(f"raw SKIP LOCKED, {processes[-1]} proc vs 1", raws[-1],
                            Series(f"raw, {processes[0]} proc", "jobs/s", raws[0].runs)))
        for n, raw_n in zip(processes, raws, strict=True):
            batched = versus_of(results, f"PostgreSQL claim+complete, {n} proc", "PgQueuer")
            if raw_n is not None and batched is not None:
                results.add(Row(f"PgQueuer against raw SKIP LOCKED, {n} proc", batched,
                                raw_n))


def series_of(results: Results, figure: str) -> Series | None:
    return next((r.ours for r in results.rows if r.figure == figure), None)


def versus_of(results: Results, figure: str, name: str) -> Series | None:
    """The series of contender ``name`` measured beside tri24es in ``figure``."""
    return next((r.versus for r in results.rows if r.figure == figure
                 and r.versus is not None and r.versus.name == name and r.versus.runs), None)
