"""PgQueuer and Procrastinate on PostgreSQL: enqueue a backlog, then drain it, recording the
id of every job whose handler ran. Each library keeps its defaults (PgQueuer: batches of 10
jobs per dequeue, completions logged in batches; Procrastinate: one job at a time), except
that both stop once the queue is empty (PgQueuer ``mode=drain``, Procrastinate
``wait=False``). Runs in the peers' venv."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from benchmarks.scale.protocol import main_of, ready_then_go, report

logging.disable(logging.WARNING)  # their per-job info lines would be most of the work


def job_ids(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


# --- PgQueuer --------------------------------------------------------------------------------


def seed_pgqueuer(p: dict[str, Any]) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    async def seed() -> None:
        conn = await asyncpg.connect(p["dsn"])
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        ids = job_ids(p["jobs"])
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            await queries.enqueue(["bench"] * len(chunk), [i.encode() for i in chunk],
                                  [0] * len(chunk))
        await conn.close()

    asyncio.run(seed())
    report(done=p["jobs"])


def work_pgqueuer(p: dict[str, Any]) -> None:
    import time

    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    async def drain() -> None:
        conn = await asyncpg.connect(p["dsn"])
        manager = QueueManager(Queries(AsyncpgDriver(conn)))
        ran: list[str] = []

        @manager.entrypoint("bench")
        async def bench(job: Job) -> None:
            assert job.payload is not None
            ran.append(job.payload.decode())

        start = ready_then_go()
        await manager.run(mode=QueueExecutionMode.drain)
        end = time.monotonic()
        report(done=len(ran), start=start, end=end, ran=ran)
        await conn.close()

    asyncio.run(drain())


# --- Procrastinate ---------------------------------------------------------------------------


def procrastinate_app(dsn: str, ran: list[str]) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench")
    async def bench(job_id: str) -> None:
        ran.append(job_id)

    return app, bench


def seed_procrastinate(p: dict[str, Any]) -> None:
    app, bench = procrastinate_app(p["dsn"], [])

    async def seed() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            ids = job_ids(p["jobs"])
            for start in range(0, len(ids), 1000):
                await bench.batch_defer_async(*[{"job_id": i} for i in ids[start:start + 1000]])

    asyncio.run(seed())
    report(done=p["jobs"])


def work_procrastinate(p: dict[str, Any]) -> None:
    import time

    ran: list[str] = []
    app, _ = procrastinate_app(p["dsn"], ran)

    async def drain() -> None:
        async with app.open_async():
            start = ready_then_go()
            await app.run_worker_async(wait=False, install_signal_handlers=False)
            end = time.monotonic()
        report(done=len(ran), start=start, end=end, ran=ran)

    asyncio.run(drain())


if __name__ == "__main__":
    main_of({"seed_pgqueuer": seed_pgqueuer, "work_pgqueuer": work_pgqueuer,
             "seed_procrastinate": seed_procrastinate, "work_procrastinate": work_procrastinate})
