"""Submit-to-agent latency of two checkouts of tri24es, alternated round by round:
``benchmarks.scale.latency.measure`` (a real idle ``tri24es worker --exec 'date +%s%N'`` on
SQLite beside the raw inotify follower, submits alternated) run in each checkout's own
process, on its own code; the checkouts take turns going first. A round's ratio is its
median over the same run's floor median (a shared machine drifts between rounds, and the
floor drifts with it); pooled figures take every submit of a side.

    .venv/bin/python -m benchmarks.ab_latency --a ../main --b . --rounds 10 --submits 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.scale.latency import quantile

# Run inside a checkout: its own benchmarks and tri24es (first on the path: the folder).
MEASURE = ("import json, sys; from pathlib import Path;"
           "from benchmarks.scale.latency import measure;"
           "from benchmarks.scale.report import Results;"
           "r = Results('', {}, {}); measure(r, work=Path(sys.argv[1]), submits=int(sys.argv[2]));"
           "print('RESULT ' + json.dumps(r.sections['latency_ms']))")


def one_run(tree: str, submits: int) -> dict[str, list[float]]:
    """{'tri24es': [ms...], 'floor': [ms...]} of one run in ``tree``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRI24ES_")}
    env["PYTHONPATH"] = tree
    with tempfile.TemporaryDirectory(prefix="ab-latency-") as work:
        done = subprocess.run([sys.executable, "-c", MEASURE, work, str(submits)], cwd=tree,
                              env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, list[float]] = json.loads(line[len("RESULT "):])
            return result
    raise SystemExit(f"the run in {tree} failed: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="a checkout of tri24es (the baseline)")
    parser.add_argument("--b", required=True, help="another checkout (the change)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--submits", type=int, default=20)
    parser.add_argument("--out", help="write every run's figures here (JSON)")
    args = parser.parse_args()
    trees = {"a": str(Path(args.a).resolve()), "b": str(Path(args.b).resolve())}
    runs: list[dict[str, object]] = []
    for r in range(args.rounds):
        ratios = {}
        for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
            load = os.getloadavg()[0]
            figures = one_run(trees[name], args.submits)
            median = statistics.median(figures["tri24es"])
            floor = statistics.median(figures["floor"])
            ratios[name] = median / floor
            runs.append({"round": r, "side": name, "load": load, **figures})
            print(f"round {r} {name}: median {median:.2f} ms, floor {floor:.2f} ms, "
                  f"ratio {ratios[name]:.2f}x (load {load:.1f})", flush=True)
        print(f"round {r}: a {ratios['a']:.2f}x, b {ratios['b']:.2f}x", flush=True)
    for name in ("a", "b"):
        mine = [run for run in runs if run["side"] == name]
        ours = [v for run in mine for v in run["tri24es"]]  # type: ignore[attr-defined]
        floor = [v for run in mine for v in run["floor"]]  # type: ignore[attr-defined]
        per_round = [statistics.median(run["tri24es"]) / statistics.median(run["floor"])  # type: ignore[arg-type]
                     for run in mine]
        print(f"{name} ({trees[name]}): ratio per round "
              f"{', '.join(f'{x:.2f}' for x in per_round)}; median of rounds "
              f"{statistics.median(per_round):.2f}x; pooled median {statistics.median(ours):.2f} ms"
              f" / floor {statistics.median(floor):.2f} ms = "
              f"{statistics.median(ours) / statistics.median(floor):.2f}x; p90 "
              f"{quantile(ours, 0.9):.2f} ms (floor {quantile(floor, 0.9):.2f}); rounds at or "
              f"under 2x: {sum(x <= 2 for x in per_round)} of {len(per_round)}", flush=True)
    loads = [float(run["load"]) for run in runs]  # type: ignore[arg-type]
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
