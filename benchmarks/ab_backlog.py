"""The backlog's claim figure (``benchmarks.scale --only backlog``) of two checkouts of tri24es,
interleaved: claim+complete at a large backlog and a small one, cold and warm page cache,
each checkout on stores it seeded itself (their layouts may differ). Each run is the
harness's own: a top-up of as many tasks as the run claims, one worker process, the cache
dropped once it is set up (cold). The checkouts alternate which goes first, round by round;
report ratios of the same round (a shared machine drifts between rounds).

    .venv/bin/python -m benchmarks.ab_backlog --a ../main --b . --work /tmp/ab --rounds 5

Stores are kept in ``--work`` and reused (a run leaves the backlog at its size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.scale.launch import run_command

SEED = ("import sys; from pathlib import Path; from benchmarks.scale.backlog import seed;"
        "seed(Path(sys.argv[1]), int(sys.argv[2]))")
# As benchmarks.scale.backlog.measure does one run, in the checkout's own code.
RUN = """
import json, sys
from pathlib import Path
from benchmarks.scale.backlog import top_up
from benchmarks.scale.launch import Workload, make_cold, run_group
path, tag, cycles, cold = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "cold"
top_up(path, tag, cycles)
work = Workload(sys.executable, "benchmarks.scale.ours",
                {"mode": "work", "url": str(path), "worker": tag, "limit": cycles})
files = [path, Path(f"{path}-wal")]
result = run_group([work], before_go=(lambda: make_cold(files)) if cold else None)
print(json.dumps({"rate": result.rate, "duplicates": result.duplicates()}))
"""


def python(tree: str, code: str, *args: object) -> str:
    env = {**os.environ, "PYTHONPATH": tree}
    done = run_command([sys.executable, "-c", code, *map(str, args)], env=env, cwd=tree,
                       capture_stdout=True, timeout=1800)
    if done.exit_code != 0:
        raise SystemExit(f"{code.splitlines()[0]} in {tree} failed: {done.stderr_tail}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="a checkout of tri24es (the baseline)")
    parser.add_argument("--b", required=True, help="another checkout (the change)")
    parser.add_argument("--work", required=True, help="where the stores are kept")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"a": str(Path(args.a).resolve()), "b": str(Path(args.b).resolve())}
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = (args.small, args.tasks)
    stores = {(side, n): work / f"{side}-{n}.db" for side in trees for n in sizes}
    for (side, n), path in stores.items():
        if not path.exists():
            print(f"seeding {path.name}", flush=True)
            python(trees[side], SEED, path, n)
    rates: dict[tuple[str, str, int], list[float]] = {}
    loads = []
    for r in range(args.rounds):
        for cache in ("cold", "warm"):
            for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
                for n in sizes if r % 2 == 0 else sizes[::-1]:
                    loads.append(os.getloadavg()[0])
                    # Task ids new to the store (a top-up of ids it holds adds nothing).
                    tag = f"ab{os.getpid()}-{r}{cache}"
                    found = json.loads(python(trees[side], RUN, stores[side, n], tag,
                                              args.cycles, cache))
                    assert found["duplicates"] == 0, found
                    rates.setdefault((side, cache, n), []).append(found["rate"])
                    print(f"round {r} {side} {cache} {n:,}: {found['rate']:,.0f} jobs/s "
                          f"(load {loads[-1]:.1f})", flush=True)
    for cache in ("cold", "warm"):
        for side in ("a", "b"):
            big, small = rates[side, cache, args.tasks], rates[side, cache, args.small]
            ratios = [x / y for x, y in zip(big, small, strict=True)]
            print(f"{cache} {side} ({trees[side]}): {args.tasks:,} vs {args.small:,} per round "
                  f"{', '.join(f'{x:.2f}' for x in ratios)};"
                  f" median {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f});"
                  f" medians {statistics.median(big):,.0f}"
                  f" and {statistics.median(small):,.0f} jobs/s", flush=True)
        for n in sizes:
            ratios = [x / y for x, y in zip(rates["b", cache, n], rates["a", cache, n],
                                            strict=True)]
            print(f"{cache} {n:,}: b/a per round {', '.join(f'{x:.2f}' for x in ratios)};"
                  f" median {statistics.median(ratios):.2f}x", flush=True)
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}", flush=True)


if __name__ == "__main__":
    main()
