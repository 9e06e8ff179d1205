"""tri24es's side of the claim figures, run by the harness in the project's venv: claim and
complete as ``tri24es worker`` does (completing a task and claiming the next in one
transaction), until nothing is left to claim."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from benchmarks.bench_claims import check_exactly_once, seed, write_replay_log
from benchmarks.scale.protocol import main_of, ready_then_go, report, run_timed
from eventlog import open_store
from tri24es.projections import connection_of, reads
from tri24es.runtime.resilience import Outage, ride_out
from tri24es.services import Services

T = TypeVar("T")


def seed_store(p: dict[str, Any]) -> None:
    seed(p["url"], p["jobs"])
    report(done=p["jobs"])


def work(p: dict[str, Any]) -> None:
    worker = p["worker"]
    services = Services(open_store(p["url"]), actor=worker)
    services.start_worker(worker, pid=os.getpid(), pid_start_time=0, host="bench")
    limit = p.get("limit")

    # As the worker does: a store locked past the busy timeout is waited out, not fatal
    # (SQLite's busy handler is not fair: among processes in tight loops one can wait past
    # the 5 s timeout). Each wait is counted in the result.
    outage = Outage(worker, report=lambda line: None)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    def steady(fn: Callable[[], T]) -> T:
        return ride_out(fn, outage, wait)

    def cycles() -> list[str]:
        ran: list[str] = []
        claim = steady(lambda: services.claim(worker))
        while claim is not None:
            ran.append(claim.task_id)
            more = limit is None or len(ran) < limit
            claim = steady(partial(services.complete, claim.task_id, worker, claim.attempt,
                                   claim_next=more))
        return ran

    start = ready_then_go()
    ran = cycles()
    report(done=len(ran), start=start, end=time.monotonic(), ran=ran,
           store_locked_retries=len(waits))
    services.stopped(worker)
    services.store.close()


def write_log(p: dict[str, Any]) -> None:
    """The replay figure's log: per task, submit, claim, renew, complete and one spend."""
    with open_store(p["url"]) as store:
        write_replay_log(store, p["events"])
        report(done=store.head())


def read(p: dict[str, Any]) -> None:
    """Read the whole log and decode every event to its model."""
    from tri24es.events import decode_all

    store = open_store(p["url"])
    run_timed(lambda: [None for _ in decode_all(store.read_all())])
    store.close()


def read_raw(p: dict[str, Any]) -> None:
    """The floor: every row of the events table through plain sqlite3."""
    import sqlite3

    conn = sqlite3.connect(p["url"])
    run_timed(lambda: [None for _ in conn.execute("SELECT * FROM events")])
    conn.close()


def audit(url: str) -> dict[str, int]:
    """What the log and the views say after a run: tasks completed twice, claims of tasks
    already completed, tasks left running, tasks left queued."""
    twice, late = check_exactly_once(url)
    with open_store(url) as store, store.snapshot() as tx:
        conn = connection_of(tx)
        running, queued = len(reads.tasks(conn, "running")), len(reads.tasks(conn, "queued"))
    return {"completed_twice": twice, "late_claims": late, "left_running": running,
            "left_queued": queued}


if __name__ == "__main__":
    main_of({"seed": seed_store, "work": work, "write_log": write_log, "read": read,
             "read_raw": read_raw})
