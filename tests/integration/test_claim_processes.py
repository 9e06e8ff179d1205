"""Four worker processes drain one queue, on each backend: every task is completed exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest

import eventlog
from tri24es.events import decode_all
from tri24es.projections import connection_of, reads
from tri24es.projections.upkeep import verify
from tri24es.services import Services, TaskSpec

WORKERS = 4
# PostgreSQL: every statement is a round trip to the server (~0.1 ms here) and writers take
# turns on one advisory lock, so ~200 cycles/s with four workers; 1,000 tasks keep the run
# short while still interleaving the four claimers thousands of times.
TASKS = {"sqlite": 5_000, "postgresql": 1_000}

# Each worker is a separate interpreter: its own connection, its own Services. Set up, it
# says "ready" and waits for the go signal: every worker starts claiming at once.
WORKER_SET_UP = """
import json, os, sys, time
import eventlog
from tri24es.projections import connection_of, reads
from tri24es.projections.workers import WORKERS
from tri24es.runtime.resilience import Outage, ride_out
from tri24es.services import Services

path, worker_id = sys.argv[1], sys.argv[2]
# As a real worker does: a lock held past the busy timeout (a loaded machine descheduling
# the holder) is waited out, not fatal.
outage = Outage(worker_id, report=lambda line: None)
store = eventlog.open_store(path)
svc = Services(store, actor=worker_id)
svc.start_worker(worker_id, pid=os.getpid(), pid_start_time=0, host="test")
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()
"""

WORKER = WORKER_SET_UP + """
done = []
while True:
    claim = ride_out(lambda: svc.claim(worker_id), outage)
    if claim is None:
        def queued():
            with store.transaction() as tx:
                return reads.tasks(connection_of(tx), "queued", 1)
        if not ride_out(queued, outage):
            break
        continue
    ride_out(lambda: svc.complete(claim.task_id, worker_id, claim.attempt), outage)
    done.append(claim.task_id)
store.close()
print(json.dumps(done))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)  # a ceiling for a loaded machine; a second or two when quiet
def test_four_worker_processes_complete_every_task_exactly_once(
    new_url: Callable[[], str],
) -> None:
    path = new_url()
    store = eventlog.open_store(path)
    backend = "sqlite" if eventlog.sqlite_path(path) else "postgresql"
    tasks = TASKS[backend]
    svc = Services(store)
    began = time.perf_counter()
    for first in range(0, tasks, 500):
        svc.submit_many([TaskSpec(f"t{i:05d}", f"task {i}") for i in range(first, first + 500)])
    submit_seconds = time.perf_counter() - began

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, path, f"w{n}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for n in range(WORKERS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    began = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    elapsed = time.perf_counter() - began
    assert [proc.returncode for proc in procs] == [0] * WORKERS
    by_worker = [json.loads(out) for out in outputs]
    print(
        f"\nsubmitted {tasks} in {submit_seconds:.2f}s; {WORKERS} workers did {tasks} "
        f"claim+complete cycles in {elapsed:.2f}s = {tasks / elapsed:.0f} cycles/s; "
        f"per worker {[len(d) for d in by_worker]}"
    )

    reported = Counter(task_id for done in by_worker for task_id in done)
    assert len(reported) == tasks
    assert set(reported.values()) == {1}

    completions = Counter(e.event.task_id for e in decode_all(store.read_all(  # type: ignore[attr-defined]
        types=["TaskCompleted"])))
    assert len(completions) == tasks
    assert set(completions.values()) == {1}

    completed_at: dict[str, int] = {}
    for envelope in decode_all(store.read_all(types=["TaskClaimed", "TaskCompleted"])):
        task_id = envelope.event.task_id  # type: ignore[attr-defined]
        assert task_id not in completed_at, f"{task_id} claimed or completed after completion"
        if envelope.event.topic == "TaskCompleted":
            completed_at[task_id] = envelope.position

    with store.transaction() as tx:
        rows = reads.tasks(connection_of(tx))
    assert len(rows) == tasks
    assert {row.state for row in rows} == {"completed"}
    assert {row.attempt for row in rows} == {1}
    assert verify(store) == []
    store.close()


