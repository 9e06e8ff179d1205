"""The herd: idle ``tri24es worker`` processes beside a writer recording spend through the
services at a steady rate (commits that concern no worker). Measured: the CPU time the idle
workers use between them (utime + stime from /proc/<pid>/stat), in cores, beside the
writer's own CPU in the same window. Every worker must still be alive and registered at the
end of each window (a dead worker would burn nothing).

Workload mode ``write`` (the writer) runs in the project's venv."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.scale.launch import REPO, Workload, cpu_seconds, run_group
from benchmarks.scale.pg import PgServer
from benchmarks.scale.protocol import main_of, ready_then_go, report
from benchmarks.scale.report import Goal, Results, Row, Series


def write(p: dict[str, Any]) -> None:
    """Record spend at ``rate`` commits per second for ``seconds`` (0: just wait)."""
    from eventlog import open_store
    from tri24es import events as ev
    from tri24es.services import Services

    services = Services(open_store(p["url"]), actor="herd-writer")
    rate, seconds = p["rate"], p["seconds"]
    cpu0 = time.process_time()
    start = ready_then_go()
    done = 0
    while (now := time.monotonic()) < start + seconds:
        if rate and now >= start + done / rate:
            services.record_spend(ev.SpendRecorded(
                amount=Decimal("0.0001"), model="m", source="herd", worker="elsewhere",
                occurred_at=datetime.now(UTC)))
            done += 1
        else:
            time.sleep(min(0.001 if rate else 0.05, start + seconds - now))
    end = time.monotonic()
    report(done=done, start=start, end=end, ran=[], cpu=time.process_time() - cpu0)
    services.store.close()


def measure(results: Results, *, work: Path, pg: PgServer | None, workers: int,
            rates: tuple[int, ...], seconds: float) -> None:
    for backend in ("sqlite", "pg"):
        if backend == "pg" and pg is None:
            continue
        dsn = pg.fresh() if backend == "pg" and pg is not None else None
        try:
            herd(results, work / f"herd-{backend}", dsn, workers, rates, seconds)
        finally:
            if dsn is not None and pg is not None:
                pg.drop(dsn)


def herd(results: Results, root: Path, dsn: str | None, workers: int, rates: tuple[int, ...],
         seconds: float) -> None:
    from eventlog import open_store
    from tri24es.services import NotFound, Services

    name = "SQLite" if dsn is None else "PostgreSQL"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env |= {"TRI24ES_ROOT": str(root), "PYTHONPATH": str(REPO)}
    if dsn is not None:
        env["TRI24ES_DB"] = dsn
    url = dsn or str(root / "state" / "tri24es.db")
    subprocess.run([sys.executable, "-m", "tri24es", "init"], env=env, check=True,
                   capture_output=True)
    procs = [subprocess.Popen([sys.executable, "-m", "tri24es", "worker", "--id", f"herd-{i}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(workers)]
    store = open_store(url)
    services = Services(store, actor="bench")

    def registered() -> int:
        n = 0
        for i in range(workers):
            with contextlib.suppress(NotFound):
                n += services.worker(f"herd-{i}").state in ("idle", "busy")
        return n

    try:
        deadline = time.monotonic() + 60 + 5 * workers
        while registered() < workers:
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"herd on {name}: workers {dead or 'not all'} failed to"
                                   " start")
            time.sleep(0.2)
        time.sleep(3)  # past their start-up
        before: dict[str, float] = {}

        def mark() -> None:
            before["cpu"] = sum(cpu_seconds(p.pid) for p in procs)
            before["at"] = time.monotonic()

        for rate in rates:
            result = run_group([Workload(sys.executable, "benchmarks.scale.herd",
                                         {"mode": "write", "url": url, "rate": rate,
                                          "seconds": seconds})], before_go=mark)
            used = sum(cpu_seconds(p.pid) for p in procs) - before["cpu"]
            window = time.monotonic() - before["at"]
            alive = registered()
            if alive < workers or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"herd on {name}: only {alive} of {workers} workers alive"
                                   f" after the {rate}/s window")
            writer = result.per_process[0]
            achieved = writer["done"] / (writer["end"] - writer["start"])
            ours = Series(f"{workers} idle workers", "cores", [used / window])
            theirs = Series("the writer itself", "cores", [writer["cpu"] / window])
            print(f"    herd {name} {rate}/s: workers {used / window:.3f} cores, writer "
                  f"{writer['cpu'] / window:.3f} cores, {achieved:.1f} commits/s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            asked = f"{rate} commits/s" + (f" (achieved {achieved:.1f})"
                                           if achieved < 0.9 * rate else "")
            results.add(Row(f"herd, {name}: {workers} idle workers, {asked}",
                            ours, theirs if rate else None, Goal("value", "<", 0.05),
                            f"achieved {achieved:.1f} commits/s over {window:.0f} s; load "
                            f"average after {os.getloadavg()[0]:.2f}"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        store.close()


if __name__ == "__main__":
    main_of({"write": write})
