"""Four worker processes reserving from one daily limit, on each backend: what running
attempts hold plus what was spent today never passes the limit, counted from the log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal

import eventlog
from tri24es.events import decode_all
from tri24es.projections.upkeep import verify
from tri24es.services import Services, TaskSpec

DAILY = Decimal("4")
DEFAULT = Decimal("0.5")  # the reservation of a task without a budget
SPEND = Decimal("0.05")  # what each attempt spends, well within its reservation
TASKS = 24  # of each kind: a $1 budget, and none
WORKERS = 4

# Each worker is a separate interpreter with its own connection and its own Services, given
# the limits (as `tri24es worker` gives its settings). It spends a little on each task and
# holds it a moment, so that the four overlap and the reservations are what stop claims.
WORKER = """
import json, os, sys, time
from decimal import Decimal
from zoneinfo import ZoneInfo
import eventlog
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.projections import connection_of, reads
from tri24es.services import Services
from tri24es.timeutil import from_us, now_us

path, worker_id, daily, default, spend = sys.argv[1:6]
store = eventlog.open_store(path)
budget = BudgetLimits(daily_limit=Decimal(daily), timezone=ZoneInfo("UTC"),
                      default_reservation=Decimal(default))
svc = Services(store, actor=worker_id, budget=budget)
svc.start_worker(worker_id, pid=os.getpid(), pid_start_time=0, host="test")
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # the go signal: every worker starts claiming at once
done, refused = [], 0
while True:
    claim = svc.claim(worker_id)
    if claim is None:
        with store.snapshot() as tx:
            conn = connection_of(tx)
            if not reads.tasks(conn, "queued") and not reads.tasks(conn, "running"):
                break
        refused += 1
        time.sleep(0.002)
        continue
    svc.record_spend(ev.SpendRecorded(amount=Decimal(spend), occurred_at=from_us(now_us()),
                                      task=claim.task_id, worker=worker_id, source="worker"))
    time.sleep(0.01)
    svc.complete(claim.task_id, worker_id, claim.attempt)
    done.append(claim.task_id)
store.close()
print(json.dumps({"done": done, "refused": refused}))
"""


def test_four_workers_never_reserve_more_than_is_left_of_the_day(
    new_url: Callable[[], str]
) -> None:
    path = new_url()
    store = eventlog.open_store(path)
    Services(store).submit_many(
        [TaskSpec(f"b{i:03d}", "budgeted", max_budget_usd=Decimal(1)) for i in range(TASKS)]
        + [TaskSpec(f"o{i:03d}", "open") for i in range(TASKS)])
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, f"w{n}", str(DAILY),
                               str(DEFAULT), str(SPEND)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for n in range(WORKERS)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [json.loads(proc.communicate(timeout=300)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * WORKERS
    assert sum(len(out["done"]) for out in outputs) == 2 * TASKS  # spend stays far below

    # Replay the log: at every claim, today's spend plus what running attempts still hold
    # (each its reservation less what it spent since its claim) is within the daily limit.
    reserved: dict[str, Decimal] = {}  # running task -> its reservation
    spent_since: dict[str, Decimal] = {}
    spent_today, peak, claims = Decimal(0), Decimal(0), 0
    for envelope in decode_all(store.read_all(
            types=["TaskClaimed", "SpendRecorded", "TaskCompleted"])):
        event = envelope.event
        if event.topic == "TaskClaimed":
            task = event.task_id  # type: ignore[attr-defined]
            reserved[task] = event.reserved_usd or Decimal(0)  # type: ignore[attr-defined]
            assert reserved[task] == (Decimal(1) if task.startswith("b") else DEFAULT)
            spent_since[task] = Decimal(0)
            claims += 1
            held = sum(max(reserved[t] - spent_since[t], Decimal(0)) for t in reserved)
            peak = max(peak, spent_today + held)
            assert spent_today + held <= DAILY, (claims, spent_today, held)
        elif event.topic == "SpendRecorded":
            spent_today += event.amount  # type: ignore[attr-defined]
            if event.task in spent_since:  # type: ignore[attr-defined]
                spent_since[event.task] += event.amount  # type: ignore[attr-defined]
        else:
            del reserved[event.task_id], spent_since[event.task_id]  # type: ignore[attr-defined]
    assert claims == 2 * TASKS
    assert peak > DAILY - Decimal(1)  # the limit was what bound the claims, not the workers
    assert verify(store) == []
    store.close()
