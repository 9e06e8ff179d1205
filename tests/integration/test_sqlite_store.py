"""The SQLite backend: the contract, plus what only real files and real processes can show."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

import eventlog
from eventlog import (
    NO_STREAM,
    CorruptLog,
    StoreLocked,
    StoreUnavailable,
    UnsafePath,
    open_store,
    rehash,
)
from eventlog.memory import MemoryStore
from eventlog.sqlite import CURRENT, GUARDS, LEGACY, SQLiteStore
from eventlog.testing import event
from tests.conftest import MILLION_BATCHES, MILLION_PER_BATCH
from tests.integration.test_store_contract import LEGACY_SCHEMA

PROJECT_ROOT = Path(eventlog.__file__).resolve().parent.parent


def python(code: str, *args: object) -> subprocess.Popen[str]:
    """A child Python process running ``code`` with ``args`` in sys.argv[1:]."""
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )


def expect_line(child: subprocess.Popen[str], wanted: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != wanted:
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"child said {line!r} instead of {wanted!r}; stderr:\n{err}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "events.db") as store:
        yield store


@pytest.fixture
def five(store: SQLiteStore) -> SQLiteStore:
    for n in range(5):
        store.append(f"s-{n % 2}", [event(n=n)])
    return store


def raw(store: SQLiteStore) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(store.path, isolation_level=None))


# -- append-only and tamper evidence --------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET data = x'00' WHERE position = 2", "DELETE FROM events WHERE position = 2"],
)
def test_the_database_refuses_update_and_delete(five: SQLiteStore, statement: str) -> None:
    with raw(five) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(statement)
    assert five.verify() == 5


def test_verify_names_a_row_changed_behind_the_store(five: SQLiteStore) -> None:
    with raw(five) as db:
        db.execute("DROP TRIGGER events_are_append_only_update")
        db.execute("UPDATE events SET data = ? WHERE position = 3", (b'{"n":999}',))
    with pytest.raises(CorruptLog, match="position 3: changed") as raised:
        five.verify()
    assert raised.value.position == 3


def test_a_row_rewritten_with_its_own_hash_is_caught_at_the_next_row(five: SQLiteStore) -> None:
    second, third = list(five.read_all())[1:3]
    forged = third._replace(data=b'{"n":999}')
    with raw(five) as db:
        db.execute("DROP TRIGGER events_are_append_only_update")
        db.execute(
            "UPDATE events SET data = ?, hash = ? WHERE position = 3",
            (forged.data, rehash(second.hash, forged)),
        )
    with pytest.raises(CorruptLog) as raised:
        five.verify()
    assert raised.value.position == 4


def test_verify_names_a_row_deleted_behind_the_store(five: SQLiteStore) -> None:
    with raw(five) as db:
        db.execute("DROP TRIGGER events_are_append_only_delete")
        db.execute("DELETE FROM events WHERE position = 3")
    with pytest.raises(CorruptLog, match="position 3: missing") as raised:
        five.verify()
    assert raised.value.position == 3


# -- files on disk --------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_store_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.db"
    with SQLiteStore(path) as store:
        store.append("s", [event()])
        assert mode(path.parent) == 0o700
        for name in ("x.db", "x.db-wal", "x.db-shm"):
            assert mode(path.parent / name) == 0o600, name


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symlinked_database_path_is_refused(tmp_path: Path, target_exists: bool) -> None:
    target, link = tmp_path / "real.db", tmp_path / "link.db"
    if target_exists:
        SQLiteStore(target).close()
    link.symlink_to(target)
    with pytest.raises(UnsafePath, match=r"refusing to open .*link\.db: it is a symbolic link"):
        SQLiteStore(link)
    with pytest.raises(StoreUnavailable, match="symbolic link"):
        open_store(f"sqlite:///{link}")
    assert target.exists() is target_exists


def test_a_later_writer_with_a_slower_clock_keeps_time_monotonic(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteStore(path, clock=lambda: 10_000_000) as ahead:
        ahead.append("s", [event()])
    with SQLiteStore(path, clock=lambda: 4_000_000) as behind:
        (recorded,) = behind.append("s", [event()])
        assert recorded.recorded_at == 10_000_000
        assert behind.verify() == 2


# -- other processes ------------------------------------------------------------------------

HOLD_WRITE_LOCK = """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("ROLLBACK")
"""


def test_a_locked_database_raises_store_locked_then_recovers(tmp_path: Path) -> None:
    with (
        SQLiteStore(tmp_path / "events.db", busy_timeout=0.2) as store,
        python(HOLD_WRITE_LOCK, store.path) as holder,
    ):
        expect_line(holder, "locked")
        started = time.monotonic()
        with pytest.raises(StoreLocked, match="locked"):
            store.append("s", [event()])
        assert 0.15 <= time.monotonic() - started < 4  # its 0.2 s, well under the 5 s default
        assert store.head() == 0  # readers are not blocked by a writer (WAL)
        holder.communicate("release\n", timeout=10)
        assert holder.returncode == 0
        assert store.append("s", [event()], NO_STREAM)[0].position == 1


CONTEND = """
    import json, sys
    from eventlog import NewEvent, WrongExpectedVersion, open_store
    path, name, attempts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # "hint": each append gives the stream's origin (SQLite's checked INSERT by origin), now
    # and then a wrong one (a decoy stream's), and every third is a batch of two events.
    hints = sys.argv[4:] == ["hint"]
    store = open_store(path)
    print("ready", flush=True)
    sys.stdin.readline()
    wins = conflicts = written = version = 0
    origin = decoy = None
    lost = True
    for attempt in range(attempts):
        if not hints or lost:  # "hint": its own count, stale until a conflict says so
            newer = store.read_stream("counter", version + 1)
            version = newer[-1].version if newer else version
        if hints and origin is None and version:
            origin = store.read_stream("counter")[0].position
            decoy = store.read_stream("decoy")[0].position
        data = json.dumps({"by": name, "attempt": attempt}).encode()
        batch = [NewEvent("Incremented", data) for _ in range(1 + (hints and attempt % 3 == 0))]
        try:
            with store.transaction() as tx:
                tx.append("counter", batch, version, decoy if attempt % 5 == 4 else origin)
            wins += 1
            written += len(batch)
            version += len(batch)
            lost = False
        except WrongExpectedVersion:
            conflicts += 1
            lost = True
    store.close()
    print(json.dumps({"wins": wins, "conflicts": conflicts, "written": written}), flush=True)
