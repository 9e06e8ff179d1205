"""How much each figure does, for a full run, a quick one (--quick) and the test's smoke run."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    rounds: int = 3
    sqlite_jobs: int = 10_000
    pg_jobs: int = 2_000
    processes: tuple[int, ...] = (1, 4)
    appends: int = 2_000  # single appends per round (SQLite; PostgreSQL gets a fifth)
    backlog: int = 1_000_000
    small_backlog: int = 1_000
    backlog_cycles: int = 500  # claims timed per store and round
    replay_events: tuple[int, ...] = (100_000, 1_000_000)
    latency_tasks: int = 30  # submits per side
    herd_workers: int = 30
    herd_rates: tuple[int, ...] = (0, 10, 50)
    herd_seconds: float = 20.0


FULL = Sizes()
QUICK = Sizes(rounds=1, sqlite_jobs=1_000, pg_jobs=300, appends=500, backlog=50_000,
              backlog_cycles=200, replay_events=(20_000, 100_000), latency_tasks=10,
              herd_seconds=5.0)
SMOKE = replace(QUICK, sqlite_jobs=200, pg_jobs=60, processes=(2,), appends=100,
                backlog=2_000, small_backlog=200, backlog_cycles=50, replay_events=(2_000,),
                latency_tasks=3, herd_workers=3, herd_rates=(0, 10), herd_seconds=1.0)
