"""Views are disposable, on each backend: tables made by another version of tri24es are
rebuilt from the log, and a view changed behind the services is found and rebuilt."""

from __future__ import annotations

import os
from collections.abc import Callable

from eventlog import EventStore, open_store
from tri24es.projections import VIEWS_VERSION, connection_of
from tri24es.projections.upkeep import rebuild, verify
from tri24es.services import Services, TaskSpec


def history(store: EventStore) -> str:
    """Five tasks, one of them completed: its id."""
    services = Services(store)
    services.submit_many([TaskSpec(f"t{i}", f"task {i}") for i in range(5)])
    services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="h")
    claim = services.claim("w")
    assert claim is not None
    services.complete(claim.task_id, "w", claim.attempt)
    return claim.task_id


def sql(store: EventStore, *statements: str) -> None:
    """Statements run straight on the view tables, as someone bypassing the services would."""
    with store.transaction() as tx:
        conn = connection_of(tx)
        for statement in statements:
            conn.execute(statement)


def test_views_of_another_version_are_rebuilt_from_the_log(new_url: Callable[[], str]) -> None:
    url = new_url()
    with open_store(url) as store:
        done = history(store)
        # An older layout: another shape of the queue table, and an older version number.
        sql(store, "DROP TABLE queue", "CREATE TABLE queue (task_id TEXT PRIMARY KEY, junk TEXT)",
            "INSERT INTO queue VALUES ('t0', 'stale')", "UPDATE views_version SET version = 1")
    with open_store(url) as store:
        services = Services(store)  # installs the views: notices the version, rebuilds
        assert verify(store) == []
        assert services.task(done).state == "completed"
        assert services.task("t4").state == "queued"
        with store.snapshot() as tx:
            found = connection_of(tx).execute("SELECT version FROM views_version")
            assert found.fetchone() == (VIEWS_VERSION,)


def test_replay_finds_a_changed_view_and_rebuilds_it(new_url: Callable[[], str]) -> None:
    with open_store(new_url()) as store:
        done = history(store)
        sql(store, f"UPDATE queue SET state = 'queued' WHERE task_id = '{done}'",
            "DELETE FROM workers")
        differences = verify(store)
        assert any(line.startswith("queue: missing") and done in line for line in differences)
        assert any(line.startswith("workers: missing") for line in differences)
        views = rebuild(store)
        assert views.position == store.head()
        assert verify(store) == []
        assert Services(store).task(done).state == "completed"
