"""Control across machines: two hosts (``TRI24ES_HOST_ID`` host-a and host-b, each with a
project folder of its own) share one store. Requests made on one host reach a worker on the
other through the log; signals go only to processes on the watchdog's own host.

Every test runs on a SQLite file (two "hosts" sharing one file) and on a PostgreSQL schema.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import orjson
import psycopg
import pytest

from eventlog import open_store
from eventlog.postgres import PostgresStore
from tests.conftest import PATIENCE, with_schema
from tests.e2e.conftest import CLI, clean_env
from tests.e2e.test_worker import EXEC, gone, wait_until
from tri24es import events as ev
from tri24es.names import RequeueReason
from tri24es.procinfo import start_time
from tri24es.services import Services, TaskSpec

E = TypeVar("E", bound=ev.Event)

#: A ceiling, never a reason to pass: each wait below ends as soon as its event lands.
SOON = PATIENCE
FAST = {"TRI24ES_LEASE_SECONDS": "3", "POLL_INTERVAL": "0.5", "BUDGET_CHECK_INTERVAL": "0.5"}
BUDGET = {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_WINDOW_SIZE": "60", "BUDGET_DAILY_LIMIT": "1000",
          "BUDGET_TIMEZONE": "UTC"}


class Host:
    """One simulated machine: its host id, its project folder, the shared store."""

    def __init__(self, name: str, root: Path, url: str) -> None:
        self.name, self.root, self.url = name, root, url
        self.procs: dict[subprocess.Popen[bytes], Path] = {}
        root.mkdir(parents=True)

    def env(self) -> dict[str, str]:
        return clean_env(self.root) | FAST | BUDGET | {"TRI24ES_DB": self.url,
                                                        "TRI24ES_HOST_ID": self.name}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=self.root, env=self.env(), capture_output=True,
                              text=True, timeout=60, check=False)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        path = self.root / f"{args[0]}-{len(self.procs)}.out"
        with open(path, "wb") as out:
            proc = subprocess.Popen([*CLI, *args], cwd=self.root, env=self.env() | (env or {}),
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs[proc] = path
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.procs[proc].read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class Fleet:
    def __init__(self, url: str, tmp: Path) -> None:
        self.a, self.b = Host("host-a", tmp / "a", url), Host("host-b", tmp / "b", url)
        for host in (self.a, self.b):
            init = host.run("init")
            assert init.returncode == 0, init.stderr
        self.services = Services(open_store(url), actor="test")

    def events(self, kind: type[E]) -> list[tuple[E, str | None]]:
        """Each event of ``kind`` with the host its metadata names."""
        records = self.services.store.read_all(types=[kind.topic])
        pairs = [(ev.decode_event(r), orjson.loads(r.metadata).get("host")) for r in records]
        return [(e, host) for e, host in pairs if isinstance(e, kind)]

    def hosts(self, kind: type[ev.Event]) -> set[str | None]:
        return {host for _, host in self.events(kind)}

    def wait_for(self, kind: type[ev.Event], what: str, count: int = 1) -> None:
        wait_until(lambda: len(self.events(kind)) >= count, what, timeout=SOON)

    def worker(self, worker_id: str) -> subprocess.Popen[bytes]:
        proc = self.a.start("worker", "--id", worker_id, "--exec", EXEC)
        wait_until(lambda: self.events(ev.WorkerStarted), "the worker to register", SOON)
        assert self.services.worker(worker_id).host == "host-a"
        return proc

    def agent(self, task_id: str) -> tuple[int, int]:
        """The running agent of ``task_id``: pid and start time."""
        wait_until(lambda: any(e.task_id == task_id for e, _ in self.events(ev.TaskStarted)),
                   f"{task_id} to start", SOON)
        pid = [e.pid for e, _ in self.events(ev.TaskStarted) if e.task_id == task_id][-1]
        return pid, start_time(pid)

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.services.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    if request.param == "postgresql":
        new_schema: Callable[[], str] = request.getfixturevalue("new_schema")
        url = with_schema(request.getfixturevalue("pg_dsn"), new_schema())
    else:
        url = f"sqlite:///{tmp_path / 'shared' / 'tri24es.db'}"
    fleet = Fleet(url, tmp_path)
    yield fleet
    fleet.close()


def test_pause_resume_stop_from_another_host_reach_the_worker(fleet: Fleet,
                                                              tmp_path: Path) -> None:
    release = tmp_path / "release-first"
    fleet.services.submit(TaskSpec("first", "first", body=f"wait {release}"))
    fleet.services.submit(TaskSpec("second", "second", body="hang"))
    worker = fleet.worker("wa")
    fleet.agent("first")

    paused = fleet.b.run("workers", "pause", "wa")
    assert (paused.returncode, paused.stderr) == (0, ""), paused.stderr
    fleet.wait_for(ev.WorkerPaused, "the worker to pause")
    assert fleet.services.worker("wa").state == "paused"
    # Paused means the running task finishes and nothing new is claimed.
    release.touch()
    wait_until(lambda: fleet.services.task("first").state == "completed", "first to complete",
               SOON)
    assert fleet.services.worker("wa").state == "paused"
    assert fleet.services.task("second").state == "queued"

    resumed = fleet.b.run("workers", "resume", "wa")
    assert resumed.returncode == 0, resumed.stderr
    fleet.wait_for(ev.WorkerResumed, "the worker to resume")
    agent = fleet.agent("second")

    stopped = fleet.b.run("workers", "stop", "wa")
    assert stopped.returncode == 0, stopped.stderr
    assert worker.wait(SOON) == 0, fleet.a.output(worker)
    wait_until(lambda: gone(*agent), "the agent to be stopped", SOON)
    assert fleet.services.worker("wa").state == "stopped"
    (requeued, _), = fleet.events(ev.TaskRequeued)
    assert (requeued.task_id, requeued.reason) == ("second", RequeueReason.WORKER_STOPPED)
    assert fleet.services.task("second").state == "queued"
    (stop, _), = fleet.events(ev.WorkerStopped)
    assert stop.reason == "stop requested"

    # The requests were made on host-b, the worker acted on host-a, and nobody signalled.
    for request in (ev.WorkerPauseRequested, ev.WorkerResumeRequested, ev.WorkerStopRequested):
        assert fleet.hosts(request) == {"host-b"}
    for fact in (ev.WorkerPaused, ev.WorkerResumed, ev.WorkerStopped, ev.TaskRequeued):
        assert fleet.hosts(fact) == {"host-a"}
    assert fleet.events(ev.WorkerSignalled) == []
    assert "received SIG" not in fleet.a.output(worker)


def _breach(fleet: Fleet, watchdog_host: Host) -> tuple[subprocess.Popen[bytes], tuple[int, int],
                                                        subprocess.CompletedProcess[str]]:
    """A worker on host-a running a hanging agent; spend over the rate limit recorded on
    host-b; then one evaluation of the budget watchdog on ``watchdog_host``."""
    fleet.services.submit(TaskSpec("long", "long", body="hang"))
    worker = fleet.worker("wa")
    agent = fleet.agent("long")
    spent = fleet.b.run("spend", "record", "--usd", "5", "--worker", "wa", "--task", "long")
    assert spent.returncode == 0, spent.stderr
    once = watchdog_host.run("budget-watchdog", "--once")
    assert once.returncode == 1, once.stdout + once.stderr  # a limit is reached
    return worker, agent, once


def test_the_watchdog_stops_a_worker_on_another_host_through_the_log(fleet: Fleet) -> None:
    worker, agent, _ = _breach(fleet, fleet.b)
    assert fleet.hosts(ev.KillSwitchActivated) == {"host-b"}
    assert worker.wait(SOON) == 0, fleet.a.output(worker)
    wait_until(lambda: gone(*agent), "the agent to be stopped", SOON)
    # The worker's pid is a live process on this machine, but it registered on host-a.
    assert fleet.events(ev.WorkerSignalled) == []
    assert "received SIG" not in fleet.a.output(worker)
    assert fleet.hosts(ev.WorkerPauseRequested) == {"host-b"}
    assert fleet.hosts(ev.WorkerStopRequested) == {"host-b"}
    # Both requests commit at once: the worker acts on the stop (it may pause on the way).
    assert fleet.hosts(ev.WorkerPaused) <= {"host-a"}
    (stop, host), = fleet.events(ev.WorkerStopped)
    assert (stop.reason, host) == ("stop requested", "host-a")
    assert fleet.services.worker("wa").state == "stopped"
    (requeued, _), = fleet.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.KILL_SWITCH  # a stop: no retry spent
    assert fleet.services.task("long").state == "queued"  # the kill switch keeps it there


def test_the_watchdog_signals_a_worker_on_its_own_host(fleet: Fleet) -> None:
    worker, agent, _ = _breach(fleet, fleet.a)
    assert worker.wait(SOON) == 0, fleet.a.output(worker)
    wait_until(lambda: gone(*agent), "the agent to be stopped", SOON)
    signalled = fleet.events(ev.WorkerSignalled)
    assert {(e.signal, e.target) for e, _ in signalled} >= {("SIGUSR1", "worker"),
                                                            ("SIGTERM", "worker")}
    assert {e.pid for e, _ in signalled if e.target == "worker"} == {worker.pid}
    assert {host for _, host in signalled} == {"host-a"}
    assert "received SIGUSR1" in fleet.a.output(worker)
    assert fleet.events(ev.WorkerStopRequested) == []  # local workers get signals instead
    (stop, _), = fleet.events(ev.WorkerStopped)
    assert stop.reason == "SIGTERM"


def test_an_idle_worker_wakes_at_once_for_a_submit_from_another_host(fleet: Fleet) -> None:
    """An idle worker sleeps on its doorbell (LISTEN on PostgreSQL) and looks on its own only
    once a minute here: a task submitted on another host is claimed at once, and still so
    after the server ended the sessions that listen (made anew; every doorbell woke once)."""
    # Its look at the queue and its heartbeat (a third of the lease) once a minute only.
    worker = fleet.a.start("worker", "--id", "wa", "--exec", EXEC,
                           env={"POLL_INTERVAL": "60", "TRI24ES_LEASE_SECONDS": "180"})
    wait_until(lambda: fleet.events(ev.WorkerStarted), "the worker to register", SOON)
    store = fleet.services.store
    for n, end_sessions in enumerate([False, True, False]):
        time.sleep(1.0)  # idle, asleep
        if end_sessions and isinstance(store, PostgresStore):
            with closing(psycopg.connect(store.url, autocommit=True)) as db:
                ended = db.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE query IN (%s, %s)",
                    (store.queries.listen.decode(), store.queries.listen_bells.decode()),
                ).fetchone()
            assert ended is not None
            assert ended[0] >= 1  # the worker's doorbell listened
            time.sleep(1.0)
        submitted = fleet.b.run("submit", f"task {n}", "--id", f"t{n}")
        assert submitted.returncode == 0, submitted.stderr
        wait_until(lambda: fleet.services.task(f"t{n}").state == "completed",  # noqa: B023
                   f"t{n} to complete", SOON)
        times = {r.type: r.recorded_at for r in store.read_all(types=["TaskSubmitted",
                                                                     "TaskClaimed"])
                 if orjson.loads(r.data)["task_id"] == f"t{n}"}
        assert times["TaskClaimed"] - times["TaskSubmitted"] < 2_000_000, (n, times)
    assert worker.poll() is None, fleet.a.output(worker)
