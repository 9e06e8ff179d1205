"""``tri24es migrate --to``: a SQLite store with history moves to PostgreSQL (and SQLite)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import eventlog
from eventlog.sqlite import CURRENT, GUARDS, LEGACY, SQLiteStore
from tests.integration.test_store_contract import LEGACY_SCHEMA
from tri24es import events as ev
from tri24es.projections import connection_of, reads
from tri24es.projections.upkeep import verify
from tri24es.services import Services, TaskSpec


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tri24es", "--db", db, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def history(path: str, tasks: int = 300) -> None:
    """A store with some of everything: tasks in every state, workers, spend, kill switch."""
    with eventlog.open_store(path) as store:
        svc = Services(store, actor="test")
        svc.submit_many([TaskSpec(f"t{i:04d}", f"task {i}") for i in range(tasks)])
        svc.start_worker("w1", pid=1, pid_start_time=1, host="h")
        for n in range(tasks // 2):
            claim = svc.claim("w1")
            assert claim is not None
            if n % 3:
                svc.complete(claim.task_id, "w1", claim.attempt)
            else:
                svc.fail(claim.task_id, "w1", claim.attempt, error="boom")
            svc.record_spend(ev.SpendRecorded(
                amount=Decimal("0.01"), model="m", task=claim.task_id, worker="w1",
                occurred_at=datetime.now(UTC)))
        svc.cancel("t0299")
        svc.activate_killswitch(ev.KillSwitchActivated(
            reason="test", rate=Decimal("1.5"), daily=Decimal("10"), rate_limit=Decimal("1"),
            daily_limit=Decimal("75")))


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = str(tmp_path / "source.db")
    history(path)
    return path


def test_a_store_moves_with_its_log_and_views(source: str, new_url: Callable[[], str]) -> None:
    target = new_url()
    done = cli("migrate", "--to", target, db=source)
    assert done.returncode == 0, done.stderr
    assert "hash chain verified" in done.stdout
    with eventlog.open_store(source) as old, eventlog.open_store(target) as new:
        assert list(new.read_all()) == list(old.read_all())
        assert verify(new) == []
        with old.snapshot() as a, new.snapshot() as b:
            assert reads.tasks(connection_of(b)) == reads.tasks(connection_of(a))
        # The fleet goes on on the target: the log and the views continue where they were.
        svc = Services(new, actor="test")
        svc.reset_killswitch(by="test", reason="moved")
        claim = svc.claim("w1")
        assert claim is not None
        svc.complete(claim.task_id, "w1", claim.attempt)
        assert new.verify() == old.head() + 3
        assert verify(new) == []
    listed = cli("tasks", "list", "--json", db=target)
    assert listed.returncode == 0, listed.stderr
    assert cli("replay", "--verify", db=target).returncode == 0


def test_an_interrupted_copy_resumes_and_a_foreign_log_is_refused(
    source: str, new_url: Callable[[], str]
) -> None:
    target = new_url()
    with eventlog.open_store(source) as old, eventlog.open_store(target) as new:
        first = old.read_page(0, 100)
        with new.transaction() as tx:  # as if the copy had stopped after one page
            tx.copy_in(first)
    done = cli("migrate", "--to", target, "--json", db=source)
    assert done.returncode == 0, done.stderr
    assert '"resumed_after": 100' in done.stdout
    with eventlog.open_store(source) as old, eventlog.open_store(target) as new:
        assert list(new.read_all()) == list(old.read_all())

    other = new_url()
    with eventlog.open_store(other) as foreign:
        Services(foreign).submit(TaskSpec("x", "another fleet's task"))
        head = foreign.head()
    refused = cli("migrate", "--to", other, db=source)
    assert refused.returncode == 1
    assert refused.stderr.startswith("tri24es: error: ")
    assert "already holds a different log" in refused.stderr
    assert "Traceback" not in refused.stderr
    with eventlog.open_store(other) as foreign:
        assert foreign.head() == head


@pytest.mark.parametrize("change", [
    "CAST(replace(data, 'task 7', 'task 8') AS BLOB)",  # other bytes
    "replace(data, 'task 7', 'task 8')",  # and text where bytes belong
])
def test_a_tampered_source_is_refused_on_arrival(
    source: str, new_url: Callable[[], str], change: str
) -> None:
    with closing(sqlite3.connect(source)) as raw:  # a change that bypasses the store
        raw.execute("DROP TRIGGER events_are_append_only_update")
        raw.execute(f"UPDATE events SET data = {change} WHERE position = 8")
        raw.commit()
    target = new_url()
    done = cli("migrate", "--to", target, db=source)
    assert done.returncode == 1
    assert "position 8" in done.stderr
    assert "Traceback" not in done.stderr
    with eventlog.open_store(target) as new:
        assert new.head() == 0  # the page holding the change was not written


def test_migrating_a_store_onto_itself_is_a_usage_error(source: str) -> None:
    done = cli("migrate", "--to", source, db=source)
    assert done.returncode == 2
    assert "names the store being migrated" in done.stderr


def test_a_log_made_before_origins_runs_the_fleet_and_moves_to_the_current_layout(
    tmp_path: Path,
) -> None:
    """A file of the layout before origins (streams found by name) keeps it: its claims and
    completions are refused by the version their INSERT leaves NULL when the stream moved,
    as on the current layout, and its log replays and verifies; migrate gives the current
    layout."""
    legacy, current = tmp_path / "legacy.db", tmp_path / "current.db"
    with closing(sqlite3.connect(legacy)) as db:
        db.executescript(LEGACY_SCHEMA + ";".join(GUARDS.values()) + ";")
    history(str(legacy))
    with eventlog.open_store(str(legacy)) as store:
        assert isinstance(store, SQLiteStore)
        assert store.statements is LEGACY
        svc = Services(store, actor="test")
        svc.reset_killswitch(by="test", reason="go on")
        svc.submit(TaskSpec("last", "after the rest", after=("t0298",)))
        svc.start_worker("w2", pid=2, pid_start_time=1, host="h")
        with store.snapshot() as tx:
            queued = len(reads.tasks(connection_of(tx), "queued"))
        claim, done = svc.claim("w2"), 0
        while claim is not None:  # the rest, each claimed by the completion before it
            claim = svc.complete(claim.task_id, "w2", claim.attempt, claim_next=True)
            done += 1
        assert done == queued  # the retries of the failed ones, and the one waiting last
        with store.snapshot() as tx:
            assert reads.tasks(connection_of(tx), "queued") == []
        assert verify(store) == []
        head = store.verify()
    for args in (["replay", "--verify"], ["audit", "verify"]):
        result = cli(*args, db=str(legacy))
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    moved = cli("migrate", "--to", str(current), db=str(legacy))
    assert moved.returncode == 0, moved.stderr
    with eventlog.open_store(str(current)) as store:
        assert isinstance(store, SQLiteStore)
        assert store.statements is CURRENT
        assert store.verify() == head
        assert verify(store) == []
