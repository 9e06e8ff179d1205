"""``rebuild`` (what ``tri24es replay`` runs) folds the log into the view tables a batch of
events at a time, keeping in memory only the rows a batch touches. Whatever the batch, the
tables must be what a fold of the whole log in memory gives; and a rebuild stopped midway,
even by SIGKILL, must leave the views as they were."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eventlog import EventStore, open_store
from tests.conftest import PATIENCE
from tri24es import events as ev
from tri24es.projections import connection_of
from tri24es.projections.fold import PROJECTIONS, fold_log
from tri24es.projections.queue import QUEUE, Paged
from tri24es.projections.upkeep import rebuild, verify
from tri24es.services import Services, TaskSpec

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def tangled_log(store: EventStore) -> None:
    """Tasks whose events lie far apart in the log: chains of dependencies submitted before
    and after what they wait for, completions that release them, a failed dependency that
    blocks a chain and its manual retry that unblocks it, spend against tasks, a worker's
    pause, the kill switch on and off."""
    services = Services(store, actor="test")
    services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="h")
    services.submit_many([TaskSpec(f"a{i}", f"first {i}") for i in range(12)])
    for i in range(12):
        services.submit(TaskSpec(f"b{i}", f"waits {i}", after=(f"a{i}", f"a{(i + 5) % 12}")))
    services.submit(TaskSpec("c", "waits for all", after=tuple(f"b{i}" for i in range(12)),
                             max_retries=0))
    for n in range(18):  # not all: some are left waiting
        claim = services.claim("w")
        if claim is None:
            break
        if claim.task_id == "a3" and claim.attempt == 1:
            services.fail(claim.task_id, "w", claim.attempt, "exit 1")
            continue
        services.record_spend(ev.SpendRecorded(
            amount=Decimal("0.0125") * n, occurred_at=NOW, task=claim.task_id, worker="w"))
        services.complete(claim.task_id, "w", claim.attempt)
    services.submit(TaskSpec("d", "waits for a done one", after=("a0",)))
    services.activate_killswitch(ev.KillSwitchActivated(
        reason="rate", rate=Decimal(3), daily=Decimal(40), rate_limit=Decimal(2),
        daily_limit=Decimal(100)))
    services.request_pause("w", by="test", reason="kill switch")
    services.reset_killswitch(by="alice", reason="checked")


def table_rows(store: EventStore) -> dict[str, list[Any]]:
    with store.snapshot() as tx:
        conn = connection_of(tx)
        return {table: rows for p in PROJECTIONS for table, rows in p.read_rows(conn).items()}


def folded_rows(store: EventStore) -> dict[str, list[Any]]:
    views = fold_log(store).by_projection()
    return {table: rows for p in PROJECTIONS for table, rows in p.rows(views[p.name]).items()}


@pytest.mark.parametrize("every", [1, 3, 7, 10_000])
def test_a_rebuild_in_batches_writes_what_a_fold_in_memory_gives(
    new_url: Callable[[], str], every: int,
) -> None:
    with open_store(new_url()) as store:
        tangled_log(store)
        rebuilt = rebuild(store, every=every)
        assert rebuilt.position == store.head()
        assert table_rows(store) == folded_rows(store)
        assert verify(store) == []
        # The log is as tangled as meant: tasks released by completions, tasks waiting.
        rows = table_rows(store)["queue"]
        assert any(r[1] == "completed" and r[25] for r in rows)  # state, dependants
        assert any(r[1] == "queued" and r[26] > 0 for r in rows)  # deps_open


def test_a_rebuild_holds_one_batch_of_task_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bound, counted rather than measured: the most queue rows in memory at once is
    # what one batch touches, not the number of tasks in the log.
    most = [0]
    spill = QUEUE.spill

    def counted(conn: Any, view: Any) -> None:
        assert isinstance(view, Paged)
        most[0] = max(most[0], len(view))
        spill(conn, view)

    monkeypatch.setattr(QUEUE, "spill", counted)
    with open_store(str(tmp_path / "log.db")) as store:
        services = Services(store, actor="test")
        services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="h")
        services.submit_many([TaskSpec(f"t{i}", f"task {i}") for i in range(300)])
        while (claim := services.claim("w")) is not None:
            services.complete(claim.task_id, "w", claim.attempt)
        rebuild(store, every=20)
        assert 0 < most[0] <= 20
        assert len(table_rows(store)["queue"]) == 300
        assert verify(store) == []


CHILD = """
import sys
from eventlog import open_store
from tri24es.projections.upkeep import rebuild

folded = [0]

def progress(n):
    folded[0] += n
    if folded[0] >= 200:  # batches of 50 written into the tables, in the open transaction
        print("midway", flush=True)
        sys.stdin.read()  # until killed

with open_store(sys.argv[1]) as store:
    rebuild(store, progress=progress, every=50)
"""


def test_a_rebuild_killed_midway_leaves_the_views_as_they_were(
    new_url: Callable[[], str],
) -> None:
    url = new_url()
    with open_store(url) as store:
        tangled_log(store)
        services = Services(store, actor="test")
        services.submit_many([TaskSpec(f"x{i}", f"more {i}") for i in range(150)])
        # Old views told apart from rebuilt ones: a title no fold would write.
        with store.transaction() as tx:
            connection_of(tx).execute("UPDATE queue SET title = 'old' WHERE task_id = 'x7'")
        before = table_rows(store)
    with subprocess.Popen([sys.executable, "-c", CHILD, url], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "midway\n"  # blocks until then (or its end)
        finally:
            child.kill()
            child.wait(PATIENCE)
    with open_store(url) as store:
        assert table_rows(store) == before  # the rebuild's transaction, never committed
        assert [line for line in verify(store) if "x7" in line]  # the tampered row, still old
        rebuild(store)
        assert verify(store) == []


def test_a_rebuild_reads_the_log_without_the_memory_map(tmp_path: Path) -> None:
    # Mapped pages of the store count in the resident set: a replay turns the map off for
    # its reading, and gives it back afterwards.
    with open_store(str(tmp_path / "log.db")) as store:
        tangled_log(store)
        with store.snapshot() as tx:
            conn = tx.connection  # the store's one connection, asked again below
        mapped = conn.execute("PRAGMA mmap_size").fetchone()[0]
        assert mapped > 0
        seen: list[int] = []
        rebuild(store, progress=lambda _: seen.append(
            conn.execute("PRAGMA mmap_size").fetchone()[0]))
        assert seen
        assert set(seen) == {0}
        assert conn.execute("PRAGMA mmap_size").fetchone()[0] == mapped

