"""One command for the Scale figures (issue 20): tri24es beside its peers and raw baselines,
measured in the same run, written to ``benchmarks/results/scale-<time>.{json,md}``.

    python -m benchmarks.scale [--quick] [--only GROUP ...] [--dsn URL] [--no-install]

Groups: claims-sqlite, claims-pg, appends, backlog, replay, latency, herd. The peers are
installed (pinned) into benchmarks/.peers-venv on first use and run there, each workload in a
process of its own; tri24es and the raw baselines run in this interpreter's venv.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.scale import appends, backlog, claims, herd, latency, replay
from benchmarks.scale.launch import REPO, machine
from benchmarks.scale.peersenv import PEERS, PeersEnv, prepare, versions
from benchmarks.scale.pg import DEFAULT_DSN, PgServer, available
from benchmarks.scale.report import Results
from benchmarks.scale.sizes import FULL, QUICK, Sizes

GROUPS = ("claims-sqlite", "claims-pg", "appends", "backlog", "replay", "latency", "herd")


def run(groups: list[str], sizes: Sizes, *, dsn: str | None, peers: PeersEnv, work: Path,
        quick: bool, replay_events: tuple[int, ...] | None = None) -> Results:
    """Measure ``groups``; the results (also when a group fails: its error is kept)."""
    results = Results(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                      {"quick": quick, "groups": groups, "sizes": sizes.__dict__},
                      machine() | {"load_before": list(os.getloadavg())})
    results.sections["peers"] = dict(peers.status)
    results.sections["peer_versions"] = versions(peers)
    pg = None
    if dsn is not None:
        why = available(dsn)
        if why is None:
            pg = PgServer(dsn)
            results.sections["postgres"] = pg.settings()
        else:
            results.sections["postgres"] = {"unavailable": why}
    loads: dict[str, list[float]] = {}
    steps: dict[str, Callable[[], None]] = {
        "claims-sqlite": lambda: claims.measure(
            results, backend="sqlite", work=work, pg=None, peers=peers, jobs=sizes.sqlite_jobs,
            rounds=sizes.rounds, processes=sizes.processes),
        "claims-pg": lambda: claims.measure(
            results, backend="pg", work=work, pg=pg, peers=peers, jobs=sizes.pg_jobs,
            rounds=sizes.rounds, processes=sizes.processes),
        "appends": lambda: appends.measure(
            results, work=work, pg=pg, peers=peers, events=sizes.appends, rounds=sizes.rounds),
        "backlog": lambda: backlog.measure(
            results, work=work, tasks=sizes.backlog, small=sizes.small_backlog,
            cycles=sizes.backlog_cycles, rounds=sizes.rounds),
        "replay": lambda: replay.measure(
            results, work=work, peers=peers, sizes=sizes.replay_events, rounds=sizes.rounds),
        "latency": lambda: latency.measure(results, work=work, submits=sizes.latency_tasks),
        "herd": lambda: herd.measure(
            results, work=work, pg=pg, workers=sizes.herd_workers, rates=sizes.herd_rates,
            seconds=sizes.herd_seconds),
    }
    try:
        for group in groups:
            if group == "claims-pg" and pg is None:
                print(f"{group}: skipped (no PostgreSQL)", flush=True)
                continue
            print(f"{group} (load {os.getloadavg()[0]:.2f}):", flush=True)
            started = time.monotonic()
            try:
                steps[group]()
            except Exception:  # one group's failure is reported; the others still run
                error = traceback.format_exc()
                print(f"{group} failed:\n{error}", file=sys.stderr, flush=True)
                results.sections.setdefault("failed_groups", {})[group] = error
            loads[group] = [*os.getloadavg(), round(time.monotonic() - started, 1)]
    finally:
        if pg is not None:
            pg.close()
        results.machine["load_after"] = list(os.getloadavg())
        results.sections["load_after_each_group"] = {
            g: {"loadavg": v[:3], "seconds": v[3]} for g, v in loads.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS),
                        metavar="GROUP", help=f"some of: {', '.join(GROUPS)}")
    parser.add_argument("--dsn", default=os.environ.get("TRI24ES_TEST_PG_DSN", DEFAULT_DSN),
                        help="PostgreSQL server (a database per contender is made and dropped)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--no-install", action="store_true",
                        help="use the peers' venv only if it exists (no network)")
    parser.add_argument("--skip-peers", action="store_true",
                        help="tri24es and the raw baselines only")
    parser.add_argument("--rounds", type=int, help="rounds of each figure (default 3, quick 1)")
    parser.add_argument("--replay-events", type=int, nargs="+",
                        help="log sizes for the replay figure (e.g. 100000 1000000 10000000)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    # Stopped by a signal, it still drops its PostgreSQL databases and ends its workloads
    # (SIGINT too when started in the background, where a shell leaves it ignored).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sizes = QUICK if args.quick else FULL
    if args.replay_events:
        sizes = replace(sizes, replay_events=tuple(args.replay_events))
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    peers = (PeersEnv(None, dict.fromkeys(PEERS, "skipped (--skip-peers)")) if args.skip_peers
             else prepare(install=not args.no_install))
    for name, status in peers.status.items():
        if status != "ok":
            print(f"peer {name}: {status}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tri24es-scale-") as tmp:
        results = run(args.only, sizes, dsn=None if args.no_pg else args.dsn, peers=peers,
                      work=Path(tmp), quick=args.quick)
    stem = "scale-" + datetime.now(UTC).strftime("%Y%m%d-%H%M") + ("-quick" if args.quick
                                                                   else "")
    js, md = results.write(args.out, stem)
    print()
    print(results.markdown())
    print(f"written: {js.relative_to(REPO) if js.is_relative_to(REPO) else js}, {md.name}")


if __name__ == "__main__":
    main()
