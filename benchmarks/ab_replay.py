"""``tri24es replay`` of two checkouts of tri24es, interleaved on the same stores: wall time
and peak memory (the process tree's RSS, summed, sampled every 10 ms, as
``benchmarks.scale`` measures it), of the whole command and of ``projections.rebuild``
alone (timed inside its process). The checkouts alternate which goes first, round by round;
report ratios of the same round (a shared machine drifts between rounds).

    .venv/bin/python -m benchmarks.ab_replay --a ../main --b . \\
        --store 100000=replay-100k.db --store 1000000=replay-1m.db --rounds 3

A store is made with ``python -m benchmarks.scale.ours '{"mode": "write_log", "url":
"replay-1m.db", "events": 1000000}'`` (per task: submitted, claimed, renewed, completed, one
spend), then replayed once before measuring (its first open builds the view tables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.scale.launch import run_command

# `projections.upkeep` since the views' upkeep left the package's __init__ (start-up work).
REBUILD = ("import sys, time; from eventlog import open_store; import importlib, importlib.util;"
           "projections = importlib.import_module('tri24es.projections.upkeep'"
           " if importlib.util.find_spec('tri24es.projections.upkeep') else 'tri24es.projections');"
           "store = open_store(sys.argv[1]); projections.install(store);"
           "t = time.perf_counter(); projections.rebuild(store);"
           "print(time.perf_counter() - t)")


def run(command: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak tree RSS (MiB), stdout."""
    done = run_command(command, env=env, cwd=cwd, capture_stdout=True)
    if done.exit_code != 0:
        raise SystemExit(f"{command} in {cwd} failed: {done.stderr_tail}")
    return done.seconds, done.peak_tree_rss_mib, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="a checkout of tri24es (the baseline)")
    parser.add_argument("--b", required=True, help="another checkout (the change)")
    parser.add_argument("--store", action="append", required=True,
                        help="EVENTS=PATH of a store made as the module says")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"a": str(Path(args.a).resolve()), "b": str(Path(args.b).resolve())}
    stores = [(int(n), str(Path(p).resolve())) for n, p in
              (spec.split("=", 1) for spec in args.store)]
    rows = []
    for r in range(args.rounds):
        for events, db in stores:
            for mode in ("replay", "rebuild"):
                for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
                    env = {k: v for k, v in os.environ.items() if not k.startswith("TRI24ES_")}
                    # The checkout's own code: first on the path, and the working folder.
                    env |= {"PYTHONPATH": trees[name], "TRI24ES_ROOT": str(Path(db).parent),
                            "TRI24ES_DB": db}
                    command = ([sys.executable, "-m", "tri24es", "replay"] if mode == "replay"
                               else [sys.executable, "-c", REBUILD, db])
                    seconds, peak, out = run(command, trees[name], env)
                    row = {"round": r, "events": events, "mode": mode, "tree": name,
                           "seconds": seconds if mode == "replay" else float(out),
                           "peak_mib": peak, "load": os.getloadavg()[0]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    for events, _ in stores:
        for mode in ("replay", "rebuild"):
            got = {(x["round"], x["tree"]): x for x in rows
                   if x["events"] == events and x["mode"] == mode}
            ratios = [got[r, "b"]["seconds"] / got[r, "a"]["seconds"]
                      for r in range(args.rounds)]
            peaks = {t: statistics.median(got[r, t]["peak_mib"] for r in range(args.rounds))
                     for t in ("a", "b")}
            print(f"{events:>10,} {mode:8} time b/a {statistics.median(ratios):.2f}"
                  f" ({', '.join(f'{x:.2f}' for x in ratios)}); peak MiB a {peaks['a']:.0f}"
                  f" b {peaks['b']:.0f}")


if __name__ == "__main__":
    main()
