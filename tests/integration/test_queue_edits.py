"""An edited queue file changes its task while the task is still queued (in-process watchers
on a real SQLite store: the rules in detail; tests/e2e/test_queue_watcher.py runs the real
command)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import EventStore, open_store
from tri24es import events as ev
from tri24es.events import TaskUpdated
from tri24es.names import Priority
from tri24es.paths import ProjectPaths
from tri24es.projections.tables.queue import TaskRow
from tri24es.projections.upkeep import verify
from tri24es.runtime.queue_watcher import QueueWatcher, ScanReport
from tri24es.services import Services


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(str(tmp_path / "state" / "t.db")) as opened:
        yield opened


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tasks" / "queue").mkdir(parents=True)
    return tmp_path


def watcher(store: EventStore, root: Path) -> QueueWatcher:
    # settle=0: the files here are written whole, and each scan is called by the test.
    return QueueWatcher(Services(store, actor="watcher"), ProjectPaths(root), settle=0)


def put(root: Path, relative: str, text: str) -> Path:
    path = root / "tasks" / "queue" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def scan(w: QueueWatcher) -> ScanReport:
    report, _ = w.scan()
    return report


def updates(store: EventStore) -> list[TaskUpdated]:
    found = [ev.decode_event(r) for r in store.read_all() if r.type == TaskUpdated.topic]
    return [e for e in found if isinstance(e, TaskUpdated)]


def test_an_edit_changes_only_what_it_touches(store: EventStore, root: Path) -> None:
    services = Services(store)
    put(root, "fix.md", "# Fix\nmodel: claude\nnot_before: 10m\n\nold\n")
    w = watcher(store, root)
    assert [s.task_id for s in scan(w).submitted] == ["fix"]
    waits_until = services.task("fix").not_before
    # A person raises its priority; the file's edit changes the text and the model only.
    services.update(TaskUpdated(task_id="fix", priority=Priority.HIGH))
    put(root, "fix.md", "# Fix\nmodel: gpt\nnot_before: 10m\n\nnew\n")
    report = scan(w)
    assert [(u.task_id, u.fields) for u in report.updated] == [("fix", ("body", "model"))]
    row = services.task("fix")
    assert (row.priority, row.model, row.not_before) == (Priority.HIGH.rank, "gpt", waits_until)
    task = services.submitted("fix")  # what a worker runs: the new text
    assert (task.body, task.model) == ("# Fix\nmodel: gpt\nnot_before: 10m\n\nnew\n", "gpt")
    # A removed not_before makes it claimable now; a new command lets workers without --exec
    # take it; a removed model clears the filter.
    put(root, "fix.md", "# Fix\ncommand: echo hi\n\nnew\n")
    [update] = scan(w).updated
    assert update.fields == ("body", "model", "command", "agent", "not_before")
    row = services.task("fix")
    assert (row.model, row.has_command) == (None, 1)
    assert row.not_before is not None
    assert row.not_before <= services.clock()
    assert services.submitted("fix").command == ["echo", "hi"]
    assert verify(store) == []  # the views are the fold of the log
    assert scan(watcher(store, root)).updated == []  # a new watcher: nothing to record


def test_a_running_task_is_not_changed(store: EventStore, root: Path) -> None:
    services = Services(store)
    put(root, "fix.md", "# Fix\n")
    w = watcher(store, root)
    scan(w)
    services.start_worker("w1", pid=os.getpid(), pid_start_time=0, host="h")
    assert services.claim("w1") is not None
    put(root, "fix.md", "# Fix, better\n")
    report = scan(w)
    assert report.updated == []
    assert [c.detail for c in report.changed] == [
        "changed, but task fix is running: the edit is not applied (only a task not yet "
        "claimed takes its file's changes)"]
    assert scan(w).changed == []  # said once per change
    assert services.task("fix").title == "Fix"
    assert updates(store) == []


def test_what_an_edit_cannot_change_is_refused(store: EventStore, root: Path) -> None:
    services = Services(store)
    put(root, "dep.md", "# Dep\n")
    put(root, "fix.md", "# Fix\nmax_budget_usd: 2\n")
    w = watcher(store, root)
    scan(w)
    put(root, "fix.md", "# Fix\nmax_budget_usd: 2\nafter: dep\n")
    [refused] = scan(w).edit_rejected
    assert refused.detail == ("the edit changes after, which cannot change once a task is "
                              "submitted (task fix keeps its last version)")
    put(root, "fix.md", "# Fix\n")
    [refused] = scan(w).edit_rejected
    assert refused.detail.startswith("the edit changes max_budget_usd (it can be changed, not "
                                     "removed)")
    put(root, "fix.md", "# Fix\nmax_budget_usd: 3\n")
    [update] = scan(w).updated
    assert update.fields == ("body", "max_budget_usd")
    assert services.task("fix").after == []
    assert len(updates(store)) == 1


def test_an_edit_of_the_no_progress_rule_is_applied(store: EventStore, root: Path) -> None:
    """An edited `no_progress` line was left out of the TaskUpdated: the body said one rule,
    the worker ran another. Removing it is refused, as removing a budget is."""
    from decimal import Decimal

    from tri24es.events import NO_PROGRESS_OFF, NoProgress

    services = Services(store)
    put(root, "fix.md", "# Fix\nno_progress: $2 10m\n")
    w = watcher(store, root)
    scan(w)
    put(root, "fix.md", "# Fix\nno_progress: $5 1h\n")
    [update] = scan(w).updated
    assert update.fields == ("body", "no_progress")
    assert services.submitted("fix").no_progress == NoProgress(usd=Decimal(5), after_s=3600)
    put(root, "fix.md", "# Fix\nno_progress: off\n")
    scan(w)
    assert services.submitted("fix").no_progress == NO_PROGRESS_OFF
    put(root, "fix.md", "# Fix\n")
    [refused] = scan(w).edit_rejected
    assert refused.detail.startswith("the edit changes no_progress (it can be changed, not "
                                     "removed; off: none)")
    assert services.submitted("fix").no_progress == NO_PROGRESS_OFF


def test_two_watchers_record_one_edit_once(store: EventStore, root: Path) -> None:
    put(root, "fix.md", "# Fix\n")
    first, second = watcher(store, root), watcher(store, root)
    scan(first)
    scan(second)  # both know the task as submitted
    put(root, "fix.md", "# Fix, edited\n")
    assert len(scan(first).updated) == 1
    report = scan(second)
    assert (report.updated, report.changed, report.edit_rejected) == ([], [], [])
    assert len(updates(store)) == 1
    # Put back as it was: the second watcher last recorded that text itself, but the task has
    # the edit now, so it is an edit again (what counts is the log, not its memory).
    put(root, "fix.md", "# Fix\n")
    [update] = scan(second).updated
    assert update.fields == ("body", "title")
    assert Services(store).task("fix").title == "Fix"


def test_a_change_between_the_read_and_the_update_is_weighed_again(
    store: EventStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = Services(store)
    put(root, "fix.md", "# Fix\n")
    w = watcher(store, root)
    scan(w)
    put(root, "fix.md", "# Fix, edited\n")
    read = w.services.task

    def read_then_someone_acts(task_id: str) -> TaskRow:
        row = read(task_id)
        monkeypatch.setattr(w.services, "task", read)  # once
        services.update(TaskUpdated(task_id=task_id, priority=Priority.LOW))
        return row

    monkeypatch.setattr(w.services, "task", read_then_someone_acts)
    report, recheck = w.scan()
    assert report.updated == []
    assert recheck is not None
    [update] = scan(w).updated
    assert update.fields == ("body", "title")
    row = services.task("fix")
    assert (row.title, row.priority) == ("Fix, edited", Priority.LOW.rank)


def test_two_files_naming_one_task_change_nothing(store: EventStore, root: Path) -> None:
    put(root, "fix.md", "# Fix\n")
    w = watcher(store, root)
    scan(w)
    put(root, "HIGH/fix.md", "# Fix, urgently\n")
    report = scan(w)
    assert report.updated == []
    assert [c.detail for c in report.changed] == [
        "more than one file in the queue names task fix: the edit is not applied (keep one of "
        "them)"]
    (root / "tasks" / "queue" / "fix.md").unlink()
    [update] = scan(w).updated
    assert update.fields == ("body", "priority", "title")


def test_an_edit_of_the_retry_backoff_is_applied(store: EventStore, root: Path) -> None:
    """An edited `retry_backoff` line was refused; `tasks update --retry-backoff` changes it,
    and so does the file now. Removing it is refused, as removing a budget is."""
    from tri24es.events import NO_BACKOFF, Backoff

    services = Services(store)
    put(root, "fix.md", "# Fix\nretry_backoff: 1h\n")
    w = watcher(store, root)
    scan(w)
    put(root, "fix.md", "# Fix\nretry_backoff: 10s..5m\n")
    [update] = scan(w).updated
    assert update.fields == ("body", "retry_backoff")
    assert services.submitted("fix").retry_backoff == Backoff(base_s=10, cap_s=300)
    assert services.task("fix").backoff() == Backoff(base_s=10, cap_s=300)  # the row too
    put(root, "fix.md", "# Fix\nretry_backoff: 0\n")
    scan(w)
    assert services.task("fix").backoff() == NO_BACKOFF
    put(root, "fix.md", "# Fix\n")
    [refused] = scan(w).edit_rejected
    assert refused.detail.startswith("the edit changes retry_backoff (it can be changed, not "
                                     "removed; 0: none)")
    assert services.task("fix").backoff() == NO_BACKOFF
