"""Storage faults on real files and real processes: a read-only database, a full disk, and a
database locked by another process. Each must fail with one clear error, write nothing half,
and work again once the fault clears.

The tests run as root, for whom file modes do not stop writes: the read-only child drops
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set (prctl), so it stays uid 0 but
obeys the file's mode bits like any other user.
"""

from __future__ import annotations

import ctypes
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from eventlog import NO_STREAM, NewEvent, open_store
from tests.e2e.conftest import CLI, clean_env
from tri24es.projections import upkeep
from tri24es.services import Services

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
AGENT = f"{sys.executable} -c \"import sys; sys.stdin.read()\""


def drop_file_capabilities() -> None:
    """preexec_fn: a root child that obeys file permissions (no DAC override)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def cli(root: Path, *args: str, env: dict[str, str] | None = None,
        **kwargs: object) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        [*CLI, *args], cwd=root, env=clean_env(root) | (env or {}), capture_output=True,
        text=True, timeout=60, check=False, **kwargs)
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    init = cli(root, "init")
    assert init.returncode == 0, init.stderr
    return root


def db_of(root: Path) -> Path:
    return root / "state" / "tri24es.db"


def state_files(root: Path) -> dict[str, bytes]:
    state = root / "state"
    return {str(p.relative_to(state)): p.read_bytes()
            for p in sorted(state.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("tri24es: error: "), lines[0]
    return lines[0]


# --- read-only database -----------------------------------------------------------------


def can_drop_capabilities() -> bool:
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=drop_file_capabilities,
                           check=False)
    return probe.returncode == 0


@pytest.mark.chaos
def test_a_read_only_database_is_read_and_a_write_fails_with_one_line_and_recovers(
    root: Path,
) -> None:
    if not can_drop_capabilities():
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    assert cli(root, "submit", "before the fault", "--id", "before").returncode == 0
    state = root / "state"
    # Checkpoint the WAL into the file: the read-only copy is then the whole database.
    with open_store(str(db_of(root))) as store:
        head = store.head()
    for path in state.iterdir():
        path.chmod(0o444)
    state.chmod(0o555)
    before = state_files(root)
    try:
        line = one_error_line(cli(root, "submit", "during the fault", "--id", "during",
                                  preexec_fn=drop_file_capabilities))
        assert "readonly" in line, line
        assert str(db_of(root)) in line, line
        # Reading still works: an auditor may open a read-only copy.
        read = cli(root, "events", preexec_fn=drop_file_capabilities)
        assert read.returncode == 0, read.stderr
        assert "task-before" in read.stdout
        # The library's own error type on a write: StoreUnavailable, not a bare sqlite3 error.
        code = textwrap.dedent("""
            import sys
            from eventlog import NewEvent, StoreUnavailable, open_store
            with open_store(sys.argv[1]) as store:
                try:
                    store.append("s", [NewEvent("T", b"{}")])
                except StoreUnavailable as e:
                    print(type(e).__name__, e)
                else:
                    print("written")
        """)
        probe = subprocess.run([sys.executable, "-c", code, str(db_of(root))],
                               preexec_fn=drop_file_capabilities, capture_output=True,
                               text=True, timeout=60, check=False)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.startswith("StoreUnavailable "), probe.stdout
        assert state_files(root) == before  # nothing written, not even a -wal or -shm
    finally:
        state.chmod(0o700)
        for path in state.iterdir():
            path.chmod(0o600)
    # The fault cleared: the same command works and the log is whole.
    assert cli(root, "submit", "after the fault", "--id", "during").returncode == 0
    verify = cli(root, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    with open_store(str(db_of(root))) as store:
        assert store.verify() == store.head() == head + 1
        assert upkeep.verify(store) == []
        assert [e.stream for e in store.read_all()][-1] == "task-during"


# --- disk full --------------------------------------------------------------------------

FILLER = """
    import os, resource, signal, sys
    from eventlog import NO_STREAM, EventLogError, NewEvent, open_store

    db, batch = sys.argv[1], int(sys.argv[2])
    store = open_store(db)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    limit = 2 * 1024 * 1024 + sum(os.path.getsize(db + s) for s in ("", "-wal")
                                  if os.path.exists(db + s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    payload = b'{"pad":"' + b"x" * 1000 + b'"}'
    for n in range(10**6):
        try:
            store.append(f"full-{n}", [NewEvent("Bulk", payload) for _ in range(batch)],
                         NO_STREAM)
        except EventLogError as e:
            print(n, type(e).__name__, e, flush=True)
            break
    # The store is still usable for reads in this process.
    print(store.head(), flush=True)
"""


@pytest.mark.chaos
def test_a_full_disk_fails_cleanly_keeps_whole_batches_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    batch = 100
    with open_store(str(db)) as store:
        store.append("seed", [NewEvent("Seed", b"{}")], NO_STREAM)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(FILLER), str(db), str(batch)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    assert "Traceback" not in child.stderr
    failed, head_seen = child.stdout.splitlines()
    n, kind, message = failed.split(" ", 2)
    assert int(n) >= 1, failed  # some batches fitted before the disk filled
    assert kind == "StoreFull", failed  # a StoreUnavailable that may clear: processes retry
    assert "full" in message, failed
    assert str(db) in message, failed
    with open_store(str(db)) as store:
        assert store.verify() == store.head() == int(head_seen)
        sizes = Counter(e.stream for e in store.read_all())
        assert sizes.pop("seed") == 1
        assert set(sizes.values()) == {batch}, "a partial batch was committed"
        assert len(sizes) == int(n)
        # The fault cleared (no limit in this process): appends go on after it.
        store.append(f"full-{n}", [NewEvent("Bulk", b"{}") for _ in range(batch)], NO_STREAM)
        assert store.verify() == store.head() == int(head_seen) + batch


# --- database locked by another process -------------------------------------------------

LOCKER = """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("ROLLBACK")
    db.close()
"""


class Locker:
    """Another process holding the write lock until ``release``."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOCKER), str(db)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "locked\n"

    def release(self) -> None:
        self.proc.communicate("\n", timeout=30)  # also closes the pipes
        assert self.proc.returncode == 0


@pytest.mark.chaos
def test_a_locked_database_refuses_with_one_locked_line_then_works(root: Path) -> None:
    with open_store(str(db_of(root))) as store:
        head = store.head()
    locker = Locker(db_of(root))
    try:
        started = time.monotonic()
        result = cli(root, "submit", "while locked", "--id", "locked",
                     env={"TRI24ES_BUSY_TIMEOUT": "0.3"})
        line = one_error_line(result)
        assert "locked" in line, line
        assert "0.3 s" in line, line
        assert time.monotonic() - started < 20
        raw = sqlite3.connect(db_of(root))  # nothing was written (a raw WAL reader)
        try:
            assert (raw.execute("SELECT max(position) FROM events").fetchone()[0] or 0) == head
        finally:
            raw.close()
    finally:
        locker.release()
    result = cli(root, "submit", "while locked", "--id", "locked",
                 env={"TRI24ES_BUSY_TIMEOUT": "0.3"})
    assert result.returncode == 0, result.stderr
    with open_store(str(db_of(root))) as store:
        assert store.verify() == store.head() == head + 1
        assert Services(store).task("locked").state == "queued"


@pytest.mark.chaos
def test_a_worker_outlasts_a_lock_shorter_than_its_busy_timeout(root: Path) -> None:
    tasks = [f"t{n}" for n in range(3)]
    for task_id in tasks:
        assert cli(root, "submit", f"task {task_id}", "--id", task_id).returncode == 0
    locker = Locker(db_of(root))
    (root / "logs").mkdir(exist_ok=True)
    try:
        worker = subprocess.Popen(
            [*CLI, "worker", "--id", "w1", "--exec", AGENT, "--exit-when-idle"], cwd=root,
            env=clean_env(root) | {"TRI24ES_BUSY_TIMEOUT": "10"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        # The fault: the lock is held for a second while the worker starts and waits on it.
        time.sleep(1.0)
        assert worker.poll() is None, worker.communicate()
    finally:
        locker.release()
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, (out, err)
    with open_store(str(db_of(root))) as store:
        store.verify()
        services = Services(store)
        assert [services.task(t).state for t in tasks] == ["completed"] * 3
        assert upkeep.verify(store) == []


# --- disk full in the middle of a worker's claims and completions ------------------------

CYCLER = """
    import json, os, resource, signal, sys
    from eventlog import EventLogError, open_store
    from tri24es.services import Services, TaskSpec

    db, room = sys.argv[1], int(sys.argv[2])
    store = open_store(db)
    services = Services(store)
    services.start_worker("w", pid=os.getpid(), pid_start_time=1, host="here")
    services.submit(TaskSpec("t0", "task 0"))
    claim = services.claim("w")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    limit = room + sum(os.path.getsize(db + s) for s in ("", "-wal")
                             if os.path.exists(db + s))
    # The soft limit only: the process lifts it itself once the disk has filled.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    failed, n = None, 0
    while n < (failed or 10**6) + 20:  # on 20 cycles after the fault cleared
        n += 1
        try:
            # Every third task waits for the one before it: its completion unblocks it (the
            # claim then queries the queue anew instead of the rows read ahead).
            services.submit(TaskSpec(f"t{n}", f"task {n}", body="x" * 200,  # once
                                     after=(f"t{n - 1}",) if n % 3 == 0 else ()))
            claim = services.complete(claim.task_id, "w", claim.attempt, claim_next=True)
        except EventLogError as e:
            if failed is not None:
                raise
            print(json.dumps([n, type(e).__name__]), flush=True)
            failed, n = n, n - 1  # the same cycle again, in this process, on a disk with room
            resource.setrlimit(resource.RLIMIT_FSIZE, (-1, -1))
    print(json.dumps(claim.task_id), flush=True)
"""


@pytest.mark.chaos
@pytest.mark.parametrize("room", [20_000, 40_000, 512 * 1024])  # which commit fails moves
def test_a_full_disk_between_a_completion_and_its_claim_leaves_each_task_done_once(
    root: Path, room: int
) -> None:
    """A completion claims the next task in its own transaction (SQLite's checked INSERTs,
    refused by a NOT NULL column left NULL): the disk filling at any of its statements or
    its commit leaves the completion and the claim both or neither, the log whole and the
    views equal to a replay of it."""
    db = db_of(root)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CYCLER), str(db), str(room)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    assert "Traceback" not in child.stderr
    failure, holding = child.stdout.splitlines()
    n, kind = json.loads(failure)
    assert kind == "StoreFull", failure
    ok = [cli(root, "audit", "verify"), cli(root, "replay", "--verify")]
    assert [r.returncode for r in ok] == [0, 0], [(r.stdout, r.stderr) for r in ok]
    with open_store(str(db)) as store:
        assert upkeep.verify(store) == []
        services = Services(store)
        events = [(e.type, json.loads(e.data)) for e in store.read_all()]
        done = Counter(data["task_id"] for kind, data in events if kind == "TaskCompleted")
        claims = Counter((data["task_id"], data["attempt"])
                         for kind, data in events if kind == "TaskClaimed")
        assert set(done.values()) == {1}
        assert set(claims.values()) == {1}
        tasks = [f"t{k}" for k in range(n + 20)]
        assert sorted(done) == sorted(tasks)
        assert {task_id for task_id, _ in claims} == {*tasks, json.loads(holding)}
        assert services.task(json.loads(holding)).state == "running"
