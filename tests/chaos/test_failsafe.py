"""Fail-safe, tried as an operator would break it: processes, locks and connections fail, and
the kill switch and exactly-once must hold anyway (issue: fail-safe).

- No process of an attempt outlives it: an agent whose child and grandchild ignore SIGTERM
  (the grandchild leaves the session) loses its whole tree when its worker is SIGKILLed or
  stalls (SIGSTOP) past its lease, and the next attempt never runs beside the last.
- The store replaced or deleted under a running worker stops it, its agent first.
- Long-running processes ride out a lock held past the busy timeout (SQLite) and terminated
  sessions (PostgreSQL), and work on afterwards.
- The kill switch is enforced by the workers from the log: the watchdog SIGKILLed the instant
  it activates the switch still leaves no agent running.
- SIGTERM is acted on promptly under a flood of output; error text is capped; a full disk
  under an agent's log sends its task back to the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from eventlog import open_store
from tests.conftest import with_schema
from tests.e2e.conftest import CLI, clean_env
from tests.e2e.test_worker import EXEC, wait_until
from tri24es import events as ev
from tri24es.names import RequeueReason
from tri24es.procinfo import is_same_process, start_time
from tri24es.services import NotFound, Services, TaskSpec
from tri24es.timeutil import from_us, now_us

E = TypeVar("E", bound=ev.Event)

LEASE = 3.0
GRACE = min(5.0, LEASE * 0.1)  # the worker's grace at this lease (runtime/worker.py)
FAST = {"TRI24ES_LEASE_SECONDS": str(LEASE), "POLL_INTERVAL": "0.5",
        "BUDGET_CHECK_INTERVAL": "0.5", "BUDGET_TIMEZONE": "UTC"}

pytestmark = pytest.mark.chaos


class Site:
    """A project folder and its store (a SQLite file, or a PostgreSQL schema whose sessions
    carry an application name of their own), and the processes started on it."""

    def __init__(self, root: Path, url: str, app: str | None = None) -> None:
        self.root, self.url, self.app = root, url, app
        self.procs: dict[subprocess.Popen[bytes], Path] = {}
        root.mkdir(parents=True, exist_ok=True)
        init = self.run("init")
        assert init.returncode == 0, init.stderr
        self.services = Services(open_store(url), actor="test")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_env(self.root) | FAST | {"TRI24ES_DB": self.url} | (extra or {})

    def run(self, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=self.root, env=self.env(env),
                              capture_output=True, text=True, timeout=120, check=False)

    def start(self, *args: str, env: dict[str, str] | None = None,
              preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
        path = self.root / f"{args[0]}-{len(self.procs)}.out"
        with open(path, "wb") as out:
            proc = subprocess.Popen([*CLI, *args], cwd=self.root, env=self.env(env),
                                    stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec)
        self.procs[proc] = path
        return proc

    def worker(self, *args: str, env: dict[str, str] | None = None,
               preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
        return self.start("worker", *args, "--exec", EXEC, env=env, preexec=preexec)

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.procs[proc].read_text(errors="replace")

    def exit_code(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running:\n{self.output(proc)}") from None

    def submit(self, task_id: str, body: str, **fields: object) -> None:
        self.services.submit(TaskSpec(task_id, f"task {task_id}", body=body, **fields))  # type: ignore[arg-type]

    def worker_state(self, worker_id: str) -> str | None:
        try:
            return self.services.worker(worker_id).state
        except NotFound:
            return None

    def task_state(self, task_id: str) -> str | None:
        try:
            return self.services.task(task_id).state
        except NotFound:
            return None

    def events(self, kind: type[E]) -> list[E]:
        found = [ev.decode_event(r) for r in self.services.store.read_all(types=[kind.topic])]
        return [e for e in found if isinstance(e, kind)]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
        self.services.store.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "fleet", str(tmp_path / "fleet" / "state" / "tri24es.db"))
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "sqlite":
        s = Site(tmp_path / "fleet", str(tmp_path / "fleet" / "state" / "tri24es.db"))
    else:
        dsn: str = request.getfixturevalue("pg_dsn")
        schema: str = request.getfixturevalue("new_schema")()
        app = f"failsafe_{schema}"
        s = Site(tmp_path / "fleet", f"{with_schema(dsn, schema)}&application_name={app}", app)
    yield s
    s.close()


# --- the processes of an attempt ---------------------------------------------------------


def pulses(path: Path) -> dict[str, dict[int, float]]:
    """attempt -> {pid: the last time it pulsed} (from the ``tree`` agent's pulse file)."""
    found: dict[str, dict[int, float]] = defaultdict(dict)
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                attempt, pid, at = parts
                found[attempt][int(pid)] = max(float(at), found[attempt].get(int(pid), 0.0))
    return found


def first_pulse(path: Path, attempt: str) -> float:
    return min(float(line.split()[2]) for line in path.read_text().splitlines()
               if line.split()[0] == attempt)


def still_pulsing(pid: int) -> bool:
    """Whether ``pid`` is still a process of a ``tree`` agent (by its command line)."""
    try:
        return b"scripted.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pids: dict[int, int]) -> list[int]:
    """Which of ``pids`` (pid -> start time) still run."""
    return [pid for pid, started in pids.items() if is_same_process(pid, started)]


def tree_of(path: Path, attempt: str) -> dict[int, int]:
    """The three processes of a ``tree`` agent's attempt, with their start times."""
    wait_until(lambda: len(pulses(path)[attempt]) == 3, f"attempt {attempt}'s three processes")
    found = {}
    for pid in pulses(path)[attempt]:
        with contextlib.suppress(ProcessLookupError):
            found[pid] = start_time(pid)
    return found


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_nothing_of_a_lost_attempt_outlives_it_and_attempts_never_overlap(
        site: Site, tmp_path: Path, fault: str) -> None:
    beats = tmp_path / "pulses"
    site.submit("tree", f"tree {beats}\nhang-on 1\nsay the second attempt is done")
    first = site.worker("--id", "w-first")
    first_tree = tree_of(beats, "1")
    os.kill(first.pid, getattr(signal, fault))
    # SIGKILL: the keeper sees its worker gone at once; SIGSTOP: no beat for most of a lease.
    wait_until(lambda: not alive(first_tree), "every process of the first attempt gone")
    second = site.worker("--id", "w-second", "--max-tasks", "1")
    assert site.exit_code(second) == 0, site.output(second)
    [done] = site.events(ev.TaskCompleted)
    assert (done.task_id, done.attempt, done.worker) == ("tree", 2, "w-second")
    wait_until(lambda: not any(still_pulsing(pid) for pid in pulses(beats)["2"]),
               "the second attempt's leftovers ended with it")
    # At no instant did two attempts run: the first's last sign of life came before the
    # second's first.
    assert max(pulses(beats)["1"].values()) < first_pulse(beats, "2")
    if fault == "SIGSTOP":
        first.send_signal(signal.SIGCONT)
        try:
            wait_until(lambda: "lost" in site.output(first), "the stalled worker to notice")
        except AssertionError as e:
            raise AssertionError(f"{e}; its output: {site.output(first)}") from None
        with contextlib.suppress(ProcessLookupError):  # it may be exiting already: declared
            first.send_signal(signal.SIGTERM)          # lost by the other while it stalled
        assert site.exit_code(first) in (0, 1, -signal.SIGTERM), site.output(first)
        assert "completed tree" not in site.output(first)
        assert [e.worker for e in site.events(ev.TaskCompleted)] == ["w-second"]
    requeued = site.events(ev.TaskRequeued)
    assert [r.reason for r in requeued] == [RequeueReason.LEASE_EXPIRED]


def test_the_next_attempt_on_this_host_ends_what_is_left_of_the_last(
        site: Site, tmp_path: Path) -> None:
    """A keeper killed with its worker (both SIGKILLed): its agent's tree is orphaned. The
    worker that takes the task next on this host ends it before starting the next attempt."""
    beats = tmp_path / "pulses"
    site.submit("tree", f"tree {beats}\nhang-on 1\nsay done")
    first = site.worker("--id", "w-first")
    first_tree = tree_of(beats, "1")
    [started] = site.events(ev.TaskStarted)
    os.killpg(started.pgid, signal.SIGSTOP)  # the keeper must not clean up: frozen, then...
    first.kill()
    first.wait()
    os.kill(started.pid, signal.SIGKILL)  # ...killed; its tree is left, stopped
    os.killpg(started.pgid, signal.SIGCONT)
    assert alive(first_tree)
    second = site.worker("--id", "w-second", "--max-tasks", "1")
    assert site.exit_code(second) == 0, site.output(second)
    assert not alive(first_tree)
    assert "ended what was left of tree attempt 1" in site.output(second)
    assert max(pulses(beats)["1"].values()) < first_pulse(beats, "2")


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_a_store_replaced_under_a_running_worker_stops_it_and_its_agent(
        site: Site, tmp_path: Path, how: str) -> None:
    beats = tmp_path / "pulses"
    site.submit("tree", f"tree {beats}\nhang")
    worker = site.worker("--id", "w-replaced")
    tree = tree_of(beats, "1")
    db = Path(site.url)
    if how == "replaced":  # `mv backup.db state/tri24es.db`
        backup = tmp_path / "backup.db"
        with sqlite3.connect(db) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        shutil.move(backup, db)
    else:
        db.unlink()
    assert site.exit_code(worker) == 1, site.output(worker)
    errors = [line for line in site.output(worker).splitlines() if "tri24es: error:" in line]
    assert len(errors) == 1, site.output(worker)
    assert "deleted or replaced" in errors[0]
    wait_until(lambda: not alive(tree), "the agent's tree ended with the worker")


# --- store faults that heal --------------------------------------------------------------


def terminate_sessions(site: Site) -> int:
    """``pg_terminate_backend`` on every session of the site's processes."""
    import psycopg

    with psycopg.connect(site.url.split("?")[0], autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()", (site.app,)).fetchall()
    return len(rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_long_running_processes_ride_out_store_faults_and_work_on(
        any_site: Site, tmp_path: Path) -> None:
    site = any_site
    limits = {"BUDGET_RATE_LIMIT": "100", "BUDGET_DAILY_LIMIT": "1000",
              "TRI24ES_BUSY_TIMEOUT": "0.3"}
    port = free_port()
    worker = site.worker("--id", "w-steady", env=limits)
    watchdog = site.start("budget-watchdog", env=limits)
    watcher = site.start("queue-watcher", env=limits)
    follower = site.start("events", "--follow", "--type", "TaskCompleted", env=limits)
    metrics = site.start("metrics", "--port", str(port), env=limits)
    wait_until(lambda: site.worker_state("w-steady") == "idle", "the worker idle")
    wait_until(lambda: "running" in site.output(watchdog), "the watchdog running")
    wait_until(lambda: "serving metrics" in site.output(metrics), "metrics serving")
    # The fault comes once the watcher is in its watch loop, so that this test is about the
    # loop (a daemon still starting rides it out too: see the test of a fleet started before
    # its store is reachable): its verdict on an empty file is out.
    (site.root / "tasks" / "queue" / "probe.md").write_bytes(b"")
    wait_until((site.root / "tasks" / "rejected" / "probe.md.reason").exists,
               "the watcher watching")
    processes = [worker, watchdog, watcher, follower, metrics]
    spend_file = site.root / "state" / "budget" / "spend.jsonl"
    spend_file.parent.mkdir(parents=True, exist_ok=True)
    if site.app is None:
        # Writers queue on the lock for 0.3 s at a time; the lock is held 4 s: the worker's
        # heartbeats, the watcher's submission and the watchdog's spend all fail meanwhile.
        locker = subprocess.Popen([sys_python(), "-c", HOLD, site.url, "4"])
        wait_until(lambda: locked(Path(site.url)), "the lock taken")
        (site.root / "tasks" / "queue" / "during.md").write_text("# During\nsay hi\n")
        spend_file.write_text(f'{{"timestamp_epoch": {int(time.time())}, "amount": 25}}\n')
        assert locker.wait(60) == 0
    else:
        terminate_sessions(site)
        (site.root / "tasks" / "queue" / "during.md").write_text("# During\nsay hi\n")
        spend_file.write_text(f'{{"timestamp_epoch": {int(time.time())}, "amount": 25}}\n')
        time.sleep(0.5)  # the fault again, while they reconnect
        terminate_sessions(site)
    # Every process is still there, and does its job once the store is back.
    try:
        wait_until(lambda: site.task_state("during") == "completed",
                   "the file submitted and its task completed", timeout=90)
    except AssertionError as e:
        raise AssertionError(f"{e}: task {site.task_state('during')}; " + "\n".join(
            site.output(p) for p in (worker, watcher))) from None
    wait_until(lambda: [s.source for s in site.events(ev.SpendRecorded)] == ["spend.jsonl"],
               "the watchdog recording the spend file")
    wait_until(lambda: "TaskCompleted" in site.output(follower), "the follower printing")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as scrape:
        assert b"tri24es_spend_usd_total 25.0" in scrape.read()
    assert [p.poll() for p in processes] == [None] * len(processes), [
        site.output(p) for p in processes if p.poll() is not None]
    if site.app is None:
        for proc in (worker, watchdog, watcher):
            out = site.output(proc)
            assert out.count("the store is unavailable") == out.count("the store is back")
        assert "the store is unavailable" in site.output(worker)
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc in (worker, watchdog, watcher, metrics):
        assert site.exit_code(proc) == 0, site.output(proc)


HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
open(sys.argv[1] + ".locked", "w").close()
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
import os; os.unlink(sys.argv[1] + ".locked")
"""


def sys_python() -> str:
    return CLI[0]


def locked(db: Path) -> bool:
    return Path(str(db) + ".locked").exists()


def test_up_rides_out_terminated_sessions_and_keeps_its_fleet(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("new_schema")()
    site = Site(tmp_path / "up", f"{with_schema(dsn, schema)}&application_name=up_{schema}",
                f"up_{schema}")
    try:
        up = site.start("up", "--workers", "1", "--exec", EXEC)
        worker_id = None
        wait_until(lambda: site.services.store.head() > 0 and any(
            w.state == "idle" for w in _workers(site)), "the fleet up")
        worker_id = _workers(site)[0].worker_id
        for _ in range(3):
            terminate_sessions(site)
            time.sleep(0.3)
        site.submit("after", "say after the fault")
        wait_until(lambda: site.task_state("after") == "completed",
                   "a task run after the fault", timeout=90)
        assert up.poll() is None, site.output(up)
        up.send_signal(signal.SIGTERM)
        assert site.exit_code(up) == 0, site.output(up)
        assert worker_id is not None
    finally:
        site.close()


def _workers(site: Site) -> list[object]:
    from tri24es.projections import connection_of, reads

    with site.services.store.snapshot() as tx:
        return list(reads.workers(connection_of(tx)))


# --- the kill switch, enforced by every worker --------------------------------------------


def test_agents_stop_when_the_watchdog_dies_the_instant_it_activates_the_switch(
        site: Site, tmp_path: Path) -> None:
    limits = {"BUDGET_RATE_LIMIT": "100", "BUDGET_DAILY_LIMIT": "5"}
    trees = []
    for n in range(2):
        beats = tmp_path / f"pulses-{n}"
        site.submit(f"t{n}", f"tree {beats}\nhang", max_retries=0)
        site.worker("--id", f"w{n}", env=limits)
        trees.append(tree_of(beats, "1"))
    watchdog = site.start("budget-watchdog", env=limits)
    wait_until(lambda: "running" in site.output(watchdog), "the watchdog running")
    site.services.record_spend(ev.SpendRecorded(amount=Decimal("6"), occurred_at=from_us(now_us())))
    wait_until(lambda: site.events(ev.KillSwitchActivated), "the switch on", timeout=30)
    watchdog.kill()  # before it can signal anyone
    activated_at = time.time()
    wait_until(lambda: not any(alive(t) for t in trees), "every agent tree ended")
    took = time.time() - activated_at
    print(f"agents gone {took:.2f} s after the watchdog was killed (grace {GRACE} s)")
    wait_until(lambda: len(site.events(ev.TaskRequeued)) == 2, "both tasks back in the queue")
    requeued = site.events(ev.TaskRequeued)
    assert sorted(r.task_id for r in requeued) == ["t0", "t1"]
    assert {r.reason for r in requeued} == {RequeueReason.KILL_SWITCH}
    assert not site.events(ev.TaskFailed)  # a stop, not a failure: no retry spent
    assert not site.events(ev.TaskDeadLettered)
    for n in range(2):
        assert site.services.task(f"t{n}").state == "queued"


# --- prompt and bounded ---------------------------------------------------------------------


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def test_sigterm_is_acted_on_promptly_under_a_flood_of_spend_lines(site: Site) -> None:
    """The stop takes effect at once (the agent's tree ended, the task back in the queue);
    the output the agent printed before it is still all parsed for spend before the worker
    exits (not a dollar dropped), which takes as long as it takes."""
    site.submit("flood", "flood 100000\nhang")
    worker = site.worker("--id", "w-flood")
    wait_until(lambda: site.events(ev.SpendRecorded), "spend streaming in")
    [started] = site.events(ev.TaskStarted)
    keeper = start_time(started.pid)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: site.events(ev.TaskRequeued), "the task back in the queue")
    wait_until(lambda: not is_same_process(started.pid, keeper), "the agent's tree ended")
    took = time.monotonic() - sent
    print(f"SIGTERM took effect in {took:.2f} s under a flood of output")
    assert took < 10, took  # under 1 s on a quiet machine; generous for a loaded one
    assert site.exit_code(worker, timeout=100) == 0, site.output(worker)
    # Not a dollar dropped: every line the agent printed before it was stopped is recorded
    # (100,000 lines of $0.0001, combined into a record per turn).
    spent = sum(e.amount for e in site.events(ev.SpendRecorded))
    log = (site.root / "logs" / "tasks" / "flood" / "1.log").read_text()
    # Whole lines: the agent may have died in the middle of one, or after a whole object
    # but before its newline (that last line is read at the end, and counts).
    printed = log.count("}\n") + is_json_object(log.rpartition("\n")[2])
    assert spent == Decimal("0.0001") * printed
    assert 0 < len(site.events(ev.SpendRecorded)) < printed / 100  # not an event per line
    [requeued] = site.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.WORKER_STOPPED


def test_a_failed_attempts_error_text_is_capped(site: Site) -> None:
    site.submit("long", "long-line 100000\nexit 3", max_retries=0)
    worker = site.worker("--id", "w-long", "--exit-when-idle")
    assert site.exit_code(worker) == 0, site.output(worker)
    [failed] = site.events(ev.TaskFailed)
    assert failed.error.startswith("exit 3: xxx")
    assert len(failed.error) <= 2048


def test_a_full_disk_under_an_agents_log_sends_its_task_back(site: Site) -> None:
    """The worker may grow no file past a few MB (RLIMIT_FSIZE, as a full disk would stop
    it); the agent prints more than that. One clear line, the task back in the queue."""
    limit = 6 * 1024 * 1024 + sum(
        p.stat().st_size for p in (site.root / "state").glob("tri24es.db*"))

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    site.submit("loud", "long-line 10000000\nhang")
    worker = site.worker("--id", "w-full", preexec=small_disk)
    wait_until(lambda: site.events(ev.TaskRequeued), "the task back in the queue")
    requeued = site.events(ev.TaskRequeued)[0]
    assert requeued.reason == RequeueReason.STORE_FAULT
    out = site.output(worker)
    assert "cannot write the agent's log" in out
    assert "Traceback" not in out
    assert not site.events(ev.TaskFailed)
    worker.send_signal(signal.SIGTERM)
    site.exit_code(worker)


def test_a_log_that_cannot_be_opened_ends_its_agent_at_once_and_sends_its_task_back(
        site: Site) -> None:
    """The attempt's log is opened once its agent is up (the agent does not need it; its
    output waits in the pipe). One that cannot be opened (here a folder in its place) ends
    the agent at once, at no cost to the task's retries: the next attempt runs."""
    folder = site.root / "logs" / "tasks" / "stuck"
    (folder / "1.log").mkdir(parents=True)
    for part in (site.root / "logs", folder.parent, folder):
        part.chmod(0o700)
    site.submit("stuck", "hang-on 1\nsay done", max_retries=0)
    worker = site.worker("--id", "w-log")
    wait_until(lambda: site.task_state("stuck") == "completed", "the next attempt done")
    [requeued] = site.events(ev.TaskRequeued)
    assert requeued.reason == RequeueReason.STORE_FAULT
    assert not site.events(ev.TaskFailed)
    [first] = [s for s in site.events(ev.TaskStarted) if s.attempt == 1]
    assert first.pid_start_time is not None
    assert not is_same_process(first.pid, first.pid_start_time)  # the keeper ended its tree
    assert "cannot open the agent's log" in site.output(worker)
    assert (folder / "2.log").read_text() == "done\n"
    worker.send_signal(signal.SIGTERM)
    assert site.exit_code(worker) == 0, site.output(worker)


# --- a store that is not there yet when the fleet starts ---------------------------------


@contextlib.contextmanager
def forwarding(port: int, to: tuple[str, int]) -> Iterator[None]:
    """A TCP forwarder from ``127.0.0.1:port`` to ``to``: the PostgreSQL server appears at
    ``port`` for the block (before it, a connection there is refused). Every socket and
    thread it made is closed and joined when the block ends."""
    import threading

    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.1)  # accept() looks at `stop` (a close would not wake it)
    stop = threading.Event()
    opened: list[socket.socket] = []
    pipes: list[threading.Thread] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            opened.append(client)
            try:
                server = socket.create_connection(to)
            except OSError:
                continue
            opened.append(server)
            for a, b in ((client, server), (server, client)):
                thread = threading.Thread(target=pipe, args=(a, b), daemon=True)
                thread.start()
                pipes.append(thread)

    accepting = threading.Thread(target=serve, daemon=True)
    accepting.start()
    try:
        yield
    finally:
        stop.set()
        accepting.join(timeout=10)
        listener.close()
        for s in opened:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in pipes:
            thread.join(timeout=10)


def test_daemons_started_before_their_store_is_reachable_wait_for_it(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A fleet started before its database (a host booting, a server restarting): the
    worker, the queue watcher and the budget watchdog say once that the store is unavailable
    and wait, instead of exiting at their first connection; once it is there they work."""
    from urllib.parse import urlsplit

    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("new_schema")()
    site = Site(tmp_path / "late", with_schema(dsn, schema))  # made through the real server
    real = urlsplit(site.url)
    assert real.hostname is not None
    assert real.port is not None
    port = free_port()
    late = real._replace(netloc=f"{real.username}@127.0.0.1:{port}").geturl()
    env = {"TRI24ES_DB": late}
    try:
        daemons = [site.worker("--id", "w-late", env=env), site.start("queue-watcher", env=env),
                   site.start("budget-watchdog", env=env)]
        for proc in daemons:
            wait_until(lambda p=proc: "unavailable, retrying" in site.output(p),
                       "the store's absence said")
        time.sleep(1)  # a few more tries, refused
        assert [p.poll() for p in daemons] == [None, None, None], [
            site.output(p) for p in daemons]
        with forwarding(port, (real.hostname, real.port)):
            (site.root / "tasks" / "queue" / "late.md").write_text("# Late\nsay hi\n")
            wait_until(lambda: site.task_state("late") == "completed",
                       "the file submitted and its task completed", timeout=90)
            for proc in daemons:
                wait_until(lambda p=proc: "the store is back" in site.output(p),
                           "the store's return said")
                assert site.output(proc).count("unavailable, retrying") == 1, site.output(proc)
    finally:
        site.close()
