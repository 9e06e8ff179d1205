"""A SQLite write transaction starts from the rows and head the last one committed only when
nothing wrote to the file since; view writes held back to the commit are written before any
statement that reads their table."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from eventlog import open_store
from eventlog.sqlite import SQLiteStore
from tri24es.names import RequeueReason
from tri24es.projections import connection_of, reads
from tri24es.projections.upkeep import verify
from tri24es.services import Claim, Services, StaleAttempt, TaskSpec


def _services(path: Path, actor: str) -> Services:
    return Services(open_store(str(path)), actor=actor)


def _worker(services: Services, name: str) -> None:
    services.start_worker(name, pid=os.getpid(), pid_start_time=0, host="test")


def _claimed(path: Path) -> tuple[Services, Claim]:
    """A store with task t1 claimed by worker w1, through services acting as "a"."""
    a = _services(path, "a")
    a.submit(TaskSpec("t1", "x"))
    _worker(a, "w1")
    claim = a.claim("w1")
    assert claim is not None
    return a, claim


def _statements(store: SQLiteStore) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def test_a_worker_that_alone_writes_reads_no_row_twice(tmp_path: Path) -> None:
    a = _services(tmp_path / "s.db", "a")
    a.submit_many([TaskSpec(f"t{i}", "x") for i in range(5)])
    _worker(a, "w1")
    claim = a.claim("w1")
    assert claim is not None
    assert isinstance(a.store, SQLiteStore)
    seen = _statements(a.store)
    claim = a.complete(claim.task_id, "w1", claim.attempt, claim_next=True)
    assert claim is not None
    a.store._db.set_trace_callback(None)
    reads_ = [s for s in seen if s.startswith("SELECT")]
    # Only the next claimable task is looked up: the held task, the worker, the kill switch
    # and the log's head come from the last transaction.
    assert len(reads_) == 1, reads_
    assert "queue_claimable" in reads_[0]
    # The worker row is written once, the counts' moves that cancel out not at all.
    assert sum(s.startswith("INSERT INTO workers") for s in seen) == 1
    assert sum(s.startswith("INSERT INTO queue_counts") for s in seen) == 2
    assert verify(a.store) == []
    a.store.close()


def test_a_row_a_command_returned_does_not_change_afterwards(tmp_path: Path) -> None:
    a, claim = _claimed(tmp_path / "s.db")
    assert claim.row.state == "running"
    a.complete(claim.task_id, "w1", claim.attempt)
    assert claim.row.state == "running"  # the claim's own row, as it was claimed
    assert a.task("t1").state == "completed"
    a.store.close()


def test_a_commit_by_another_connection_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a = _services(path, "a")
    a.submit_many([TaskSpec("t1", "x"), TaskSpec("t2", "y")])
    _worker(a, "w1")
    claim = a.claim("w1")
    assert claim is not None
    b = _services(path, "b")  # another connection to the same file, in this process
    b.requeue(claim.task_id, RequeueReason.MANUAL, by="b")
    with pytest.raises(StaleAttempt):
        a.complete(claim.task_id, "w1", claim.attempt)
    assert verify(a.store) == []
    b.store.close()
    a.store.close()


def test_a_write_outside_the_stores_transactions_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a, claim = _claimed(path)
    assert isinstance(a.store, SQLiteStore)
    # The same connection, autocommitting behind the store's back.
    a.store._db.execute("UPDATE queue SET worker = 'someone' WHERE task_id = 't1'")
    with pytest.raises(StaleAttempt):
        a.complete(claim.task_id, "w1", claim.attempt)
    a.store.close()


def test_a_rollback_leaves_nothing_to_the_next(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a, claim = _claimed(path)

    class Boom(Exception):
        pass

    def complete_then_fail() -> None:
        with a.store.transaction() as tx:
            a.complete(claim.task_id, "w1", claim.attempt)  # joins, applied to the rows
            assert reads.task_total(connection_of(tx), "completed") == 1
            raise Boom

    with pytest.raises(Boom):
        complete_then_fail()
    # Rolled back: the task is still held, and completing it works from the stored rows.
    assert a.task("t1").state == "running"
    a.complete(claim.task_id, "w1", claim.attempt)
    assert a.task("t1").state == "completed"
    assert verify(a.store) == []
    a.store.close()


def test_held_writes_are_written_before_a_read_of_their_table(tmp_path: Path) -> None:
    a = _services(tmp_path / "s.db", "a")
    a.submit(TaskSpec("t1", "x"))
    _worker(a, "w1")
    with a.store.transaction() as tx:
        claim = a.claim("w1")
        assert claim is not None
        conn = connection_of(tx)
        (state,) = conn.execute("SELECT state FROM workers WHERE worker_id = 'w1'").fetchone()
        assert state == "busy"
        (n,) = conn.execute("SELECT sum(n) FROM queue_counts WHERE state = 'running'"
                            ).fetchone()
        assert n == 1
    assert verify(a.store) == []
    a.store.close()


def test_another_process_file_is_checked_by_data_version(tmp_path: Path) -> None:
    """A plain sqlite3 connection (another program) changes a view row between two
    transactions: the next one reads the row again."""
    path = tmp_path / "s.db"
    a, claim = _claimed(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("UPDATE queue SET attempt = 7 WHERE task_id = 't1'")
    other.close()
    with pytest.raises(StaleAttempt):
        a.complete(claim.task_id, "w1", claim.attempt)
    a.store.close()


def test_a_transaction_of_many_rows_leaves_none(tmp_path: Path) -> None:
    from tri24es.projections.sql import CARRIED_ROWS, ViewsConnection

    a = _services(tmp_path / "s.db", "a")
    a.submit_many([TaskSpec(f"t{i}", "x") for i in range(CARRIED_ROWS + 1)])
    assert isinstance(a.store, SQLiteStore)
    left = a.store._left
    assert left is not None
    assert ViewsConnection not in left[3]
    a.submit(TaskSpec("one", "x"))
    left = a.store._left
    assert left is not None
    assert ViewsConnection in left[3]
    a.store.close()


@pytest.mark.parametrize(("workers", "counts"), [
    ("WORKERS", "Queue_Counts"),  # SQLite's names are case-insensitive
    ('"Workers"', "[queue_COUNTS]"),  # quoted
])
def test_held_writes_are_written_before_a_read_naming_their_table_in_any_case(
    tmp_path: Path, workers: str, counts: str,
) -> None:
    a = _services(tmp_path / "s.db", "a")
    a.submit(TaskSpec("t1", "x"))
    _worker(a, "w1")
    with a.store.transaction() as tx:
        assert a.claim("w1") is not None
        conn = connection_of(tx)
        (state,) = conn.execute(f"SELECT state FROM {workers} WHERE worker_id = 'w1'"
                                ).fetchone()
        assert state == "busy"
        (n,) = conn.execute(f"SELECT sum(n) FROM {counts} WHERE state = 'running'").fetchone()
        assert n == 1
    assert verify(a.store) == []
    a.store.close()
