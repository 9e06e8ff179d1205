"""Start-up time of the command line, as ratios against importing typer in the same run.

Every ``tri24es`` invocation pays its imports before it does anything; the floor of any typer
CLI is ``python -c "import typer"``. The commands are run interleaved (one of each per round,
so that a busy machine slows them alike) in a fresh project of 20 tasks, and the medians
compared, each command having run once before (so its bytecode is cached, as on a user's
machine after the first run). Usage::

    python benchmarks/startup.py [--rounds 15]

Goals: ``--help`` <= 1.5x, ``status``, ``spend``, ``tasks list`` <= 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "tri24es"]
BASELINE = [sys.executable, "-c", "import typer"]
#: name -> (arguments, goal as a ratio to the baseline)
#: The least a typer command costs: one that parses an option (typer 0.29 coerces every value
#: through pydantic, so this imports pydantic too).
TYPER_COMMAND = """
import typer
app = typer.Typer()
@app.command()
def hello(name: str | None = None) -> None:
    print(name)
app()
"""
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "a typer command": ([sys.executable, "-c", TYPER_COMMAND], None),
    "tri24es --help": ([*CLI, "--help"], 1.5),
    "tri24es status": ([*CLI, "status"], 2.0),
    "tri24es spend": ([*CLI, "spend"], 2.0),
    "tri24es tasks list": ([*CLI, "tasks", "list"], 2.0),
}


def elapsed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, float]:
    """The median seconds of each command (and of the baseline) over interleaved rounds."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
        env["TRI24ES_ROOT"] = str(root)
        # As a user runs it: with the bytecode Python caches on the first run. Without it
        # (PYTHONDONTWRITEBYTECODE, set in some sandboxes and CI images) every run compiles
        # the project's sources again, ~30 ms that typer, installed with its bytecode, never
        # pays. The first round below writes it; the warm-up round is not counted.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([*CLI, "init"], cwd=root, env=env, check=True, capture_output=True)
        for n in range(20):
            subprocess.run([*CLI, "submit", f"task {n}"], cwd=root, env=env, check=True,
                           capture_output=True)
        for args, _goal in COMMANDS.values():  # warm-up: caches written, files in memory
            elapsed(args, root, env)
        runs: dict[str, list[float]] = {"import typer": []} | {name: [] for name in COMMANDS}
        for _ in range(rounds):
            runs["import typer"].append(elapsed(BASELINE, root, env))
            for name, (args, _goal) in COMMANDS.items():
                runs[name].append(elapsed(args, root, env))
    return {name: statistics.median(times) for name, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    load = os.getloadavg()[0]
    medians = measure(rounds)
    floor = medians["import typer"]
    print(f"medians of {rounds} interleaved runs, load average {load:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"{'import typer':<20} {floor * 1000:6.0f} ms  1.00x")
    failed = False
    for name, (_args, goal) in COMMANDS.items():
        ratio = medians[name] / floor
        verdict = ""
        if goal is not None:
            verdict = f"  (goal <= {goal:.1f}x: {'ok' if ratio <= goal else 'MISSED'})"
            failed |= ratio > goal
        print(f"{name:<20} {medians[name] * 1000:6.0f} ms  {ratio:.2f}x{verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
