"""Four worker processes under a fleet-wide cap, on each backend: never more running than the
cap allows, counted from the log itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import eventlog
from tri24es.events import decode_all
from tri24es.names import LimitKey
from tri24es.projections.upkeep import verify
from tri24es.services import Services, TaskSpec

CAP = 2
# Four claude workers: a claude task counts by its own field, an open one by its worker's.
WORKER_MODELS = {"w0": "claude", "w1": "claude", "w2": "claude", "w3": "claude"}
TASKS = 40  # of each kind: model=claude, and no model

# Each worker is a separate interpreter: its own connection, its own Services. It holds each
# task a moment, so that the four overlap and the cap is what stops the third claim.
WORKER = """
import json, os, sys, time
import eventlog
from tri24es.projections import connection_of, reads
from tri24es.services import Services

path, worker_id, model = sys.argv[1], sys.argv[2], sys.argv[3] or None
store = eventlog.open_store(path)
svc = Services(store, actor=worker_id)
svc.start_worker(worker_id, pid=os.getpid(), pid_start_time=0, host="test", model=model)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # the go signal: every worker starts claiming at once
done = []
while True:
    claim = svc.claim(worker_id)
    if claim is None:
        with store.snapshot() as tx:
            conn = connection_of(tx)
            if not reads.tasks(conn, "queued") and not reads.tasks(conn, "running"):
                break
        time.sleep(0.002)
        continue
    time.sleep(0.01)
    svc.complete(claim.task_id, worker_id, claim.attempt)
    done.append(claim.task_id)
store.close()
print(json.dumps(done))
"""


def test_four_workers_never_run_more_than_the_cap(new_url: Callable[[], str]) -> None:
    path = new_url()
    store = eventlog.open_store(path)
    svc = Services(store)
    svc.set_limit(LimitKey.MODEL, "claude", CAP, by="test")
    svc.submit_many([TaskSpec(f"c{i:03d}", "claude task", model="claude") for i in range(TASKS)]
                    + [TaskSpec(f"o{i:03d}", "open task") for i in range(TASKS)])
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, worker, model or ""],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for worker, model in WORKER_MODELS.items()]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    assert sum(len(json.loads(out)) for out in outputs) == 2 * TASKS

    # Replay the claims and completions: how many ran under model=claude at once.
    running: dict[str, str] = {}  # task -> worker
    peak = 0
    for envelope in decode_all(store.read_all(types=["TaskClaimed", "TaskCompleted"])):
        event = envelope.event
        if event.topic == "TaskClaimed":
            running[event.task_id] = event.worker  # type: ignore[attr-defined]
        else:
            del running[event.task_id]  # type: ignore[attr-defined]
        claude = [t for t, w in running.items() if t.startswith("c") or WORKER_MODELS[w]]
        peak = max(peak, len(claude))
    assert peak == CAP  # reached, never passed
    assert verify(store) == []
    store.close()
