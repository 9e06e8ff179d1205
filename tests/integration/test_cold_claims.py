"""Claims at a large backlog touch the same few database pages as at a small one: what makes
them as fast on a cold OS page cache (issue #20). Every page a commit changed is written
whole to SQLite's WAL, so the page numbers of the WAL's frames are the pages the cycles
changed (each read first, from the disk when the cache is cold)."""

from __future__ import annotations

import os
import random
import sqlite3
import struct
from pathlib import Path

import eventlog
from tri24es.services import Services, TaskSpec

HEADER, FRAME_HEADER = 32, 24  # the WAL file format (sqlite.org/fileformat2.html#walformat)


def valid_frames(wal: Path) -> list[int]:
    """The page number of each frame of the WAL's current generation (its salts match the
    header's; frames past them are left from before the WAL last started over)."""
    data = wal.read_bytes()
    (page_size,) = struct.unpack_from(">I", data, 8)
    salts = data[16:24]
    pages, offset = [], HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        if data[offset + 8:offset + 16] != salts:
            break
        pages.append(struct.unpack_from(">I", data, offset)[0])
        offset += FRAME_HEADER + page_size
    return pages


def pages_changed(tmp_path: Path, backlog: int, cycles: int) -> int:
    """Distinct pages that ``cycles`` claim+complete cycles change, the way a worker makes
    them, in a store of ``backlog`` tasks with random ids (as people's are: slug-<hex>)."""
    path = tmp_path / f"{backlog}.db"
    ids = random.Random(backlog).sample(range(16**6), backlog)
    store = eventlog.open_store(str(path))
    services = Services(store, actor="w")
    for start in range(0, backlog, 2000):
        services.submit_many([TaskSpec(f"fix-{n:06x}", "t") for n in ids[start:start + 2000]])
    services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="test")
    claim = services.claim("w")
    # A reader holding a snapshot keeps the WAL from starting over while the cycles run.
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM views_version").fetchone()
    wal = Path(f"{path}-wal")
    before = len(valid_frames(wal))
    for n in range(cycles):
        assert claim is not None
        claim = services.complete(claim.task_id, "w", claim.attempt, claim_next=n < cycles - 1)
    written = valid_frames(wal)[before:]
    reader.close()
    store.close()
    return len(set(written))


def test_claims_change_as_many_pages_at_any_backlog(tmp_path: Path) -> None:
    """200 cycles at a 10,000-task backlog change about the pages they change at 300 tasks.
    Each claim and completion appends to its task's stream: indexed by the stream's name,
    each claim changed an index page of its own (~130 pages more at 10,000)."""
    small, large = pages_changed(tmp_path, 300, 200), pages_changed(tmp_path, 10_000, 200)
    assert large <= small + 40, (small, large)


def test_a_task_whose_stream_began_with_a_rejection_runs_as_any(tmp_path: Path) -> None:
    """A task file refused once and fixed later: the stream began at the rejection, not at
    the submission the queue row knows, so the store finds the stream by its name."""
    store = eventlog.open_store(str(tmp_path / "s.db"))
    services = Services(store, actor="w")
    services.reject("fix-1", "bad front matter")
    services.submit_many([TaskSpec("fix-0", "t"), TaskSpec("fix-1", "t")])
    services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="test")
    ran = []
    claim = services.claim("w")
    while claim is not None:
        ran.append(claim.task_id)
        claim = services.complete(claim.task_id, "w", claim.attempt, claim_next=True)
    assert ran == ["fix-0", "fix-1"]
    assert [e.type for e in store.read_stream("task-fix-1")] == [
        "TaskRejected", "TaskSubmitted", "TaskClaimed", "TaskCompleted"]
    store.close()
