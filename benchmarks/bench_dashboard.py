"""Dashboard response times on a large store: the overview and the task list.

    python -m benchmarks.bench_dashboard [--tasks N] [--spend N] [--rounds N] [--db PATH]
                                         [--live-seconds S]

Builds a SQLite store of ``--tasks`` submitted tasks (default 100,000; through
``Services.submit_many``, 5,000 per transaction), 1% of them run to completion by ten workers,
and ``--spend`` spend records (default 0) spread over the last day; then starts a real
``tri24es serve`` on it and times each page over one kept-alive HTTP connection: the median
and 95th percentile of ``--rounds`` requests after five warm-up ones. Goal: overview and task
list under 50 ms. The overview is read once per log position and second for everyone who
asks; "log moved" commits an event before each request, so that each one reads anew.
``--db`` keeps (or reuses) the store at PATH.

Then the cost of live updates: the server's CPU (user + system, from /proc) over
``--live-seconds`` (default 30) with ten open live streams, first with the log idle, then
beside a writer committing about 50 events a second (each stream hears of the moves, at most
four a second).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from eventlog import open_store
from tri24es import events as ev
from tri24es.names import Priority
from tri24es.services import Services, TaskSpec
from tri24es.timeutil import from_us, now_us

BATCH = 5_000
PAGES = (
    ("overview (HTML)", "/"),
    ("overview (JSON)", "/api/overview"),
    ("overview, log moved", "/api/overview?moved"),
    ("tasks, first page", "/tasks"),
    ("tasks, queued, HIGH", "/tasks?state=queued&priority=HIGH"),
    ("tasks, completed", "/tasks?state=completed"),
    ("tasks, model filter", "/tasks?model=claude-haiku-4-5"),
    ("tasks, text search", "/tasks?q=needle"),
    ("tasks, a deep page", "/tasks?before={deep}"),
    ("tasks (JSON)", "/api/tasks"),
    ("a task", "/tasks/bench-{middle}"),
    ("workers", "/workers"),
    ("events, last 200", "/events"),
)


def build(db: Path, tasks: int, spend: int) -> None:
    with open_store(str(db)) as store:
        services = Services(store, actor="bench")
        started = time.perf_counter()
        for start in range(0, tasks, BATCH):
            services.submit_many([
                TaskSpec(task_id=f"bench-{n}", title=f"Benchmark task {n}"
                         + (" needle" if n % 10_000 == 7 else ""),
                         priority=list(Priority)[n % 4],
                         model=("claude-sonnet-4-5", "claude-haiku-4-5", None)[n % 3])
                for n in range(start, min(start + BATCH, tasks))])
        print(f"submitted {tasks:,} tasks in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        for w in range(10):
            services.start_worker(f"bench-worker-{w}", pid=os.getpid(), pid_start_time=0,
                                  host="bench")
        for n in range(tasks // 100):
            worker = f"bench-worker-{n % 10}"
            claim = services.claim(worker)
            if claim is None:
                break
            services.complete(claim.task_id, worker, claim.attempt)
        now = now_us()
        for start in range(0, spend, BATCH):
            services.record_spends([
                ev.SpendRecorded(amount=Decimal("0.0123"), model="claude-haiku-4-5",
                                 task=f"bench-{n % max(tasks, 1)}", worker="bench-worker-1",
                                 source="bench",
                                 occurred_at=from_us(now - (n * 86_400_000_000) // spend))
                for n in range(start, min(start + BATCH, spend))])
        print(f"store ready: {store.head():,} events", file=sys.stderr)


def serve(root: Path, db: Path) -> tuple[subprocess.Popen[str], int]:
    env = os.environ | {"TRI24ES_ROOT": str(root), "TRI24ES_DB": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "tri24es", "serve", "--port", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError("serve did not start")


def timed(conn: http.client.HTTPConnection, path: str, rounds: int,
          move: Callable[[], object]) -> list[float]:
    """Milliseconds per request; for a path ending in ``?moved``, one event is committed
    before each (untimed), so the server cannot answer from the reading it shares."""
    times = []
    for n in range(rounds + 5):
        if path.endswith("?moved"):
            move()
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status}")
        if n >= 5:
            times.append(elapsed)
    return times


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_cost(proc: subprocess.Popen[str], port: int, db: Path, seconds: float) -> None:
    streams = []
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("GET", "/live")
        response = conn.getresponse()
        response.fp.readline()  # the first event: the stream is open
        streams.append(conn)
    for label, writing in (("idle log", False), ("~50 commits/s", True)):
        stop = threading.Event()
        writer = threading.Thread(target=_write, args=(db, stop), daemon=True)
        if writing:
            writer.start()
        before, started = cpu_seconds(proc.pid), time.monotonic()
        stop.wait(seconds)
        used = cpu_seconds(proc.pid) - before
        elapsed = time.monotonic() - started
        stop.set()
        if writing:
            writer.join()
        print(f"live, 10 streams, {label:<14} {used / elapsed:.4f} cores")
    for conn in streams:
        conn.close()


def _write(db: Path, stop: threading.Event) -> None:
    """About 50 commits a second: one submitted task each."""
    with open_store(str(db)) as store:
        services = Services(store, actor="bench-writer")
        n = 0
        while not stop.wait(0.02):
            services.submit(TaskSpec(task_id=f"live-{os.getpid()}-{n}", title="live load"))
            n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--spend", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        root = Path(scratch)
        (root / "state").mkdir(mode=0o700)
        db = args.db or root / "state" / "tri24es.db"
        if not db.exists():
            build(db, args.tasks, args.spend)
        with open_store(str(db)) as store:
            head = store.head()
        proc, port = serve(root, db)
        writer = open_store(str(db))
        services = Services(writer, actor="bench")

        def move() -> None:
            services.heartbeat("bench-worker-0")

        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            print(f"{args.tasks:,} tasks, {head:,} events, {args.rounds} rounds; "
                  f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(f"{'page':<24} {'median ms':>10} {'p95 ms':>8}")
            for name, path in PAGES:
                times = timed(conn, path.format(deep=args.tasks // 2, middle=args.tasks // 2),
                              args.rounds, move)
                p95 = statistics.quantiles(times, n=20)[-1]
                print(f"{name:<24} {statistics.median(times):>10.1f} {p95:>8.1f}")
            conn.close()
            if args.live_seconds > 0:
                live_cost(proc, port, db, args.live_seconds)
        finally:
            writer.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()


if __name__ == "__main__":
    main()
