"""tri24es's side of the claim figures, run by the harness in the project's venv: claim and
complete as ``tri24es worker`` does (completing a task and claiming the next in one
transaction), until nothing is left to claim."""

from __future__ import annotations

import os
from typing import Any

from benchmarks.bench_claims import check_exactly_once, seed
from benchmarks.scale.protocol import main_of, report, run_timed
from eventlog import open_store
from tri24es.projections import QUEUE, connection_of
from tri24es.services import Services


def seed_store(p: dict[str, Any]) -> None:
    seed(p["url"], p["jobs"])
    report(done=p["jobs"])


def work(p: dict[str, Any]) -> None:
    worker = p["worker"]
    services = Services(open_store(p["url"]), actor=worker)
    services.start_worker(worker, pid=os.getpid(), pid_start_time=0, host="bench")
    limit = p.get("limit")

    def cycles() -> list[str]:
        ran: list[str] = []
        claim = services.claim(worker)
        while claim is not None:
            ran.append(claim.task_id)
            more = limit is None or len(ran) < limit
            claim = services.complete(claim.task_id, worker, claim.attempt, claim_next=more)
        return ran

    run_timed(cycles)
    services.stopped(worker)
    services.store.close()


def audit(url: str) -> dict[str, int]:
    """What the log and the views say after a run: tasks completed twice, claims of tasks
    already completed, tasks left running, tasks left queued."""
    twice, late = check_exactly_once(url)
    with open_store(url) as store, store.snapshot() as tx:
        conn = connection_of(tx)
        running, queued = len(QUEUE.all(conn, "running")), len(QUEUE.all(conn, "queued"))
    return {"completed_twice": twice, "late_claims": late, "left_running": running,
            "left_queued": queued}


if __name__ == "__main__":
    main_of({"seed": seed_store, "work": work})
