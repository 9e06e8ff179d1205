"""eventsourcing (the library) beside the store: single appends, and the same kind of log as
tri24es's replay figure (per task: submitted, claimed, lease renewed, completed, and one
spend) written as aggregate events, then read back and folded into in-memory views, in a
fresh process so that its peak memory is the fold's. SQLite runs in WAL mode (its own
setting) and is given ``synchronous=NORMAL``, the store's. Runs in the peers' venv."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from benchmarks.scale.protocol import main_of, ready_then_go, report, run_timed


def environment(p: dict[str, Any]) -> dict[str, str]:
    if "path" in p:
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": p["path"]}
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": p["dbname"],
            "POSTGRES_HOST": p["host"], "POSTGRES_PORT": str(p["port"]),
            "POSTGRES_USER": p["user"], "POSTGRES_PASSWORD": p.get("password", "")}


def make_app(p: dict[str, Any]) -> Any:
    from eventsourcing import sqlite
    from eventsourcing.application import Application

    if "path" in p and not getattr(sqlite, "_bench_normal_sync", False):
        opened = sqlite.SQLiteConnectionPool._create_connection

        def normal_sync(self: Any) -> Any:
            conn = opened(self)
            conn._sqlite_conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        sqlite.SQLiteConnectionPool._create_connection = normal_sync  # type: ignore[method-assign]
        sqlite._bench_normal_sync = True  # type: ignore[attr-defined]
    return Application(env=environment(p))


def domain() -> tuple[Any, Any]:
    from benchmarks.scale.peer.es_domain import Spend, Task

    return Task, Spend


def appends(p: dict[str, Any]) -> None:
    """Single appends: one event in a new aggregate sequence per commit, at the recorder (the
    store's level: no aggregate, the payload bytes given)."""
    from eventsourcing.persistence import StoredEvent

    app = make_app(p)
    payload = p["payload"].encode()
    events = [StoredEvent(uuid.uuid4(), 1, "bench:Event", payload) for _ in range(p["events"])]
    recorder = app.recorder

    def work() -> list[str]:
        for stored in events:
            recorder.insert_events([stored])
        return [str(e.originator_id) for e in events]

    run_timed(work)
    app.close()


def write_log(p: dict[str, Any]) -> None:
    """``events`` events: per task 4 task events and 1 spend, 1,000 tasks per commit."""
    Task, Spend = domain()
    app = make_app(p)
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    tasks = p["events"] // 5
    for start in range(0, tasks, 1000):
        batch = []
        for i in range(start, min(tasks, start + 1000)):
            task = Task(title=f"t{i}", priority=i % 4)
            task.claim(worker="w1", attempt=1, lease_expires_at=now)
            task.renew(worker="w1", attempt=1, lease_expires_at=now)
            task.complete(worker="w1", attempt=1)
            batch += [task, Spend(amount=Decimal("0.01"), task=f"t{i}", worker="w1",
                                  occurred_at=now)]
        app.save(*batch)
    app.close()
    report(done=tasks * 5)


def replay(p: dict[str, Any]) -> None:
    """Read every event in order, decode it to its domain event, and fold: the state of each
    task and the spend total (``fold: false`` only reads and decodes)."""
    Task, Spend = domain()
    app = make_app(p)
    recorder, mapper, fold = app.recorder, app.mapper, p.get("fold", True)
    start = ready_then_go()
    states: dict[Any, str] = {}
    spent, read = Decimal(0), 0
    moves = {Task.Submitted: "queued", Task.Claimed: "running", Task.Completed: "completed"}
    after = 0
    while notifications := recorder.select_notifications(after, 1000,
                                                         inclusive_of_start=False):
        for n in notifications:
            e = mapper.to_domain_event(n)
            if fold:
                state = moves.get(type(e))
                if state is not None:
                    states[e.originator_id] = state
                elif isinstance(e, Spend.Recorded):
                    spent += e.amount
        read += len(notifications)
        after = notifications[-1].id
    end = time.monotonic()
    completed = sum(1 for s in states.values() if s == "completed")
    report(done=read, start=start, end=end, ran=[], completed=completed, spent=str(spent),
           pid=os.getpid())
    app.close()


if __name__ == "__main__":
    main_of({"appends": appends, "write_log": write_log, "replay": replay})
