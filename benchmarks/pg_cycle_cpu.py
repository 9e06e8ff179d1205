"""What a claim+complete cycle and a single append cost on PostgreSQL, per operation: the
client's CPU (user and system, from getrusage), the CPU of the server process serving the
store's connection (from /proc: the server must run on this machine), and the wall time.
CPU time moves less than wall time on a shared machine; compare two versions of the code by
running this on each, alternately (``PYTHONPATH=<checkout>``), and note the load average.

    python -m benchmarks.pg_cycle_cpu [--dsn URL] [--cycles N] [--appends N] [--raw]

Each run gets a fresh schema, dropped at the end; the DSN defaults to TRI24ES_TEST_PG_DSN.
With ``--raw``, the raw ``SKIP LOCKED`` loop of the scale figures (benchmarks.scale.
raw_queues) is measured the same way, on a table of its own: what a job costs without events.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from benchmarks.bench_claims import seed
from benchmarks.scale.raw_queues import loop_pg, seed_pg
from eventlog import NewEvent, open_store
from eventlog.postgres import PostgresStore
from tri24es.services import Services


def server_cpu(pid: int) -> float:
    """Seconds of CPU the server process ``pid`` has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(store: PostgresStore | psycopg.Connection, run: Callable[[], int]) -> str:
    """``run`` (which returns how many operations it made) timed per operation."""
    db = store._db if isinstance(store, PostgresStore) else store
    backend = db.info.backend_pid
    before, server, started = resource.getrusage(resource.RUSAGE_SELF), server_cpu(backend), \
        time.perf_counter()
    done = run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if db.info.backend_pid != backend:
        return "the connection was replaced meanwhile: measure again"
    per = 1e3 / max(done, 1)
    return (f"{done} in {wall:.2f} s: wall {wall * per:.3f} ms, client CPU "
            f"{(after.ru_utime - before.ru_utime) * per:.3f} ms user + "
            f"{(after.ru_stime - before.ru_stime) * per:.3f} ms system, server CPU "
            f"{(server_cpu(backend) - server) * per:.3f} ms per operation")


def raw_loop(url: str, jobs: int) -> str:
    """The raw queue's loop (``raw_queues.work_pg``: mark the last job done, claim the next,
    one commit per job), measured as ``measure`` does."""
    seed_pg({"dsn": url, "jobs": jobs})
    with psycopg.connect(url) as conn:
        return measure(conn, lambda: len(loop_pg(conn, "w")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "TRI24ES_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--raw", action="store_true",
                        help="also the raw SKIP LOCKED loop, as many jobs as --cycles")
    options = parser.parse_args()
    schema = f"cycle_cpu_{secrets.token_hex(4)}"
    url = f"{options.dsn}?options=-csearch_path%3D{schema}"
    print(f"load average {os.getloadavg()[0]:.2f}")
    try:
        seed(url, options.cycles)
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        services = Services(store, actor="w")
        services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="bench")

        def cycles() -> int:  # as `tri24es worker` does: complete, claim the next
            claim, done = services.claim("w"), 0
            while claim is not None:
                claim = services.complete(claim.task_id, "w", claim.attempt, claim_next=True)
                done += 1
            return done

        def appends() -> int:
            for n in range(options.appends):
                store.append(f"s-{n}", [NewEvent("Happened", b'{"n": %d}' % n)])
            return int(options.appends)

        print("claim+complete:", measure(store, cycles))
        print("single append: ", measure(store, appends))
        store.close()
        if options.raw:
            print("raw SKIP LOCKED:", raw_loop(url, options.cycles))
    finally:
        with psycopg.connect(options.dsn, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


if __name__ == "__main__":
    main()
