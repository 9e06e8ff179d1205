"""A whole fleet on one project, its processes SIGKILLed and restarted at random until the
queue drains: every task ends once, no agent outlives its worker, no spend line counts twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventlog import open_store
from tests.chaos.conftest import rounds
from tests.e2e.conftest import CLI, clean_env
from tri24es import events as ev
from tri24es.procinfo import is_same_process
from tri24es.services import NotFound, Services

TASKS = rounds(60, "TRI24ES_CHAOS_TASKS")
WORKERS = 3
#: SIGKILLs (one every 0.5-1.5 s) before the fleet is left to drain: a fixed number, not a
#: time, so that a loaded machine (slower restarts) sees the same faults and takes longer.
KILLS = rounds(42, "TRI24ES_CHAOS_KILLS")
#: A ceiling, reached only when something is wrong (or the machine is very busy).
DEADLINE = float(os.environ.get("TRI24ES_CHAOS_DEADLINE", 300 + TASKS * 2))
AGENT = Path(__file__).parent / "agent.py"
EXEC = f"{sys.executable} {AGENT}"


@dataclass
class Process:
    """One long-running fleet process, restarted under the same command after each kill."""

    name: str
    command: list[str]
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    exits: list[int] = field(default_factory=list)  # exits it chose itself (not our kills)

    def start(self) -> None:
        log = open(self.root / "logs" / f"chaos-{self.name}.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.command, cwd=self.root, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        self.proc.wait()

    def restart_if_exited(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            self.exits.append(self.proc.returncode)
            self.start()

    def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    init = subprocess.run([*CLI, "init"], cwd=root, env=clean_env(root), capture_output=True,
                          text=True, check=False)
    assert init.returncode == 0, init.stderr
    return root


@pytest.fixture
def fleet(root: Path) -> Iterator[list[Process]]:
    chaos = root / "chaos"
    chaos.mkdir()
    env = clean_env(root) | {
        "CHAOS_DIR": str(chaos), "TRI24ES_LEASE_SECONDS": "2", "POLL_INTERVAL": "1",
        "BUDGET_RATE_LIMIT": "1000", "BUDGET_DAILY_LIMIT": "100000",
        "BUDGET_CHECK_INTERVAL": "1",
    }
    processes = [
        *(Process(f"w{n}", [*CLI, "worker", "--id", f"w{n}", "--exec", EXEC,
                            "--lease-seconds", "2"], root, env)
          for n in range(1, WORKERS + 1)),
        Process("watcher", [*CLI, "queue-watcher"], root, env),
        Process("watchdog", [*CLI, "budget-watchdog"], root, env),
    ]
    (root / "logs").mkdir(exist_ok=True)
    for process in processes:
        process.start()
    yield processes
    for process in processes:
        process.stop()


def task_ids() -> list[str]:
    return [f"t{n:04d}" for n in range(TASKS)]


def write_queue(root: Path) -> None:
    for task_id in task_ids():
        path = root / "tasks" / "queue" / f"{task_id}.md"
        path.write_text(f"# chaos {task_id}\n\nmax_retries: 100\n")


def finished(services: Services) -> bool:
    for task_id in task_ids():
        try:
            if services.task(task_id).state not in ("completed", "failed"):
                return False
        except NotFound:
            return False
    return True


def agents_alive(root: Path) -> list[str]:
    lines = (root / "chaos" / "agents").read_text().splitlines()
    return [line for line in lines if is_same_process(*map(int, line.split()))]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=root, env=clean_env(root), capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.chaos
@pytest.mark.timeout(DEADLINE + 60)
def test_a_fleet_under_random_sigkills_finishes_every_task_once(
    root: Path, fleet: list[Process],
) -> None:
    write_queue(root)
    services = Services(open_store(str(root / "state" / "tri24es.db")), actor="test")
    began = time.monotonic()
    try:
        while not finished(services):
            if time.monotonic() - began > DEADLINE:
                raise AssertionError(f"not drained in {DEADLINE}s; kills: "
                                     f"{ {p.name: p.kills for p in fleet} }")
            time.sleep(random.uniform(0.5, 1.5))
            if sum(p.kills for p in fleet) < KILLS:
                victim = random.choice(fleet)
                victim.kill()
                victim.start()
            for process in fleet:
                process.restart_if_exited()
        drained = time.monotonic() - began
        grace = time.monotonic() + 3  # a SIGKILLed worker's agent gets its death signal
        while agents_alive(root) and time.monotonic() < grace:
            time.sleep(0.1)
        assert agents_alive(root) == []
        for process in fleet:
            process.stop()

        log = [ev.decode_event(r) for r in services.store.read_all()]
        completed = Counter(e.task_id for e in log if isinstance(e, ev.TaskCompleted))
        failed = {e.task_id for e in log if isinstance(e, ev.TaskDeadLettered)}
        assert set(completed) | failed == set(task_ids())
        assert set(completed.values()) == {1}
        assert not failed & set(completed)

        spent = Counter(e.model for e in log if isinstance(e, ev.SpendRecorded))
        assert [m for m, n in spent.items() if n > 1] == []
        emitted = set((root / "chaos" / "markers").read_text().split())
        done = {f"chaos-{e.task_id}-{e.attempt}" for e in log if isinstance(e, ev.TaskCompleted)}
        assert done <= emitted
        assert set(spent) <= emitted  # nothing recorded that no agent emitted
        assert {m: spent[m] for m in done if spent[m] != 1} == {}

        for args in (["replay", "--verify"], ["audit", "verify"]):
            result = cli(root, *args)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
    finally:
        services.store.close()
    kills = {p.name: p.kills for p in fleet}
    exits = {p.name: p.exits for p in fleet if p.exits}
    attempts = sum(1 for e in log if isinstance(e, ev.TaskStarted))
    print(f"\nchaos: {TASKS} tasks drained in {drained:.1f}s, {attempts} attempts, "
          f"{len(failed)} failed, kills {kills}, self-exits {exits}, "
          f"{len(emitted)} emitted lines, {len(spent)} recorded")
