"""Submit commit to agent start: a real ``tri24es worker`` waiting idle on a SQLite store,
beside the raw follower floor (``follower.py``), submits alternated. The agent is
``date +%s%N``: the wall clock when it runs, compared with the wall clock when the submitting
commit returned."""

from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.scale.launch import REPO
from benchmarks.scale.raw_queues import SQLITE_PRAGMAS
from benchmarks.scale.report import Goal, Results, Row, Series

AGENT = ["date", "+%s%N"]


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"latency: no {what} within {timeout:.0f} s")
        time.sleep(0.001)


def started_at(path: Path) -> int | None:
    """The agent's output: its wall clock in ns, once written."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def measure(results: Results, *, work: Path, submits: int, stamps: Path | None = None) -> None:
    """``stamps``: run the worker, its keepers and the follower with their steps stamped
    into this file (``benchmarks.scale.stamps``), with each submit's commit and agent
    start."""
    from eventlog import open_store
    from tri24es.services import Services, TaskSpec

    root = work / "latency"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env |= {"TRI24ES_ROOT": str(root), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "tri24es", "init"], env=env, check=True,
                   capture_output=True)
    run_worker = [sys.executable, "-m", "tri24es"]
    run_follower = [sys.executable, "-m", "benchmarks.scale.follower"]
    if stamps is not None:
        env["LATENCY_STAMPS"] = str(stamps)
        run_worker = [sys.executable, "-m", "benchmarks.scale.stamps", "worker"]
        run_follower = [sys.executable, "-m", "benchmarks.scale.stamps", "follower"]
    worker = subprocess.Popen([*run_worker, "worker", "--id", "lat",
                               "--exec", " ".join(AGENT)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw_db, out = work / "latency-raw" / "q.db", work / "latency-raw" / "out"
    out.mkdir(parents=True)
    with sqlite3.connect(raw_db, isolation_level=None) as conn:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, task TEXT)")
    follower = subprocess.Popen(
        [*run_follower,
         f'{{"path": "{raw_db}", "out": "{out}", "agent": {AGENT!r}}}'.replace("'", '"')],
        env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    store = open_store(str(root / "state" / "tri24es.db"))
    services = Services(store, actor="bench")
    raw = sqlite3.connect(raw_db, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        raw.execute(f"PRAGMA {pragma}")
    ours, floor = Series("tri24es", "ms"), Series("raw follower floor", "ms")
    try:
        assert follower.stdout is not None
        if follower.stdout.readline().strip() != "ready":
            raise RuntimeError("latency: the raw follower did not start")
        wait_for("idle worker", lambda: _state(services, "lat") == "idle")
        time.sleep(0.5)
        for i in range(1, submits + 1):
            services.submit(TaskSpec(f"lat{i}", "latency"))
            committed = time.time_ns()
            log = root / "logs" / "tasks" / f"lat{i}" / "1.log"
            wait_for("agent start", lambda: started_at(log) is not None)  # noqa: B023
            ours.runs.append((started_at(log) or 0) / 1e6 - committed / 1e6)
            _mark(stamps, f"commit {committed}\nagent {started_at(log)}\n")
            wait_for("completion", lambda: services.task(f"lat{i}").state == "completed")  # noqa: B023
            time.sleep(0.1)
            raw.execute("INSERT INTO q (id, task) VALUES (?, ?)", (i, f"lat{i}"))
            committed = time.time_ns()
            wait_for("raw agent start", lambda: started_at(out / f"{i}.out") is not None)  # noqa: B023
            floor.runs.append((started_at(out / f"{i}.out") or 0) / 1e6 - committed / 1e6)
            _mark(stamps, f"f_commit {committed}\nf_agent {started_at(out / f'{i}.out')}\n")
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        follower.communicate(timeout=10)
        worker.wait(timeout=30)
        store.close()
        raw.close()
    print(f"    latency: tri24es median {statistics.median(ours.runs):.1f} ms, raw floor "
          f"{statistics.median(floor.runs):.1f} ms", flush=True)
    # The ratio row compares medians: one submit's ratio to another's floor means little.
    row = Row("submit commit -> agent start (SQLite)",
              Series("tri24es", "ms", [statistics.median(ours.runs)]),
              Series("raw follower floor", "ms", [statistics.median(floor.runs)]),
              Goal("ratio", "<=", 2.0),
              f"median of {submits} submits each, alternated; agent `{' '.join(AGENT)}`;"
              f" p90 tri24es {quantile(ours.runs, 0.9):.1f} ms,"
              f" floor {quantile(floor.runs, 0.9):.1f} ms")
    results.add(row)
    results.sections["latency_ms"] = {"tri24es": ours.runs, "floor": floor.runs}


def _mark(stamps: Path | None, lines: str) -> None:
    if stamps is not None:
        with stamps.open("a") as f:
            f.write(lines)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _state(services: object, worker: str) -> str | None:
    from tri24es.services import NotFound, Services

    assert isinstance(services, Services)
    try:
        return str(services.worker(worker).state)
    except NotFound:
        return None
