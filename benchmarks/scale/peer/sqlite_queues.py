"""litequeue, huey (SQLite storage) and persist-queue (SQLiteAckQueue) on SQLite: enqueue a
backlog, then drain it, recording the id of every job whose handler ran. Each runs in WAL mode
at ``synchronous=NORMAL``, the store's settings: litequeue sets both itself; huey is given
NORMAL on each connection it opens (its own option offers only OFF or FULL); persist-queue
sets WAL and is given NORMAL on its two connections. Runs in the peers' venv."""

from __future__ import annotations

import os
from typing import Any

from benchmarks.scale.protocol import main_of, report, run_timed

SYNCHRONOUS = "PRAGMA synchronous = NORMAL"


def job_ids(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


# --- litequeue: pop (one UPDATE ... RETURNING) then done (one UPDATE) --------------------------


def seed_litequeue(p: dict[str, Any]) -> None:
    from litequeue import LiteQueue

    queue = LiteQueue(p["path"])
    with queue.transaction():
        for job in job_ids(p["jobs"]):
            queue.put(job)
    queue.close()
    report(done=p["jobs"])


def work_litequeue(p: dict[str, Any]) -> None:
    from litequeue import LiteQueue

    queue = LiteQueue(p["path"], timeout=30)

    def drain() -> list[str]:
        ran: list[str] = []
        while (message := queue.pop()) is not None:
            ran.append(message.data)
            queue.done(message.message_id)
        return ran

    run_timed(drain)
    queue.close()


# --- huey: dequeue (a DELETE in an exclusive transaction), then execute the task -------------


def huey_app(path: str, ran: list[str]) -> Any:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class NormalSync(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            conn.execute(SYNCHRONOUS)
            return conn

    huey = SqliteHuey(filename=path, results=False, storage_class=NormalSync, timeout=30)

    @huey.task()
    def bench(job_id: str) -> None:
        ran.append(job_id)

    return huey, bench


def seed_huey(p: dict[str, Any]) -> None:
    _, bench = huey_app(p["path"], [])
    for job in job_ids(p["jobs"]):
        bench(job)
    report(done=p["jobs"])


def work_huey(p: dict[str, Any]) -> None:
    ran: list[str] = []
    huey, _ = huey_app(p["path"], ran)

    def drain() -> list[str]:  # what huey's consumer does for each task, without its threads
        while (task := huey.dequeue()) is not None:
            huey.execute(task)
        return ran

    run_timed(drain)


# --- persist-queue: get (SELECT, then UPDATE to unack), then ack (UPDATE) ---------------------


def ack_queue(path: str) -> Any:
    from persistqueue import SQLiteAckQueue

    os.makedirs(path, exist_ok=True)
    queue = SQLiteAckQueue(path, auto_commit=True, timeout=30)
    for conn in {id(c): c for c in (queue._getter, queue._putter)}.values():
        conn.execute(SYNCHRONOUS)
    return queue


def seed_persistqueue(p: dict[str, Any]) -> None:
    queue = ack_queue(p["path"])
    for job in job_ids(p["jobs"]):
        queue.put(job)
    queue.close()
    report(done=p["jobs"])


def work_persistqueue(p: dict[str, Any]) -> None:
    from persistqueue import Empty

    queue = ack_queue(p["path"])

    def drain() -> list[str]:
        ran: list[str] = []
        while True:
            try:
                item = queue.get(block=False, raw=True)
            except Empty:
                return ran
            ran.append(item["data"])
            queue.ack(id=item["pqid"])

    run_timed(drain)
    queue.close()


if __name__ == "__main__":
    main_of({"seed_litequeue": seed_litequeue, "work_litequeue": work_litequeue,
             "seed_huey": seed_huey, "work_huey": work_huey,
             "seed_persistqueue": seed_persistqueue, "work_persistqueue": work_persistqueue})
