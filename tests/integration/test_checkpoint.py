"""Checkpoints off the commit path (eventlog.checkpoint), on real files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from eventlog import checkpoint, open_store
from eventlog.sqlite import PAGE_SIZE
from eventlog.testing import event
from tests.conftest import wait_until

THREAD = "eventlog-checkpoint"


def checkpoint_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == THREAD and t.is_alive())


def test_commits_reach_the_database_file_while_the_store_stays_open(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = open_store(str(db))
    try:
        size_before = db.stat().st_size
        for i in range(1000):
            store.append(f"s-{i}", [event("Happened", i)], 0)
        # SQLite's own autocheckpoint is off: only the thread copies the WAL into the file.
        wait_until(lambda: db.stat().st_size > size_before + 20 * PAGE_SIZE,
                   "the commits to reach the database file", timeout=5.0, every=0.01)
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # raw default
        assert store.verify() == 1000
    finally:
        store.close()


def test_new_files_get_small_pages_and_old_files_keep_theirs(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    open_store(str(new)).close()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as raw:  # made by an earlier version: 4 KB pages, WAL
        raw.execute("PRAGMA page_size = 4096")
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("CREATE TABLE other (x)")
    store = open_store(str(old))
    store.append("s", [event("Happened")], 0)
    store.close()
    for path, size in ((new, PAGE_SIZE), (old, 4096)):
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA page_size").fetchone()[0] == size


def test_the_wal_stays_bounded_under_nonstop_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Passive checkpoints that overlap commits never catch up, and the WAL starts over only
    # when one has: without the inline catch-up, 20,000 appends grow it to ~120 MB.
    monkeypatch.setattr(checkpoint, "OVERDUE_FRAMES", 1000)
    db = tmp_path / "log.db"
    store = open_store(str(db))
    try:
        for i in range(20_000):
            store.append(f"s-{i}", [event("Happened")], 0)
        wal = Path(f"{db}-wal").stat().st_size
        assert wal < 40_000_000, f"the WAL grew to {wal:,} bytes"
    finally:
        store.close()


def test_close_ends_the_thread_and_a_store_that_never_writes_starts_none(
    tmp_path: Path,
) -> None:
    before = checkpoint_threads()
    reader = open_store(str(tmp_path / "log.db"))
    assert reader.read_stream("s") == []
    assert checkpoint_threads() == before
    writer = open_store(str(tmp_path / "log.db"))
    writer.append("s", [event("Happened")], 0)
    assert checkpoint_threads() == before + 1
    writer.close()
    reader.close()
    assert checkpoint_threads() == before


def test_close_ends_the_thread_whenever_it_comes(tmp_path: Path) -> None:
    # A close that lands as the thread wakes from its pause must not be lost (the thread
    # would wait for a nudge forever, and close with it).
    for i in range(60):
        store = open_store(str(tmp_path / "log.db"))
        store.append(f"s-{i}", [event("Happened")], 0)
        time.sleep(checkpoint.PACE * (0.9 + 0.2 * (i % 7) / 6))
        closing = threading.Thread(target=store.close)
        closing.start()
        closing.join(timeout=5)
        assert not closing.is_alive(), f"close hung (round {i})"


def test_a_reader_starts_no_checkpoints(tmp_path: Path) -> None:
    """Snapshots add nothing to the WAL: a process that only reads (status, top, an idle
    worker's look at the queue) starts no checkpoint thread: copying the WAL that writers
    left is their checkpointers' work, not a reader's."""
    db = tmp_path / "log.db"
    with open_store(str(db)) as writer:
        writer.append("s", [event("Happened")], 0)
    before = checkpoint_threads()  # other tests' stores in this process, if any
    with open_store(str(db)) as reader:
        for _ in range(3):
            with reader.snapshot():
                pass
            assert reader.read_all()
        assert checkpoint_threads() == before
        reader.append("s", [event("Happened")], 1)  # a write nudges one, as before
        assert checkpoint_threads() == before + 1
