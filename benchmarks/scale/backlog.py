"""The size of the queue and of the log should not matter: claims at a large backlog beside a
small one (a cold OS page cache and a warm one), and ``status``, ``spend`` and ``tasks list``
at both (wall time and peak memory of the whole command)."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

from benchmarks.scale.launch import Workload, make_cold, run_command, run_group, run_one
from benchmarks.scale.report import Goal, Results, Row, Series

COMMANDS = {"status": ["status"], "spend": ["spend"], "tasks list": ["tasks", "list"]}


def seed(path: Path, tasks: int) -> float:
    started = time.perf_counter()
    run_one(Workload(sys.executable, "benchmarks.scale.ours",
                     {"mode": "seed", "url": str(path), "jobs": tasks}))
    with sqlite3.connect(path) as conn:  # start from a checkpointed WAL, as after a quiet spell
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def top_up(path: Path, tag: str, n: int) -> None:
    """Put back as many tasks as a round claims, so that the backlog keeps its size."""
    from eventlog import open_store
    from tri24es.services import Services, TaskSpec

    with open_store(str(path)) as store:
        Services(store, actor="bench").submit_many(
            [TaskSpec(f"{tag}-{i}", f"task {tag} {i}") for i in range(n)])


def measure(results: Results, *, work: Path, tasks: int, small: int, cycles: int,
            rounds: int) -> None:
    stores = {small: work / "backlog-small.db", tasks: work / "backlog-large.db"}
    for n, path in stores.items():
        print(f"    seeding {n:,} tasks: {seed(path, n):.1f} s", flush=True)
    files = [p for path in stores.values() for p in (path, Path(f"{path}-wal"))]
    how: set[str] = set()
    rates = {(n, cache): Series(f"{n:,} backlog", "jobs/s") for n in stores
             for cache in ("cold", "warm")}
    for r in range(max(rounds, 2)):
        order = list(stores.items()) if r % 2 == 0 else list(stores.items())[::-1]
        for cache in ("cold", "warm"):
            for n, path in order:
                top_up(path, f"r{r}{cache}", cycles)
                result = run_group(
                    [Workload(sys.executable, "benchmarks.scale.ours",
                              {"mode": "work", "url": str(path), "worker": f"b{r}{cache}",
                               "limit": cycles})],
                    before_go=(lambda: how.add(make_cold(files))) if cache == "cold" else None)
                rates[n, cache].runs.append(result.rate)
                rates[n, cache].add_checks(duplicates=result.duplicates())
                print(f"    backlog {n:,} {cache} round {r + 1}: {result.rate:,.0f} jobs/s",
                      flush=True)
    for cache in ("cold", "warm"):
        results.add(Row(f"claim+complete at a {tasks:,}-task backlog vs {small:,}, {cache}"
                        " cache", rates[tasks, cache], rates[small, cache],
                        Goal("ratio", ">=", 0.9),
                        f"cold: {', '.join(sorted(how))} after the worker process was set up"
                        if cache == "cold" else ""))
    commands(results, work, stores, small, tasks, rounds)


def commands(results: Results, work: Path, stores: dict[int, Path], small: int, tasks: int,
             rounds: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    times = {(c, n): Series(f"at {n:,} tasks", "s") for c in COMMANDS for n in stores}
    memory = {(c, n): Series(f"at {n:,} tasks", "MiB") for c in COMMANDS for n in stores}
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            for n, path in stores.items():
                run = run_command([sys.executable, "-m", "tri24es", *argv],
                                  env | {"TRI24ES_ROOT": str(work), "TRI24ES_DB": str(path)})
                if run.exit_code != 0:
                    times[name, n].error = memory[name, n].error = run.stderr_tail.strip()
                    continue
                times[name, n].runs.append(run.seconds)
                memory[name, n].runs.append(run.peak_tree_rss_mib)
                print(f"    `tri24es {' '.join(argv)}` at {n:,} tasks: {run.seconds:.2f} s, "
                      f"{run.peak_tree_rss_mib:.0f} MiB", flush=True)
    for name in COMMANDS:
        results.add(Row(f"`{name}` time, {tasks:,} vs {small:,} tasks", times[name, tasks],
                        times[name, small], Goal("ratio", "<=", 1.1),
                        "goal ≤ 1.1x: 'independent of backlog' (the issue names no number)",
                        "`status`, `spend`, `tasks list`"))
        results.add(Row(f"`{name}` peak memory, {tasks:,} vs {small:,} tasks",
                        memory[name, tasks], memory[name, small], Goal("ratio", "<=", 1.1)))
