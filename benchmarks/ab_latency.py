"""Submit-to-agent latency of two checkouts of tri24es, alternated round by round:
``benchmarks.scale.latency.measure`` (a real idle ``tri24es worker --exec 'date +%s%N'`` on
SQLite beside the raw inotify follower, submits alternated) run in each checkout's own
process, on its own code; the checkouts take turns going first. A round's ratio is its
median over the same run's floor median (a shared machine drifts between rounds, and the
floor drifts with it); pooled figures take every submit of a side.

    .venv/bin/python -m benchmarks.ab_latency --a ../main --b . --rounds 10 --submits 20

``--stamps``: the worker, its keepers and the follower run with their steps time-stamped
(``benchmarks.scale.stamps``; each checkout needs ``benchmarks/scale/stamps.py`` and
``stamped_shim.py``), and the median time of each step from the commit is printed per side.
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
from typing import Any

from benchmarks.scale.latency import quantile

# Run inside a checkout: its own benchmarks and tri24es (first on the path: the folder).
MEASURE = ("import json, sys; from pathlib import Path;"
           "from benchmarks.scale.latency import measure;"
           "from benchmarks.scale.report import Results;"
           "r = Results('', {}, {}); stamps = Path(sys.argv[3]) if sys.argv[3] else None;"
           "measure(r, work=Path(sys.argv[1]), submits=int(sys.argv[2]),"
           " **({'stamps': stamps} if stamps else {}));"
           "print('RESULT ' + json.dumps(r.sections['latency_ms']))")


def one_run(tree: str, submits: int, stamped: bool = False) -> dict[str, Any]:
    """{'tri24es': [ms...], 'floor': [ms...]} of one run in ``tree``; stamped, also
    'steps': {step: [ms from the commit, per submit...]}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRI24ES_")}
    env["PYTHONPATH"] = tree
    with tempfile.TemporaryDirectory(prefix="ab-latency-") as work:
        stamps = Path(work) / "stamps" if stamped else None
        done = subprocess.run([sys.executable, "-c", MEASURE, work, str(submits),
                               str(stamps or "")], cwd=tree,
                              env=env, capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[len("RESULT "):])
                if stamps is not None:
                    result["steps"] = steps(stamps.read_text())
                return result
    raise SystemExit(f"the run in {tree} failed: {done.stderr[-2000:]}")


#: The steps stamped, in the order they happen (``benchmarks.scale.stamps``).
WORKER_STEPS = ("awake", "claimable<", "claimable>", "claimed", "spawn<", "taskfile<",
                "taskfile>", "order<", "order>", "k_order", "k_spawn<", "k_spawn>", "spawned",
                "agent", "log", "started")
FOLLOWER_STEPS = ("f_awake", "f_spawn<", "f_spawn>", "f_agent")


def steps(text: str) -> dict[str, list[float]]:
    """Each step's time from its submit's commit (ms), per submit, from a stamps file.
    Around a claim: the last wake-up and ``claimable`` read before it, the first of each
    later step after it; for the follower: its last wake-up before its spawn."""
    stamped = sorted((int(ns), name) for name, ns in
                     (line.split() for line in text.splitlines() if line.strip()))
    found: dict[str, list[float]] = {}
    for ns, name in stamped:
        if name not in ("commit", "f_commit"):
            continue
        mine = name == "commit"
        window = [(t, n) for t, n in stamped if ns - 5_000_000 < t < ns + 50_000_000
                  and n.startswith("f_") != mine and n not in ("commit", "f_commit")]
        pivot = "claimed" if mine else "f_spawn<"
        at = next((t for t, n in window if n == pivot and t >= ns - 1_000_000), None)
        if at is None:
            continue
        for step in WORKER_STEPS if mine else FOLLOWER_STEPS:
            before = step in ("awake", "claimable<", "claimable>", "f_awake")
            times = [t for t, n in window if n == step and (t <= at if before else t >= at)]
            if times:
                found.setdefault(step, []).append(((times[-1] if before else times[0]) - ns)
                                                  / 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="a checkout of tri24es (the baseline)")
    parser.add_argument("--b", required=True, help="another checkout (the change)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--submits", type=int, default=20)
    parser.add_argument("--out", help="write every run's figures here (JSON)")
    parser.add_argument("--stamps", action="store_true",
                        help="time-stamp the steps and print their medians per side")
    args = parser.parse_args()
    trees = {"a": str(Path(args.a).resolve()), "b": str(Path(args.b).resolve())}
    runs: list[dict[str, object]] = []
    for r in range(args.rounds):
        ratios = {}
        for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
            load = os.getloadavg()[0]
            figures = one_run(trees[name], args.submits, args.stamps)
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
    if args.stamps:
        for name in ("a", "b"):
            pooled: dict[str, list[float]] = {}
            for run in runs:
                if run["side"] == name:
                    for step, values in run["steps"].items():  # type: ignore[attr-defined]
                        pooled.setdefault(step, []).extend(values)
            print(f"{name}: median ms from the commit (p75) per step: " + ", ".join(
                f"{step} {statistics.median(pooled[step]):.2f} ({quantile(pooled[step], 0.75):.2f})"
                for step in (*WORKER_STEPS, *FOLLOWER_STEPS) if step in pooled), flush=True)
    loads = [float(run["load"]) for run in runs]  # type: ignore[arg-type]
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
