"""Clock skew in a fleet: several real processes share one store, some with their wall clock
skewed (``TRI24ES_CLOCK_OFFSET_US``, read by ``eventlog.model.system_clock_us``, the one clock
every time stamp, lease and spend reading goes through).

What must hold, whatever each process's clock says:

- ``recorded_at`` never decreases over the log (each append clamps to the head's time);
- a skewed process expires another's lease only as far as its skew implies: a clock behind
  never expires it, a clock ahead by less than the lease's remaining time does not either, a
  clock ahead by more than the whole lease does (exactly what that much real time would do);
- spend lands in rolling windows by its ``occurred_at``: a process's skew shifts its spend by
  exactly that skew, and a window sums what falls inside it;
- the hash chain verifies and the views equal a replay.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from eventlog import open_store
from tests.e2e.conftest import CLI, clean_env
from tri24es import events as ev
from tri24es.names import RequeueReason
from tri24es.timeutil import now_us, to_us

SECOND = 1_000_000
LEASE = 6  # seconds: workers renew every 2 s
WAIT = f"{sys.executable} -c \"import os, sys, time; sys.stdin.read()\n" \
    "while not os.path.exists('release'): time.sleep(0.02)\""


def cli(root: Path, *args: str, skew_s: float = 0) -> subprocess.CompletedProcess[str]:
    env = clean_env(root) | {"TRI24ES_CLOCK_OFFSET_US": str(int(skew_s * SECOND)),
                             "TRI24ES_LEASE_SECONDS": str(LEASE), "BUDGET_TIMEZONE": "UTC",
                             "BUDGET_WINDOW_SIZE": "300"}
    return subprocess.run([*CLI, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def task(root: Path) -> dict[str, object]:
    (row,) = orjson.loads(ok(cli(root, "tasks", "list", "--json")))
    assert isinstance(row, dict)
    return row


def log_of(root: Path) -> list[ev.Envelope]:
    with open_store(str(root / "state" / "tri24es.db")) as store:
        return list(ev.decode_all(store.read_all()))


@pytest.mark.chaos
def test_a_fleet_with_skewed_clocks(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    root.mkdir()
    ok(cli(root, "init"))
    ok(cli(root, "submit", "long task", "--id", "long", skew_s=-3600))  # an hour behind
    worker_a = subprocess.Popen(
        [*CLI, "worker", "--id", "a", "--exec", WAIT, "--max-tasks", "1"], cwd=root,
        env=clean_env(root) | {"TRI24ES_LEASE_SECONDS": str(LEASE)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while task(root)["state"] != "running":
            assert time.monotonic() < deadline, "worker a never claimed the task"
            time.sleep(0.1)
        # Two idle workers look for expired leases: one an hour behind, one 2 s ahead (less
        # than the >= 4 s left on a's lease, which a renews every 2 s). Neither expires it.
        # Spend is recorded meanwhile by processes 2 minutes behind, on time and ahead.
        skewed = [subprocess.Popen(
            [*CLI, *args], cwd=root, env=clean_env(root) | {
                "TRI24ES_CLOCK_OFFSET_US": str(skew * SECOND),
                "TRI24ES_LEASE_SECONDS": str(LEASE)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for skew, args in [
                (-3600, ("worker", "--id", "behind", "--exit-when-idle", "--exec", "true")),
                (2, ("worker", "--id", "ahead-2s", "--exit-when-idle", "--exec", "true")),
                (-120, ("spend", "record", "--usd", "1", "--task", "minus-120")),
                (0, ("spend", "record", "--usd", "2", "--task", "zero")),
                (120, ("spend", "record", "--usd", "4", "--task", "plus-120")),
            ]]
        started = now_us()
        for process in skewed:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, (process.args, err)
        row = task(root)
        assert (row["state"], row["attempt"], row["worker"]) == ("running", 1, "a")
        # A worker 10 s ahead (more than the 6 s lease, less than the 18 s after which a
        # silent worker is lost) sees a's lease as run out: it requeues the task and runs it.
        ok(cli(root, "worker", "--id", "ahead-10s", "--exit-when-idle", "--exec", "true",
               skew_s=10))
        (root / "release").touch()
        _, err = worker_a.communicate(timeout=30)
        assert worker_a.returncode == 0, err
    finally:
        if worker_a.poll() is None:
            worker_a.kill()
            worker_a.wait()

    log = log_of(root)
    times = [e.recorded_at for e in log]
    assert times == sorted(times), "recorded_at went backwards"
    task_events = [e.event for e in log if e.stream == "task-long"]
    requeues = [(e.reason, e.worker, e.by) for e in task_events
                if isinstance(e, ev.TaskRequeued)]
    assert requeues == [(RequeueReason.LEASE_EXPIRED, "a", None)]
    completed = [(e.worker, e.attempt) for e in task_events if isinstance(e, ev.TaskCompleted)]
    assert completed == [("ahead-10s", 2)], "a's late completion of attempt 1 must be refused"
    lost = [e for e in log if isinstance(e.event, ev.WorkerLost)]
    assert lost == [], "no skew here was larger than three leases"

    # Each spend sits where its process's clock put it: shifted by exactly that skew.
    spends = {e.event.task: e.event for e in log if isinstance(e.event, ev.SpendRecorded)}
    for name, skew in (("minus-120", -120), ("zero", 0), ("plus-120", 120)):
        offset = to_us(spends[name].occurred_at) - started
        assert abs(offset - skew * SECOND) < 20 * SECOND, (name, offset)
    # A 300 s window read by an on-time process holds the spend of the last 300 s by
    # occurred_at: now, the -120 s and the on-time one; 130 s on, the +120 s one too; 200 s
    # on, the -120 s one has left the window.
    for skew, total in ((0, "3"), (130, "7"), (200, "6")):
        reading = orjson.loads(ok(cli(root, "spend", "--json", skew_s=skew)))
        assert reading["window_total_usd"] == total, (skew, reading)

    ok(cli(root, "audit", "verify"))
    ok(cli(root, "replay", "--verify"))
