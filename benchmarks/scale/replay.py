"""Replay and reads at growing log sizes: ``tri24es replay`` (the whole command: wall time and
the peak memory of its processes, summed) beside eventsourcing folding the same kind of log
(per task: submitted, claimed, renewed, completed, and one spend) into in-memory views in
a process of its own; and reads (every event decoded) beside a raw ``SELECT *``."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

from benchmarks.scale.launch import REPO, Workload, WorkloadFailed, run_command, run_one
from benchmarks.scale.peersenv import PeersEnv
from benchmarks.scale.report import Goal, Results, Row, Series


def write_logs(work: Path, events: int, peers: PeersEnv) -> tuple[Path, Path | None, str]:
    ours, theirs = work / f"replay-{events}.db", work / f"replay-es-{events}.db"
    started = time.perf_counter()
    run_one(Workload(sys.executable, "benchmarks.scale.ours",
                     {"mode": "write_log", "url": str(ours), "events": events}))
    with sqlite3.connect(ours) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    took = f"{time.perf_counter() - started:.0f} s"
    if not peers.has("eventsourcing"):
        return ours, None, took
    started = time.perf_counter()
    run_one(Workload(str(peers.python), "benchmarks.scale.peer.es",
                     {"mode": "write_log", "path": str(theirs), "events": events}))
    return ours, theirs, f"{took}, eventsourcing's {time.perf_counter() - started:.0f} s"


def measure(results: Results, *, work: Path, peers: PeersEnv, sizes: tuple[int, ...],
            rounds: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env["PYTHONPATH"] = str(REPO)
    peak_by_size: dict[int, Series] = {}
    for events in sizes:
        ours_db, es_db, took = write_logs(work, events, peers)
        print(f"    wrote {events:,}-event logs ({took})", flush=True)
        names = ("tri24es", "eventsourcing")
        rate = {n: Series(n, "events/s") for n in names}
        peak = {n: Series(n, "MiB") for n in names}
        reads = {n: Series(n, "events/s") for n in ("tri24es", "eventsourcing", "raw SELECT *")}
        if es_db is None:
            for table in (rate, peak, reads):
                table["eventsourcing"].error = peers.status.get("eventsourcing", "missing")
        for r in range(rounds):
            run = run_command([sys.executable, "-m", "tri24es", "replay"],
                              env | {"TRI24ES_ROOT": str(work), "TRI24ES_DB": str(ours_db)},
                              timeout=3600)
            if run.exit_code != 0:
                rate["tri24es"].error = peak["tri24es"].error = run.stderr_tail
            else:
                rate["tri24es"].runs.append(events / run.seconds)
                peak["tri24es"].runs.append(run.peak_tree_rss_mib)
                results.sections.setdefault("replay_largest_process_mib", {}).setdefault(
                    str(events), []).append(run.peak_rss_mib)
            if es_db is not None:
                es = run_command([str(peers.python), "-m", "benchmarks.scale.peer.es",
                                  f'{{"mode": "replay", "path": "{es_db}"}}'], env,
                                 timeout=3600, stdin=b"go 0\n")
                if es.exit_code != 0:
                    rate["eventsourcing"].error = peak["eventsourcing"].error = es.stderr_tail
                else:
                    rate["eventsourcing"].runs.append(events / es.seconds)
                    peak["eventsourcing"].runs.append(es.peak_tree_rss_mib)
            print(f"    replay {events:,} round {r + 1}: tri24es {run.seconds:.1f} s "
                  f"{run.peak_tree_rss_mib:.0f} MiB (largest process "
                  f"{run.peak_rss_mib:.0f} MiB); eventsourcing "
                  + (f"{es.seconds:.1f} s {es.peak_tree_rss_mib:.0f} MiB" if es_db else "-"),
                  flush=True)
            read_round(reads, ours_db, es_db, peers)
        peak_by_size[events] = peak["tri24es"]
        label = f"{events:,} events"
        results.add(Row(f"replay {label}: peak memory", peak["tri24es"], peak["eventsourcing"],
                        Goal("value", "<", 150),
                        "tri24es: `tri24es replay` rebuilding every view table (the sum over"
                        " its two processes; the larger one alone is in the JSON);"
                        " eventsourcing: reading, decoding and folding task"
                        " states and the spend total in memory (no tables written)", "replay"))
        results.add(Row(f"replay {label}: speed", rate["tri24es"], rate["eventsourcing"],
                        note="events over the wall time of the whole command (Python's"
                        " start-up included) for both", note_on="replay speed"))
        results.add(Row(f"read + decode {label}", reads["tri24es"], reads["raw SELECT *"]))
        results.add(Row(f"read + decode {label}", reads["tri24es"], reads["eventsourcing"]))
    smallest, largest = min(peak_by_size), max(peak_by_size)
    if largest != smallest:
        results.add(Row(f"replay peak memory, {largest:,} vs {smallest:,} events",
                        peak_by_size[largest],
                        Series(f"at {smallest:,}", "MiB", peak_by_size[smallest].runs),
                        Goal("ratio", "<=", 1.1), "goal ≤ 1.1x: 'flat' (no number in the issue)"))


def read_round(reads: dict[str, Series], ours_db: Path, es_db: Path | None,
               peers: PeersEnv) -> None:
    for name, python, module, params in (
        ("tri24es", sys.executable, "benchmarks.scale.ours", {"mode": "read", "url": str(ours_db)}),
        ("raw SELECT *", sys.executable, "benchmarks.scale.ours",
         {"mode": "read_raw", "url": str(ours_db)}),
        ("eventsourcing", str(peers.python), "benchmarks.scale.peer.es",
         {"mode": "replay", "path": str(es_db), "fold": False}),
    ):
        if reads[name].error or (name == "eventsourcing" and es_db is None):
            continue
        try:
            result = run_one(Workload(python, module, params))
        except WorkloadFailed as e:
            reads[name].error = str(e)
            continue
        reads[name].runs.append(result["done"] / (result["end"] - result["start"]))
