"""How the harness and a workload process talk (standard library only: both venvs use it).

A workload runs as ``python -m <module> '<json args>'``. It sets itself up (imports, connects),
prints ``ready``, and waits for ``go <monotonic time>`` on stdin; then it sleeps until that
time, runs, and prints one JSON line: how many jobs it did, the monotonic time it started and
ended, and the ids of the jobs its handler ran (so that the harness can count duplicates and
lost jobs across processes). CLOCK_MONOTONIC is one clock for every process of the machine, so
several processes are measured from their common start to the last one's end.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

RESULT_PREFIX = "result "


def args() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(sys.argv[1])
    return parsed


def ready_then_go() -> float:
    """Tell the harness we are set up; sleep until the common start it sends back."""
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        raise SystemExit(f"expected 'go <time>', got {line!r}")
    start_at = float(line[1])
    time.sleep(max(0.0, start_at - time.monotonic()))
    return time.monotonic()


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(**fields: Any) -> None:
    fields.setdefault("peak_rss_mib", peak_rss_mib())
    print(RESULT_PREFIX + json.dumps(fields), flush=True)


def run_timed(work: Callable[[], list[Any]], **extra: Any) -> None:
    """The usual body: barrier, run ``work`` (which returns the ids its handler ran), report."""
    start = ready_then_go()
    ran = work()
    end = time.monotonic()
    report(done=len(ran), start=start, end=end, ran=ran, **extra)


def main_of(workloads: dict[str, Callable[[dict[str, Any]], None]]) -> None:
    """Dispatch ``{"mode": name, ...}`` to one of a module's workloads."""
    params = args()
    workloads[params["mode"]](params)