"""


# Each layout checks the version in the INSERT itself (a NOT NULL column left NULL when the
# stream moved on): two processes must still never share a version nor leave a gap, by name
# and by origin (right or wrong), one event or a batch in a savepoint.
@pytest.mark.parametrize(("layout", "mode"), [("current", "name"), ("current", "hint"),
                                              ("legacy", "name"), ("legacy", "hint")])
def test_two_processes_appending_to_one_stream_never_share_a_version(
    tmp_path: Path, layout: str, mode: str
) -> None:
    path, attempts = tmp_path / "events.db", 300
    if layout == "legacy":
        with closing(sqlite3.connect(path)) as db:
            db.executescript(LEGACY_SCHEMA + ";".join(GUARDS.values()) + ";")
    with SQLiteStore(path) as store:
        assert store.statements is (LEGACY if layout == "legacy" else CURRENT)
        store.append("decoy", [event()], NO_STREAM)
    with (python(CONTEND, path, "a", attempts, mode) as a,
          python(CONTEND, path, "b", attempts, mode) as b):
        expect_line(a, "ready")
        expect_line(b, "ready")
        for child in (a, b):
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = {
            name: json.loads(child.communicate(timeout=60)[0])
            for name, child in [("a", a), ("b", b)]
        }
    print(f"concurrent appends: {outcomes}")
    with SQLiteStore(path) as store:
        stored = store.read_stream("counter")
        total = sum(o["written"] for o in outcomes.values())
        assert [e.version for e in stored] == list(range(1, total + 1))
        assert [e.position for e in store.read_all()] == list(range(1, total + 2))
        for name, outcome in outcomes.items():
            assert outcome["wins"] + outcome["conflicts"] == attempts
            assert sum(json.loads(e.data)["by"] == name for e in stored) == outcome["written"]
        assert store.verify() == total + 1


FOLLOW = """
    import sys, time
    from eventlog import open_store
    store = open_store(sys.argv[1])
    store.wait_for_change(store.head(), 0.01)  # starts watching the files
    for _ in range(int(sys.argv[2])):
        head = store.head()
        print("waiting", flush=True)
        woke = store.wait_for_change(head, 5)
        print(woke, time.monotonic(), flush=True)
    store.close()
