"""Views are disposable: tables made by another version of tri24es are rebuilt from the log."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from eventlog import open_store
from tri24es.projections import VIEWS_VERSION, verify
from tri24es.services import Services, TaskSpec


def test_views_of_another_version_are_rebuilt_from_the_log(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with open_store(str(db)) as store:
        services = Services(store)
        services.submit_many([TaskSpec(f"t{i}", f"task {i}") for i in range(5)])
        services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="h")
        claim = services.claim("w")
        assert claim is not None
        services.complete(claim.task_id, "w", claim.attempt)
    raw = sqlite3.connect(db)
    # An older layout: another shape of the queue table, and an older version number.
    raw.executescript(
        "DROP TABLE queue; CREATE TABLE queue (task_id TEXT PRIMARY KEY, junk TEXT);"
        "INSERT INTO queue VALUES ('t0', 'stale'); UPDATE views_version SET version = 1;"
    )
    raw.close()
    with open_store(str(db)) as store:
        services = Services(store)  # installs the views: notices the version, rebuilds
        assert verify(store) == []
        assert services.task(claim.task_id).state == "completed"
        assert services.task("t4").state == "queued"
    check = sqlite3.connect(db)
    assert check.execute("SELECT version FROM views_version").fetchone() == (VIEWS_VERSION,)
    check.close()
