"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlog import NO_STREAM, NewEvent
from eventlog.sqlite import SQLiteStore

MILLION_BATCHES, MILLION_PER_BATCH = 100, 10_000


@pytest.fixture(scope="session")
def million_event_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store of 1,000,000 events (100 streams of 10,000), built once per run and
    only ever read: the bounded-memory tests of read_all and of the audit export share it."""
    path = tmp_path_factory.mktemp("million") / "big.db"
    data, meta = b'{"task_id":"t","n":1,"note":"some payload text"}', b'{"actor":"bench"}'
    with SQLiteStore(path, synchronous="OFF") as store:
        for b in range(MILLION_BATCHES):
            batch = [NewEvent("Loaded", data, meta) for _ in range(MILLION_PER_BATCH)]
            store.append(f"load-{b}", batch, NO_STREAM)
    return path