# A worker as `tri24es worker` runs one: each completion claims the next task in its own
# transaction; between tasks it says when it paused or resumed, as asked.
CLAIM_NEXT_WORKER = WORKER_SET_UP + """
def look():
    with store.transaction() as tx:
        conn = connection_of(tx)
        return WORKERS.load_by_id(conn, worker_id), reads.tasks(conn, "queued", 1)

done, claim = [], None
while True:
    if claim is None:
        claim = ride_out(lambda: svc.claim(worker_id), outage)
    if claim is not None:
        task_id = claim.task_id
        time.sleep(0.002)  # its agent's run: the operator's writes get their turns
        claim = ride_out(lambda: svc.complete(task_id, worker_id, 1, claim_next=True), outage)
        done.append(task_id)
        continue
    row, queued = ride_out(look, outage)
    if row.stop_requested:
        break
    if row.pause_requested and row.state != "paused":
        ride_out(lambda: svc.paused(worker_id), outage)
    elif row.state == "paused" and not row.pause_requested:
        ride_out(lambda: svc.resumed(worker_id), outage)
    elif not queued:
        break
    else:
        time.sleep(0.001)  # the switch is on, or the worker paused: as a doorbell's wait
store.close()
print(json.dumps(done))
"""

CONTROLLER = """
import random, sys, time
from decimal import Decimal
import eventlog
from tri24es import events as ev
from tri24es.services import Services

path, rounds, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
store = eventlog.open_store(path)
svc = Services(store, actor="operator")
rng = random.Random(7)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()
for n in range(rounds):
    if n == rounds // 2:  # the last worker named stops: the others take its tasks
        svc.request_stop(workers[-1], by="operator")
    if n % 2:
        svc.activate_killswitch(ev.KillSwitchActivated(
            reason="test", rate=Decimal(1), daily=Decimal(1), rate_limit=Decimal(1),
            daily_limit=Decimal(1)))
        time.sleep(rng.random() / 200)
        svc.reset_killswitch(by="operator", reason="test")
    else:
        worker = rng.choice(workers[:-1] if n > rounds // 2 else workers)
        svc.request_pause(worker, by="operator")
        time.sleep(rng.random() / 200)
        svc.request_resume(worker, by="operator")
    time.sleep(rng.random() / 200)
store.close()
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_completions_that_claim_next_never_claim_while_the_switch_is_on_or_a_pause_asked(
    new_url: Callable[[], str],
) -> None:
    """Workers that claim their next task with each completion (one transaction), while
    another process turns the kill switch on and off, asks them to pause and resume and
    one to stop: in the log's order no task is claimed while the switch is on, nor by a
    worker asked to pause (until it is asked to resume) or to stop, and every task is
    completed exactly once."""
    path = new_url()
    store = eventlog.open_store(path)
    backend = "sqlite" if eventlog.sqlite_path(path) else "postgresql"
    tasks = {"sqlite": 1_000, "postgresql": 300}[backend]
    Services(store).submit_many([TaskSpec(f"t{i:05d}", f"task {i}") for i in range(tasks)])
    names = ["w0", "w1"]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_NEXT_WORKER, path, name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name in names]
    procs.append(subprocess.Popen([sys.executable, "-c", CONTROLLER, path, "40", *names],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    reported = Counter(task_id for out in outputs[:-1] for task_id in json.loads(out))

    switch_on, asked, stopped = False, set(), set()
    claims, completions = Counter[str](), Counter[str]()
    controls = 0  # the operator's events among the claims
    for envelope in decode_all(store.read_all()):
        event = envelope.event
        topic = event.topic
        if topic == "KillSwitchActivated":
            switch_on = True
            controls += len(claims) < tasks
        elif topic == "KillSwitchReset":
            switch_on = False
        elif topic in ("WorkerPauseRequested", "WorkerPaused"):
            asked.add(event.worker)  # type: ignore[attr-defined]
            controls += len(claims) < tasks
        elif topic in ("WorkerResumeRequested", "WorkerResumed"):
            asked.discard(event.worker)  # type: ignore[attr-defined]
        elif topic == "WorkerStopRequested":
            stopped.add(event.worker)  # type: ignore[attr-defined]
        elif topic == "TaskClaimed":
            assert not switch_on, f"claimed at {envelope.position} with the switch on"
            assert event.worker not in asked, (  # type: ignore[attr-defined]
                f"claimed at {envelope.position} by a worker asked to pause")
            assert event.worker not in stopped, (  # type: ignore[attr-defined]
                f"claimed at {envelope.position} by a worker asked to stop")
            claims[event.task_id] += 1  # type: ignore[attr-defined]
        elif topic == "TaskCompleted":
            completions[event.task_id] += 1  # type: ignore[attr-defined]
    print(f"\n{controls} switches and pauses came among the claims")
    assert controls > 0
    assert len(completions) == len(claims) == len(reported) == tasks
    assert set(completions.values()) == set(claims.values()) == set(reported.values()) == {1}
    assert verify(store) == []
    store.close()
