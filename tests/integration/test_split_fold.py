"""A long log is folded by two processes (tri24es.projections.fold): a helper folds the spend
and kill-switch views while this process folds the rest. The result must be exactly what one
process folding everything gives, on each backend, up to any position, and when the helper
fails; a bad event is reported once, by whichever process reads it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from eventlog import ANY, EventStore, NewEvent, open_store
from tri24es import events as ev
from tri24es.names import SPEND_STREAM
from tri24es.projections import fold
from tri24es.projections.fold import Views, fold_log
from tri24es.projections.upkeep import rebuild, verify
from tri24es.services import Services, TaskSpec

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def mixed_log(store: EventStore) -> dict[str, int]:
    """Tasks claimed, completed, failed and left queued; a worker paused; spend; the kill
    switch on and off again; one corrupt spend event and one of an unknown type.
    Returns the positions of the two bad events."""
    services = Services(store, actor="test")
    services.submit_many([TaskSpec(f"t{i}", f"task {i}") for i in range(40)])
    services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="h")
    for i in range(30):
        claim = services.claim("w")
        assert claim is not None
        if i % 7 == 3:
            services.fail(claim.task_id, "w", claim.attempt, "exit 1")
        else:
            services.complete(claim.task_id, "w", claim.attempt)
        services.record_spend(ev.SpendRecorded(
            amount=Decimal("0.0125") * i, occurred_at=NOW, task=claim.task_id, worker="w"))
    bad = {"corrupt": store.append(SPEND_STREAM, [NewEvent("SpendRecorded", b"{")], ANY)}
    bad["unknown"] = store.append("task-t1", [NewEvent("FromTheFuture", b"{}")], ANY)
    services.activate_killswitch(ev.KillSwitchActivated(
        reason="rate", rate=Decimal(3), daily=Decimal(40), rate_limit=Decimal(2),
        daily_limit=Decimal(100)))
    services.request_pause("w", by="test", reason="kill switch")
    services.reset_killswitch(by="alice", reason="checked")
    return {name: recorded[0].position for name, recorded in bad.items()}


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> list[fold._Helper]:
    """Every log is long enough for a helper; the helpers started, to check one ran."""
    started: list[fold._Helper] = []

    class Counted(fold._Helper):
        def __init__(self, url: str, until: int) -> None:
            super().__init__(url, until)
            started.append(self)

    monkeypatch.setattr(fold, "PARALLEL_MIN_EVENTS", 1)  # not for the empty log of a new store
    monkeypatch.setattr(fold, "_Helper", Counted)
    return started


def in_one_process(store: EventStore, until: int | None = None) -> Views:
    saved = fold.PARALLEL_MIN_EVENTS
    fold.PARALLEL_MIN_EVENTS = sys.maxsize
    try:
        return fold_log(store, until_position=until)
    finally:
        fold.PARALLEL_MIN_EVENTS = saved


def test_a_split_fold_equals_one_process_folding_everything(
    new_url: Callable[[], str], helpers: list[fold._Helper], capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_store(new_url()) as store:
        bad = mixed_log(store)
        capfd.readouterr()
        caplog.clear()
        split = fold_log(store)
        helper_err = capfd.readouterr().err
        here = [r.getMessage() for r in caplog.records]
        assert len(helpers) == 1
        assert helpers[0].process.returncode == 0
        alone = in_one_process(store)
        assert split == alone
        assert split.position == store.head()
        assert sum(split.spend.buckets[b][1] for b in split.spend.buckets) == 30
        assert split.killswitch == alone.killswitch
        assert split.workers["w"].pause_requested
        # The corrupt spend event is the helper's to report, the unknown type this process's.
        assert helper_err.count(f"position {bad['corrupt']} (") == 1
        assert f"position {bad['unknown']} (" not in helper_err
        assert sum(f"position {bad['unknown']} (" in m for m in here) == 1
        assert not any(f"position {bad['corrupt']} (" in m for m in here)


def test_a_split_fold_up_to_a_position(
    new_url: Callable[[], str], helpers: list[fold._Helper],
) -> None:
    with open_store(new_url()) as store:
        mixed_log(store)
        for until in (1, 45, store.head() - 3):
            assert fold_log(store, until_position=until) == in_one_process(store, until)
        assert len(helpers) == 3


@pytest.mark.parametrize(("python", "exits"), [("/bin/false", [1]), ("no-such-python", [])],
                         ids=["helper-fails", "no-helper-starts"])
def test_a_failing_helper_leaves_its_share_to_this_process(
    tmp_path: os.PathLike[str], helpers: list[fold._Helper], monkeypatch: pytest.MonkeyPatch,
    python: str, exits: list[int],
) -> None:
    with open_store(f"{tmp_path}/log.db") as store:
        mixed_log(store)
        alone = in_one_process(store)
        # /bin/false exits 1 at once; a missing interpreter starts no helper at all.
        monkeypatch.setattr(sys, "executable", os.path.join(tmp_path, python))
        assert fold_log(store) == alone
        assert [h.process.returncode for h in helpers] == exits


def test_a_store_no_other_process_can_open_is_folded_here(
    tmp_path: os.PathLike[str], helpers: list[fold._Helper],
) -> None:
    from eventlog.memory import MemoryStore

    memory = MemoryStore()
    with open_store(f"{tmp_path}/log.db") as store:
        mixed_log(store)
        for e in store.read_all():
            memory.append(e.stream, [NewEvent(e.type, e.data, e.metadata)], ANY)
        assert fold_log(memory) == in_one_process(memory)
    assert helpers == []


def test_verify_splits_the_fold_inside_its_transaction(
    new_url: Callable[[], str], helpers: list[fold._Helper],
) -> None:
    # It folds while holding the write lock: the helper must read without waiting for it.
    with open_store(new_url()) as store:
        mixed_log(store)
        alone = in_one_process(store)
        rebuilt = rebuild(store)  # page by page, in this process: no helper
        assert (rebuilt.position, rebuilt.tasks, rebuilt.workers, rebuilt.spend_events,
                rebuilt.killswitch_active) == (store.head(), len(alone.queue),
                                               len(alone.workers), len(alone.spend.rows),
                                               alone.killswitch.active)
        assert verify(store) == []
        assert [h.process.returncode for h in helpers] == [0]
