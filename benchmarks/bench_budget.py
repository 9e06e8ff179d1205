"""Budget figures: how fast the kill switch reacts, and how fast `tri24es spend` reads.

    python -m benchmarks.bench_budget [--rounds N] [--events N]

1. Reaction: a real ``tri24es budget-watchdog`` daemon watches a fresh store with three
   stand-in worker processes registered (each notes when SIGUSR1 reaches it). One
   SpendRecorded breaches the rate limit; we report the time from its commit to the
   KillSwitchActivated commit (both ``recorded_at``) and to the last SIGUSR1 delivered.
   The original TRI-24 watchdog checked every 30 s. Goal: under 500 ms.
2. Query: the ``tri24es spend`` status read (window total and rate, today's total, the kill
   switch) on a store holding ``--events`` spend events (default 1,000,000) spread over 30
   days. Goal: under 2 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from eventlog import open_store
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.procinfo import host_id, start_time
from tri24es.projections import connection_of
from tri24es.projections.reads import read_budget
from tri24es.services import Services
from tri24es.timeutil import from_us, now_us

STAND_IN = """
import signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
def note(signum, frame):
    out.write_text(str(time.time_ns() // 1000))
signal.signal(signal.SIGUSR1, note)
out.with_suffix(".ready").write_text("ready")
while True:
    signal.pause()
"""
ENV = {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_WINDOW_SIZE": "300", "BUDGET_TIMEZONE": "UTC",
       "BUDGET_CHECK_INTERVAL": "30"}


def await_path(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path}")
        time.sleep(0.005)


def reaction_round(root: Path) -> tuple[float, float]:
    """(ms from the breaching spend's commit to the switch's commit, ms to the last
    SIGUSR1 delivered)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env |= ENV | {"TRI24ES_ROOT": str(root)}
    cli = [sys.executable, "-m", "tri24es"]
    subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
    store = open_store(str(root / "state" / "tri24es.db"))
    services = Services(store, actor="bench")
    stand_ins, notes = [], []
    for n in range(3):
        note = root / f"w{n}.usr1"
        proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(note)])
        await_path(note.with_suffix(".ready"))
        services.start_worker(f"w{n}", pid=proc.pid, pid_start_time=start_time(proc.pid),
                              host=host_id())
        stand_ins.append(proc)
        notes.append(note)
    daemon = subprocess.Popen([*cli, "budget-watchdog"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        await_path(root / "state" / "budget-watchdog.pid")
        time.sleep(0.3)  # let it finish its first evaluation and settle into waiting
        services.record_spend(ev.SpendRecorded(amount=Decimal(10), source="bench",
                                               occurred_at=datetime.now(UTC)))
        spend_at = max(r.recorded_at for r in store.read_all(types=[ev.SpendRecorded.topic]))
        deadline = time.monotonic() + 20
        while not all(n.exists() and n.read_text() for n in notes):
            if time.monotonic() > deadline:
                raise TimeoutError("SIGUSR1 never arrived")
            time.sleep(0.005)
        (switch,) = store.read_all(types=[ev.KillSwitchActivated.topic])
        delivered = max(int(n.read_text()) for n in notes)
        return (switch.recorded_at - spend_at) / 1000, (delivered - spend_at) / 1000
    finally:
        for proc in (*stand_ins, daemon):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if proc is not daemon else signal.SIGTERM)
            proc.wait()
        store.close()


def seed_spend(path: Path, events: int, days: int = 30) -> None:
    services = Services(open_store(str(path)), actor="bench")
    now, span = now_us(), days * 86_400_000_000
    batch = 20_000
    for start in range(0, events, batch):
        services.record_spend_many([
            (ev.SpendRecorded(amount=Decimal("0.0013"), model="m", source="bench",
                              occurred_at=from_us(now - span + span * i // events)),
             str(uuid.uuid4()))
            for i in range(start, min(events, start + batch))
        ])
    services.store.close()


def query_times(path: Path, runs: int = 2000) -> list[float]:
    store = open_store(str(path))
    limits = BudgetLimits(timezone=UTC)
    times = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            with store.snapshot() as tx:
                read_budget(connection_of(tx), limits, now_us())
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        switch, usr1 = [], []
        for n in range(args.rounds):
            a, b = reaction_round(Path(tmp) / f"round{n}")
            switch.append(a)
            usr1.append(b)
        print(f"spend commit -> KillSwitchActivated commit: median {statistics.median(switch):.1f}"
              f" ms, max {max(switch):.1f} ms over {args.rounds} rounds (goal < 500 ms)")
        print(f"spend commit -> SIGUSR1 at all 3 workers:   median {statistics.median(usr1):.1f}"
              f" ms, max {max(usr1):.1f} ms")
        db = Path(tmp) / "spend.db"
        started = time.perf_counter()
        seed_spend(db, args.events)
        print(f"seeded {args.events:,} spend events in {time.perf_counter() - started:.1f} s")
        times = sorted(query_times(db))
        p99 = times[int(len(times) * 0.99)]
        print(f"`tri24es spend` status query with {args.events:,} spend events: median "
              f"{statistics.median(times):.3f} ms, p99 {p99:.3f} ms (goal < 2 ms)")


if __name__ == "__main__":
    main()