"""


# With synchronous=FULL the writer syncs the -wal between writing it and making the commit
# visible, so a follower woken by the -wal write alone would look too early.
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_a_commit_wakes_a_follower_in_another_process(tmp_path: Path, synchronous: str) -> None:
    rounds, latencies = 8, []
    with (
        SQLiteStore(tmp_path / "events.db", synchronous=synchronous) as store,
        python(FOLLOW, store.path, rounds) as follower,
    ):
        assert follower.stdout is not None
        for _ in range(rounds):
            expect_line(follower, "waiting")
            with pytest.raises(subprocess.TimeoutExpired):
                follower.wait(0.1)  # still blocked: nothing new yet
            store.append("s", [event()])
            committed_at = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux
            woke, woke_at = follower.stdout.readline().split()
            assert woke == "True"
            latencies.append(float(woke_at) - committed_at)
        assert follower.wait(10) == 0
    print(
        f"cross-process wake-up latency (synchronous={synchronous}): "
        + ", ".join(f"{latency * 1000:.1f}" for latency in latencies)
        + " ms"
    )
    assert max(latencies) < 0.25


# Memory figures of the child itself, from /proc: RssAnon is its heap (what a leak or a
# list of every event would grow); VmHWM its peak RSS, which also counts the database pages
# SQLite reads through mmap. (ru_maxrss would start from the pytest process's peak,
# inherited across fork and exec, and hide any growth below it.)
MEASURE_READ_ALL = """
    import json, sys
    from eventlog import open_store

    def status_kb(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    store = open_store(sys.argv[1])
    head = store.head()
    heap_before, peak_before = status_kb("RssAnon:"), status_kb("VmHWM:")
    heap_peak = heap_before
    count = last = 0
    for event in store.read_all():
        count, last = count + 1, event.position
        if count % 10_000 == 0:
            heap_peak = max(heap_peak, status_kb("RssAnon:"))
    print(json.dumps({
        "head": head, "count": count, "last": last,
        "heap_before_kb": heap_before, "heap_peak_kb": max(heap_peak, status_kb("RssAnon:")),
        "peak_before_kb": peak_before, "peak_after_kb": status_kb("VmHWM:"),
    }))
"""


@pytest.mark.xdist_group("million")  # one test process reads the million-event store
@pytest.mark.timeout(900)  # the first run builds the store: minutes on a loaded machine
@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs /proc to tell heap from mapped pages"
)
def test_read_all_over_a_million_events_stays_in_bounded_memory(
    million_event_store: Path,
) -> None:
    path, batches, per_batch = million_event_store, MILLION_BATCHES, MILLION_PER_BATCH
    with python(MEASURE_READ_ALL, path) as child:
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    kb = json.loads(out)
    heap_growth_mb = (kb["heap_peak_kb"] - kb["heap_before_kb"]) / 1024
    print(
        f"read_all over 1M events: heap {kb['heap_before_kb'] / 1024:.1f} MB, "
        f"+{heap_growth_mb:.1f} MB at most; peak RSS (with mmap'd pages) "
        f"{kb['peak_before_kb'] / 1024:.1f} -> {kb['peak_after_kb'] / 1024:.1f} MB"
    )
    assert kb["head"] == kb["count"] == kb["last"] == batches * per_batch
    assert heap_growth_mb < 60


# -- open_store -----------------------------------------------------------------------------


def test_open_store_understands_sqlite_urls_and_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as relative:
        assert isinstance(relative, SQLiteStore)
        assert relative.path == tmp_path / "rel.db"
    absolute = tmp_path / "abs" / "x.db"
    with open_store(str(absolute)) as bare:
        assert isinstance(bare, SQLiteStore)
        bare.append("s", [event()])
    with open_store(f"sqlite:///{absolute}") as by_url:
        assert isinstance(by_url, SQLiteStore)
        assert by_url.path == absolute
        assert by_url.head() == 1
    assert isinstance(open_store("memory://"), MemoryStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x.db", "unsupported store URL"),
        ("mysql://localhost/events", "unsupported store URL"),
        ("sqlite://x.db", "unsupported store URL"),
        ("sqlite:///", "no database path"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(url: str, message: str) -> None:
    with pytest.raises(StoreUnavailable, match=message):
        open_store(url)
