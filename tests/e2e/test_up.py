"""``tri24es up`` as a real process: it runs real workers and a real queue watcher, restarts
the ones that die, and stops them all on SIGTERM."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import PATIENCE
from tests.e2e.conftest import CLI, Run, clean_env
from tri24es.procinfo import is_same_process, start_time
from tri24es.runtime.demo import DEMO_TASKS

T = TypeVar("T")
DEADLINE = PATIENCE
#: An agent that reads its task and then sleeps until it is stopped.
SLEEPER = shlex.join([sys.executable, "-c",
                      "import sys, time; sys.stdin.read(); print('sleeping', flush=True); "
                      "time.sleep(600)"])


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``probe`` (every 0.2 s at most) until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Up:
    """A running ``tri24es up``, its output in a file."""

    def __init__(self, project: Path, run: Run, *args: str) -> None:
        self.project, self.run = project, run
        self.out = project / "up.out"
        with self.out.open("wb") as log:
            self.proc = subprocess.Popen([*CLI, "up", *args], cwd=project,
                                         env=clean_env(project), stdout=log,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out.read_text()

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w["worker_id"]: w for w in self.json("workers", "list")}

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["task_id"]: t for t in self.json("tasks", "list")}

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`up` still running:\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fleet(project: Path, run: Run) -> Iterator[Callable[..., Up]]:
    assert run("init").returncode == 0
    started: list[Up] = []

    def start(*args: str) -> Up:
        up = Up(project, run, *args)
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill()


def queue_file(project: Path, task_id: str) -> None:
    (project / "tasks" / "queue" / f"{task_id}.md").write_text(f"# {task_id}\nsleep a while\n")


def live_workers(up: Up, n: int) -> dict[str, dict[str, Any]] | None:
    workers = {k: w for k, w in up.workers().items() if w["state"] in ("idle", "busy")}
    return workers if len(workers) == n else None


@pytest.mark.slow
def test_demo_runs_every_task_and_records_spend(run: Run) -> None:
    assert run("init").returncode == 0
    done = run("up", "--demo", "--exit-when-done", timeout=4 * PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up: stopped (done)" in done.stdout

    tasks = json.loads(run("tasks", "list", "--json").stdout)
    assert len(tasks) == len(DEMO_TASKS)
    assert {t["state"] for t in tasks} == {"completed"}
    retried = [t for t in tasks if t["task_id"].endswith("flaky-checkout-test")]
    assert retried[0]["attempt"] == 2  # its first attempt failed on purpose
    spend = run("events", "--type", "SpendRecorded", "--json").stdout.splitlines()
    assert len(spend) >= 2 * len(DEMO_TASKS)
    models = {json.loads(line)["data"].get("model") for line in spend}
    assert "claude-sonnet-4-5" in models
    workers = json.loads(run("workers", "list", "--json").stdout)
    assert {w["state"] for w in workers} == {"stopped"}


@pytest.mark.slow
def test_sigterm_stops_every_child_and_requeues_the_running_tasks(
    fleet: Callable[..., Up], project: Path,
) -> None:
    for task_id in ("long-a", "long-b"):
        queue_file(project, task_id)
    up = fleet("--workers", "2", "--exec", SLEEPER)

    def both_running() -> dict[str, dict[str, Any]] | None:
        tasks = up.tasks()
        running = [t for t in tasks.values() if t["state"] == "running" and t["pid"]]
        return tasks if len(running) == 2 else None

    tasks = wait_for(both_running, "both tasks running")
    workers = wait_for(lambda: live_workers(up, 2), "two live workers")
    pids = [w["pid"] for w in workers.values()] + [t["pid"] for t in tasks.values()]
    watcher = [line for line in up.output().splitlines() if "queue-watcher: started" in line]
    pids.append(int(watcher[0].rsplit("pid ", 1)[1].rstrip(")")))
    started = {pid: start_time(pid) for pid in pids}

    assert up.stop(signal.SIGTERM) == 0, up.output()

    still_running = [pid for pid, at in started.items() if is_same_process(pid, at)]
    assert still_running == [], up.output()
    after = up.tasks()
    assert {t["state"] for t in after.values()} == {"queued"}
    assert {w["state"] for w in up.workers().values()} == {"stopped"}
    requeued = up.run("events", "--type", "TaskRequeued", "--json").stdout.splitlines()
    assert {json.loads(line)["data"]["task_id"] for line in requeued} == {"long-a", "long-b"}


@pytest.mark.slow
def test_sigint_is_a_normal_stop(fleet: Callable[..., Up]) -> None:
    up = fleet("--workers", "1", "--no-watcher", "--exec", SLEEPER)
    wait_for(lambda: live_workers(up, 1), "a live worker")
    assert up.stop(signal.SIGINT) == 0, up.output()


@pytest.mark.slow
def test_a_killed_worker_is_restarted(fleet: Callable[..., Up]) -> None:
    up = fleet("--workers", "1", "--no-watcher", "--exec", SLEEPER)
    [(worker_id, first)] = wait_for(lambda: live_workers(up, 1), "a live worker").items()

    os.kill(first["pid"], signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        row = up.workers()[worker_id]
        return row if row["pid"] != first["pid"] and row["state"] == "idle" else None

    second = wait_for(replaced, "the worker restarted under a new pid")
    assert is_same_process(second["pid"], start_time(second["pid"]))
    assert f"{worker_id}: killed by SIGKILL; restarting" in up.output()
    assert up.stop() == 0, up.output()
    assert {w["state"] for w in up.workers().values()} == {"stopped"}


@pytest.mark.slow
def test_children_die_with_a_killed_supervisor(fleet: Callable[..., Up]) -> None:
    up = fleet("--workers", "2", "--exec", SLEEPER)
    workers = wait_for(lambda: live_workers(up, 2), "two live workers")
    started = {w["pid"]: start_time(w["pid"]) for w in workers.values()}

    up.kill()  # SIGKILL: no chance to stop them; the parent-death signal must

    def all_gone() -> bool | None:
        return True if not any(is_same_process(p, t) for p, t in started.items()) else None

    wait_for(all_gone, "the workers to exit after their supervisor died")
