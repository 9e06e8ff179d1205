"""``tri24es worker`` as a real process running real agents, steered by real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eventlog import open_store
from tests.conftest import PATIENCE
from tests.conftest import wait_until as shared_wait_until
from tests.e2e.conftest import CLI, Run, clean_env
from tri24es import events as ev
from tri24es.names import Priority, RequeueReason
from tri24es.procinfo import is_same_process, start_time
from tri24es.services import NotFound, Services, TaskSpec

E = TypeVar("E", bound=ev.Event)

AGENT = Path(__file__).parent / "agents" / "scripted.py"
EXEC = f"{sys.executable} {AGENT}"
DEADLINE = PATIENCE


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    shared_wait_until(condition, what, timeout, every=0.1)


def gone(pid: int, started: int) -> bool:
    """Not running any more (a zombie that nobody reaped counts as gone)."""
    return not is_same_process(pid, started)


class Fleet:
    """A project folder, its store, and the worker processes started on it."""

    def __init__(self, root: Path, run: Run) -> None:
        self.root, self.run = root, run
        self.services = Services(open_store(str(root / "state" / "tri24es.db")), actor="test")
        self.workers: list[subprocess.Popen[bytes]] = []

    def submit(self, task_id: str, body: str, **fields: Any) -> None:
        self.services.submit(TaskSpec(task_id, f"task {task_id}", body=body, **fields))

    def worker(self, *args: str, lease: float = 3.0, exec_: str | None = EXEC,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = clean_env(self.root) | {"TRI24ES_LEASE_SECONDS": str(lease)} | (env or {})
        command = [*CLI, "worker", *args, *(["--exec", exec_] if exec_ else [])]
        log = open(self.root / f"worker-{len(self.workers)}.out", "wb")  # noqa: SIM115
        proc = subprocess.Popen(command, cwd=self.root, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.workers.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"worker-{self.workers.index(proc)}.out").read_text()

    def exit_code(self, proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running:\n{self.output(proc)}") from None

    def events(self, kind: type[E], stream: str | None = None) -> list[E]:
        found = [ev.decode_event(r) for r in self.services.store.read_all(types=[kind.topic])
                 if stream is None or r.stream == stream]
        return [e for e in found if isinstance(e, kind)]

    def state(self, task_id: str) -> str:
        return self.services.task(task_id).state

    def worker_state(self, worker_id: str) -> str | None:
        try:
            return self.services.worker(worker_id).state
        except NotFound:
            return None

    def started(self, task_id: str) -> ev.TaskStarted:
        wait_until(lambda: self.events(ev.TaskStarted, f"task-{task_id}"), f"{task_id} started")
        return self.events(ev.TaskStarted, f"task-{task_id}")[-1]

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.services.store.close()


def test_completes_tasks_in_priority_order_with_each_tasks_command(fleet: Fleet) -> None:
    command = [sys.executable, str(AGENT)]
    for task_id, priority in [("low", Priority.LOW), ("high", Priority.HIGH),
                              ("medium", Priority.MEDIUM)]:
        fleet.submit(task_id, f"say running {task_id}", priority=priority, command=command)
    proc = fleet.worker("--id", "w1", "--exit-when-idle", exec_=None)
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    done = fleet.events(ev.TaskCompleted)
    assert [e.task_id for e in done] == ["high", "medium", "low"]
    assert fleet.worker_state("w1") == "stopped"
    assert (fleet.root / "logs/tasks/high/1.log").read_text() == "running high\n"


def test_a_task_without_a_command_waits_for_a_worker_that_can_run_it(fleet: Fleet) -> None:
    fleet.submit("nocmd", "say hi")
    proc = fleet.worker("--exit-when-idle", exec_=None)
    assert fleet.exit_code(proc) == 0
    assert fleet.state("nocmd") == "queued"  # not dead-lettered: a worker with --exec runs it
    assert not fleet.events(ev.TaskFailed)
    proc = fleet.worker("--exit-when-idle")
    assert fleet.exit_code(proc) == 0
    assert fleet.state("nocmd") == "completed"


def test_a_failing_agent_is_retried_then_dead_lettered(fleet: Fleet) -> None:
    fleet.submit("broken", "say it broke\nexit 3", max_retries=1)
    proc = fleet.worker("--exit-when-idle")
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    failures = fleet.events(ev.TaskFailed)
    assert [(f.attempt, f.error, f.exit_code) for f in failures] == [
        (1, "exit 3: it broke", 3), (2, "exit 3: it broke", 3)]
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.RETRY
    assert len(fleet.events(ev.TaskDeadLettered)) == 1
    assert fleet.state("broken") == "failed"


def test_the_agent_gets_the_task_on_stdin_in_a_file_and_in_its_environment(
    fleet: Fleet, tmp_path: Path,
) -> None:
    given = tmp_path / "given.json"
    body = f"# Fix it\nrecord {given}\nsay hello from the agent\n"
    fleet.submit("fix", body)
    proc = fleet.worker("--id", "w-env", "--exit-when-idle")
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    got = json.loads(given.read_text())
    assert got["stdin"] == body
    assert got["task_file"] == body
    assert got["task_file_mode"] == 0o600
    assert got["env"]["TRI24ES_TASK_ID"] == "fix"
    assert got["env"]["TRI24ES_WORKER_ID"] == "w-env"
    assert got["env"]["TRI24ES_DB"] == str(fleet.root / "state" / "tri24es.db")
    assert got["env"]["TRI24ES_TASK_FILE"] == str(fleet.root / "state" / "tasks" / "fix.md")
    # The agent runs under its keeper, in the keeper's own session and process group.
    started = fleet.started("fix")
    assert got["ppid"] == got["pgid"] == got["sid"] == started.pid == started.pgid
    assert got["pid"] != started.pid
    assert started.host is not None
    assert started.pid_start_time is not None
    assert (fleet.root / "logs/tasks/fix/1.log").read_text() == "hello from the agent\n"


def test_a_task_text_larger_than_a_pipe_reaches_the_agent_whole(
    fleet: Fleet, tmp_path: Path,
) -> None:
    """The text is written to the agent's stdin as far as the pipe takes it at once, the
    rest by a thread while the agent reads: all of it arrives, then the end of its input."""
    given = tmp_path / "given.json"
    body = f"record {given}\nsay read it all\n" + "".join(
        f"# line {i} {'x' * 90}\n" for i in range(3000))  # ~300 KB
    fleet.submit("big", body)
    proc = fleet.worker("--exit-when-idle")
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    got = json.loads(given.read_text())
    assert got["stdin"] == body
    assert got["task_file"] == body
    assert fleet.state("big") == "completed"


def test_spend_is_recorded_while_the_agent_runs(fleet: Fleet, tmp_path: Path) -> None:
    go = tmp_path / "go"
    fleet.submit("spender", f"spend 0.25\nwait {go}\nsay finished")
    proc = fleet.worker("--id", "w-spend", "--exit-when-idle")
    wait_until(lambda: fleet.events(ev.SpendRecorded), "a SpendRecorded event")
    [spend] = fleet.events(ev.SpendRecorded)
    assert (spend.amount, spend.task, spend.worker, spend.source) == (
        Decimal("0.25"), "spender", "w-spend", "worker")
    assert fleet.state("spender") == "running"  # the agent is still waiting for `go`
    go.touch()
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert fleet.state("spender") == "completed"
    assert len(fleet.events(ev.SpendRecorded)) == 1


def heartbeats_after(fleet: Fleet, worker_id: str, position: int) -> int:
    return sum(1 for r in fleet.services.store.read_all(position, types=["WorkerHeartbeat"])
               if r.stream == f"worker-{worker_id}")


def test_sigusr1_pauses_after_the_task_and_sigusr2_resumes(fleet: Fleet, tmp_path: Path) -> None:
    go = tmp_path / "go"
    fleet.submit("first", f"wait {go}")
    proc = fleet.worker("--id", "w-pause", lease=1.5)
    fleet.started("first")
    proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: fleet.worker_state("w-pause") == "paused", "the worker paused")
    fleet.submit("second", "say second")
    go.touch()
    wait_until(lambda: fleet.state("first") == "completed", "the first task done")
    # Two heartbeats later the worker has been round its loop: still no claim.
    mark = fleet.services.store.head()
    wait_until(lambda: heartbeats_after(fleet, "w-pause", mark) >= 2, "two heartbeats")
    assert fleet.state("second") == "queued"
    assert fleet.worker_state("w-pause") == "paused"
    proc.send_signal(signal.SIGUSR2)
    wait_until(lambda: fleet.state("second") == "completed", "the second task done")
    assert len(fleet.events(ev.WorkerResumed)) == 1
    proc.send_signal(signal.SIGTERM)
    assert fleet.exit_code(proc) == 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 1)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_the_agent_group_and_requeues_the_task(
    fleet: Fleet, tmp_path: Path, signum: signal.Signals, code: int,
) -> None:
    child_pid = tmp_path / "child.pid"
    fleet.submit("long", f"spawn {child_pid}\nhang")
    proc = fleet.worker("--id", "w-stop")
    agent = fleet.started("long")
    wait_until(child_pid.exists, "the agent's child")
    agent_start = start_time(agent.pid)
    child = int(child_pid.read_text())
    child_start = start_time(child)
    proc.send_signal(signum)
    assert fleet.exit_code(proc) == code, fleet.output(proc)
    assert gone(agent.pid, agent_start)
    with pytest.raises(ProcessLookupError):
        os.kill(agent.pid, 0)  # reaped by the worker, too
    wait_until(lambda: gone(child, child_start), "the agent's child gone")
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.WORKER_STOPPED
    assert fleet.state("long") == "queued"
    assert fleet.worker_state("w-stop") == "stopped"


def test_pause_resume_and_stop_requests_reach_the_worker_without_signals(
    fleet: Fleet,
) -> None:
    proc = fleet.worker("--id", "w-ctl", lease=1.5)
    wait_until(lambda: fleet.worker_state("w-ctl") == "idle", "the worker idle")
    assert fleet.run("workers", "pause", "w-ctl").returncode == 0
    wait_until(lambda: fleet.worker_state("w-ctl") == "paused", "the worker paused")
    fleet.submit("later", "hang")
    mark = fleet.services.store.head()
    wait_until(lambda: heartbeats_after(fleet, "w-ctl", mark) >= 2, "two heartbeats")
    assert fleet.state("later") == "queued"
    assert fleet.run("workers", "resume", "w-ctl").returncode == 0
    agent = fleet.started("later")
    agent_start = start_time(agent.pid)
    assert fleet.run("workers", "stop", "w-ctl").returncode == 0
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert gone(agent.pid, agent_start)
    assert fleet.state("later") == "queued"
    assert fleet.worker_state("w-ctl") == "stopped"
    assert len(fleet.events(ev.WorkerPaused)) == 1
    assert len(fleet.events(ev.WorkerResumed)) == 1


def test_a_killed_workers_agent_dies_and_its_task_is_run_again(fleet: Fleet) -> None:
    fleet.submit("orphan", "hang-on 1\nsay second attempt")
    first = fleet.worker("--id", "w-kill", lease=2)
    agent = fleet.started("orphan")
    agent_start = start_time(agent.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(DEADLINE)
    wait_until(lambda: gone(agent.pid, agent_start), "the agent gone with its worker")
    # The same id again: the dead incarnation is declared lost; the lease then runs out.
    second = fleet.worker("--id", "w-kill", "--max-tasks", "1", lease=2)
    assert fleet.exit_code(second) == 0, fleet.output(second)
    assert len(fleet.events(ev.WorkerLost)) == 1
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.LEASE_EXPIRED
    [done] = fleet.events(ev.TaskCompleted)
    assert done.attempt == 2


def test_a_live_worker_id_cannot_be_started_twice(fleet: Fleet) -> None:
    first = fleet.worker("--id", "w-twice")
    wait_until(lambda: fleet.worker_state("w-twice") == "idle", "the first worker idle")
    again = fleet.run("worker", "--id", "w-twice", "--exit-when-idle")
    assert again.returncode == 1
    assert again.stderr.strip().endswith(
        f"worker w-twice is already running (pid {first.pid})"), again.stderr
    first.send_signal(signal.SIGTERM)
    assert fleet.exit_code(first) == 0


def test_task_timeout_stops_a_hanging_agent_and_fails_the_task(fleet: Fleet) -> None:
    fleet.submit("stuck", "hang", max_retries=0)
    proc = fleet.worker("--exit-when-idle", "--task-timeout", "0.5")
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    agent = fleet.started("stuck")
    assert not Path(f"/proc/{agent.pid}").exists()
    [failed] = fleet.events(ev.TaskFailed)
    assert failed.error == "timeout"
    assert fleet.state("stuck") == "failed"


def test_legacy_files_move_through_running_to_completed(fleet: Fleet, tmp_path: Path) -> None:
    go = tmp_path / "go"
    queued = fleet.root / "tasks" / "queue" / "HIGH" / "legacy.md"
    queued.parent.mkdir(parents=True)
    queued.write_text(f"# Legacy task\nwait {go}\n")
    assert fleet.run("submit", "--file", "tasks/queue/HIGH/legacy.md").returncode == 0
    proc = fleet.worker("--id", "w-legacy", "--legacy-files", "--exit-when-idle")
    running = fleet.root / "tasks" / "running" / "legacy.md"
    lock = fleet.root / "tasks" / "running" / "legacy.md.lock.d"
    wait_until(running.exists, "the file in running/")
    assert not queued.exists()
    assert (lock / "worker_id").read_text().strip() == "w-legacy"
    assert (lock / "claimed_at").read_text().strip()
    go.touch()
    assert fleet.exit_code(proc) == 0, fleet.output(proc)
    assert (fleet.root / "tasks" / "completed" / "legacy.md").read_text().startswith("# Legacy")
    assert not running.exists()
    assert not lock.exists()


def test_a_gone_workers_spare_task_file_is_removed_and_a_live_ones_kept(fleet: Fleet) -> None:
    inputs = fleet.root / "state" / "tasks"
    live = fleet.worker("--id", "w-live")
    dead = fleet.worker("--id", "w-dead")
    for name in ("w-live", "w-dead"):
        spare = inputs / f".worker-{name}.spare"
        wait_until(spare.exists, f"{name}'s spare task file")
    dead.send_signal(signal.SIGKILL)
    dead.wait(DEADLINE)
    unknown = inputs / ".worker-never%2Fregistered.spare"  # an id the store never saw
    unknown.write_bytes(b"")
    sweeper = fleet.worker("--id", "w-sweep", "--exit-when-idle")
    assert fleet.exit_code(sweeper) == 0, fleet.output(sweeper)
    assert not (inputs / ".worker-w-dead.spare").exists()
    assert not unknown.exists()
    assert (inputs / ".worker-w-live.spare").exists()  # its worker is alive: kept
    live.send_signal(signal.SIGTERM)
    assert fleet.exit_code(live) == 0
