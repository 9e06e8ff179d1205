"""The projections as pure folds: plain lists of envelopes, no database."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from tri24es import events as ev
from tri24es.events import Envelope, Event
from tri24es.machines import IllegalTransition
from tri24es.names import (
    BUDGET_STREAM,
    KILL_SWITCH_STREAM,
    SPEND_STREAM,
    Priority,
    RequeueReason,
    task_stream,
    worker_stream,
)
from tri24es.projections.killswitch import KILLSWITCH
from tri24es.projections.queue import QUEUE
from tri24es.projections.spend import SPEND
from tri24es.projections.tables.money import BUCKET_US, from_units
from tri24es.projections.workers import WORKERS
from tri24es.timeutil import EPOCH, from_us, to_us

T0 = 1_700_000_000_000_000  # an arbitrary moment, in microseconds
LEASE = from_us(T0 + 30_000_000)


class Log:
    """Builds envelopes as a store would: global positions, per-stream versions."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.versions: dict[str, int] = defaultdict(int)

    def add(self, stream: str, event: Event, at: int | None = None) -> Envelope:
        self.versions[stream] += 1
        position = len(self.envelopes) + 1
        recorded_at = T0 + position * 1_000 if at is None else at
        envelope = Envelope(
            position, stream, self.versions[stream], f"id-{position}", event, recorded_at, b"{}"
        )
        self.envelopes.append(envelope)
        return envelope

    def task(self, event: Event, at: int | None = None) -> Envelope:
        return self.add(task_stream(event.task_id), event, at)  # type: ignore[attr-defined]

    def worker(self, event: Event, at: int | None = None) -> Envelope:
        return self.add(worker_stream(event.worker), event, at)  # type: ignore[attr-defined]


def submitted(task_id: str = "t1", **fields: object) -> ev.TaskSubmitted:
    return ev.TaskSubmitted(task_id=task_id, title=f"title {task_id}", **fields)


def claimed(task_id: str = "t1", worker: str = "w1", attempt: int = 1) -> ev.TaskClaimed:
    return ev.TaskClaimed(task_id=task_id, worker=worker, attempt=attempt, lease_expires_at=LEASE)


def started_worker(worker: str = "w1", **fields: object) -> ev.WorkerStarted:
    return ev.WorkerStarted(worker=worker, pid=123, pid_start_time=456, host="h", **fields)


# --- queue -------------------------------------------------------------------------------


def test_submit_creates_a_queued_row_with_the_submission_fields() -> None:
    log = Log()
    e = log.task(submitted(priority=Priority.HIGH, shard="s", model="m", type="x", max_retries=2))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.priority, row.submitted_position) == ("queued", 1, e.position)
    assert (row.title, row.shard, row.model, row.type) == ("title t1", "s", "m", "x")
    assert (row.max_retries, row.attempt, row.worker, row.lease_expires_at) == (2, 0, None, None)
    assert (row.submitted_at, row.updated_at, row.version) == (e.recorded_at, e.recorded_at, 1)


def test_submit_claim_complete() -> None:
    log = Log()
    log.task(submitted())
    claim = log.task(claimed())
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.attempt, row.worker) == ("running", 1, "w1")
    assert row.lease_expires_at == to_us(LEASE)
    assert (row.version, row.updated_at) == (2, claim.recorded_at)

    log.task(ev.TaskStarted(task_id="t1", worker="w1", attempt=1, pid=77, pgid=77))
    assert QUEUE.fold(log.envelopes)["t1"].pid == 77
    later = from_us(T0 + 90_000_000)
    log.task(ev.LeaseRenewed(task_id="t1", worker="w1", attempt=1, lease_expires_at=later))
    assert QUEUE.fold(log.envelopes)["t1"].lease_expires_at == T0 + 90_000_000

    done = log.task(ev.TaskCompleted(task_id="t1", worker="w1", attempt=1))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.attempt, row.version, row.updated_at) == (
        "completed", 1, 5, done.recorded_at,
    )
    assert (row.worker, row.lease_expires_at, row.pid) == (None, None, None)


def test_priority_ranks_follow_the_claim_order() -> None:
    log = Log()
    for i, p in enumerate(Priority):
        log.task(submitted(f"t{i}", priority=p))
    view = QUEUE.fold(log.envelopes)
    assert [view[f"t{i}"].priority for i in range(4)] == [0, 1, 2, 3]


def test_failed_attempt_with_retries_left_is_requeued() -> None:
    log = Log()
    log.task(submitted(max_retries=1))
    log.task(claimed())
    log.task(ev.TaskFailed(task_id="t1", worker="w1", attempt=1, error="boom"))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.last_error, row.worker) == ("running", "boom", "w1")
    log.task(ev.TaskRequeued(task_id="t1", attempt=1, worker="w1", reason=RequeueReason.RETRY))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.attempt, row.worker, row.lease_expires_at) == ("queued", 1, None, None)
    assert row.last_error == "boom"
    assert row.attempts_left() == 1


def test_last_attempt_failed_is_dead_lettered() -> None:
    log = Log()
    log.task(submitted(max_retries=0))
    log.task(claimed())
    log.task(ev.TaskFailed(task_id="t1", worker="w1", attempt=1, error="boom"))
    log.task(ev.TaskDeadLettered(task_id="t1", attempts=1, error="gave up", worker="w1"))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.worker, row.last_error, row.version) == ("failed", None, "gave up", 4)
    assert row.attempts_left() == 0


def test_manual_retry_starts_a_fresh_retry_budget() -> None:
    log = Log()
    log.task(submitted(max_retries=1))
    for attempt in (1, 2):
        log.task(claimed(attempt=attempt))
        log.task(ev.TaskFailed(task_id="t1", worker="w1", attempt=attempt, error="boom"))
        if attempt == 1:
            log.task(ev.TaskRequeued(task_id="t1", attempt=1, reason=RequeueReason.RETRY))
    log.task(ev.TaskDeadLettered(task_id="t1", attempts=2, error="boom"))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.attempt, row.retries_from, row.attempts_left()) == ("failed", 2, 0, 0)

    log.task(ev.TaskRequeued(task_id="t1", attempt=2, reason=RequeueReason.MANUAL, by="me"))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.attempt, row.retries_from) == ("queued", 2, 2)
    assert row.attempts_left() == 2  # max_retries + 1 claims again
    log.task(claimed(attempt=3))
    assert QUEUE.fold(log.envelopes)["t1"].attempts_left() == 1


def test_a_non_manual_requeue_of_a_dead_letter_is_illegal() -> None:
    log = Log()
    log.task(submitted(max_retries=0))
    log.task(claimed())
    log.task(ev.TaskDeadLettered(task_id="t1", attempts=1, error="boom"))
    log.task(ev.TaskRequeued(task_id="t1", attempt=1, reason=RequeueReason.RETRY))
    with pytest.raises(IllegalTransition):
        QUEUE.fold(log.envelopes)


@pytest.mark.parametrize("running", [False, True])
def test_cancel(running: bool) -> None:
    log = Log()
    log.task(submitted())
    if running:
        log.task(claimed())
    log.task(ev.TaskCancelled(task_id="t1", worker="w1" if running else None, by="me"))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.state, row.worker, row.lease_expires_at) == ("cancelled", None, None)


@pytest.mark.parametrize(
    "events",
    [
        [claimed(), claimed(attempt=2)],  # claim of a running task
        [ev.TaskCompleted(task_id="t1", worker="w1", attempt=1)],  # complete a queued task
        [claimed(), ev.TaskCompleted(task_id="t1", worker="w1", attempt=1),
         ev.TaskCancelled(task_id="t1")],  # cancel a completed task
        [ev.TaskCancelled(task_id="t1"), claimed()],  # claim a cancelled task
        [ev.TaskRequeued(task_id="t1", attempt=0, reason=RequeueReason.MANUAL)],  # retry queued
    ],
)
def test_illegal_task_transitions_raise(events: list[Event]) -> None:
    log = Log()
    log.task(submitted())
    for event in events:
        log.task(event)
    with pytest.raises(IllegalTransition):
        QUEUE.fold(log.envelopes)


def test_queue_ignores_events_of_other_streams_and_tasks_never_submitted() -> None:
    log = Log()
    log.worker(started_worker())
    log.task(claimed("ghost"))
    log.add(SPEND_STREAM, ev.SpendRecorded(amount=Decimal(1), occurred_at=from_us(T0)))
    assert QUEUE.fold(log.envelopes) == {}


# --- workers -----------------------------------------------------------------------------


def test_worker_started_heartbeat_claim_complete() -> None:
    log = Log()
    start = log.worker(started_worker(shard="a", model="m", type="x"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.pid, row.pid_start_time, row.host) == ("starting", 123, 456, "h")
    assert (row.shard, row.model, row.type) == ("a", "m", "x")
    assert (row.started_at, row.last_seen, row.version) == (start.recorded_at,) * 2 + (1,)

    beat = log.worker(ev.WorkerHeartbeat(worker="w1"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.last_seen, row.version) == ("idle", beat.recorded_at, 2)

    log.task(submitted())
    claim = log.task(claimed())
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.current_task, row.current_attempt) == ("busy", "t1", 1)
    assert (row.last_seen, row.version) == (claim.recorded_at, 2)  # a task event: same version

    log.task(ev.TaskCompleted(task_id="t1", worker="w1", attempt=1))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.current_task, row.current_attempt) == ("idle", None, None)


@pytest.mark.parametrize(
    "end",
    [
        ev.TaskRequeued(task_id="t1", attempt=1, worker="w1", reason=RequeueReason.LEASE_EXPIRED),
        ev.TaskDeadLettered(task_id="t1", attempts=1, error="x", worker="w1"),
        ev.TaskCancelled(task_id="t1", worker="w1"),
    ],
)
def test_every_task_end_frees_the_worker(end: Event) -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerHeartbeat(worker="w1"))
    log.task(submitted())
    log.task(claimed())
    log.task(end)
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.current_task) == ("idle", None)


def test_pause_and_resume_requests_set_and_clear_the_flag() -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerHeartbeat(worker="w1"))
    log.worker(ev.WorkerPauseRequested(worker="w1", by="me"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.pause_requested) == ("idle", True)  # a request is not a fact
    log.worker(ev.WorkerPaused(worker="w1"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.pause_requested) == ("paused", True)
    log.worker(ev.WorkerResumeRequested(worker="w1"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.pause_requested) == ("paused", False)
    log.worker(ev.WorkerResumed(worker="w1"))
    assert WORKERS.fold(log.envelopes)["w1"].state == "idle"
    log.worker(ev.WorkerStopRequested(worker="w1"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.stop_requested) == ("stopping", True)


def test_paused_worker_keeps_its_state_when_its_task_ends() -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerHeartbeat(worker="w1"))
    log.task(submitted())
    log.task(claimed())
    log.worker(ev.WorkerPaused(worker="w1"))
    log.task(ev.TaskCompleted(task_id="t1", worker="w1", attempt=1))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.current_task) == ("paused", None)


def test_end_of_a_task_the_worker_no_longer_holds_leaves_the_worker_alone() -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerHeartbeat(worker="w1"))
    log.task(submitted("t1"))
    log.task(submitted("t2"))
    log.task(claimed("t1"))
    log.task(ev.TaskRequeued(task_id="t1", attempt=1, worker="w1",
                             reason=RequeueReason.LEASE_EXPIRED))
    log.task(claimed("t2"))
    before = WORKERS.fold(log.envelopes)["w1"]
    # A late end of t1 naming w1 (e.g. a cancel recorded with the old holder).
    log.task(ev.TaskCancelled(task_id="t1", worker="w1"))
    after = WORKERS.fold(log.envelopes)["w1"]
    assert after == before
    assert (after.state, after.current_task) == ("busy", "t2")


@pytest.mark.parametrize(
    "events",
    [
        [claimed()],  # a claim by a starting worker
        [ev.WorkerHeartbeat(worker="w1"), claimed(), claimed("t2")],  # a busy worker claims
        [ev.WorkerHeartbeat(worker="w1"), started_worker()],  # restart while live
        [ev.WorkerResumed(worker="w1")],  # resume what is not paused
        [ev.WorkerLost(worker="w1"), ev.WorkerPaused(worker="w1")],  # pause a lost worker
    ],
)
def test_illegal_worker_transitions_raise(events: list[Event]) -> None:
    log = Log()
    log.worker(started_worker())
    log.task(submitted("t1"))
    log.task(submitted("t2"))
    for event in events:
        if isinstance(event, ev.TaskClaimed):
            log.task(event)
        else:
            log.worker(event)
    with pytest.raises(IllegalTransition):
        WORKERS.fold(log.envelopes)


def test_a_lost_worker_may_start_again() -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerLost(worker="w1"))
    assert WORKERS.fold(log.envelopes)["w1"].state == "lost"
    restart = log.worker(started_worker(shard="b"))
    row = WORKERS.fold(log.envelopes)["w1"]
    assert (row.state, row.shard, row.version, row.started_at) == (
        "starting", "b", 3, restart.recorded_at,
    )


def test_sigkill_of_the_worker_kills_it_but_other_signals_do_not() -> None:
    log = Log()
    log.worker(started_worker())
    log.worker(ev.WorkerSignalled(worker="w1", signal="SIGTERM", pid=1))
    log.worker(ev.WorkerSignalled(worker="w1", signal="SIGKILL", pid=1, target="agent"))
    assert WORKERS.fold(log.envelopes)["w1"].state == "starting"
    log.worker(ev.WorkerSignalled(worker="w1", signal="9", pid=1))
    assert WORKERS.fold(log.envelopes)["w1"].state == "killed"


# --- spend -------------------------------------------------------------------------------


def spend(amount: str, at: datetime, **fields: object) -> ev.SpendRecorded:
    return ev.SpendRecorded(amount=Decimal(amount), occurred_at=at, **fields)


def test_spend_rows_and_quarter_hour_buckets_sum_exactly() -> None:
    base = EPOCH + timedelta(days=20_000)  # a multiple of 15 minutes
    amounts = ["0.1", "0.2", "0.0000000001", "1234.5678901234", "0.3"]
    offsets = [timedelta(0), timedelta(minutes=14, seconds=59), timedelta(minutes=15),
               timedelta(minutes=29, microseconds=999_999), timedelta(hours=1)]
    log = Log()
    for amount, offset in zip(amounts, offsets, strict=True):
        log.add(SPEND_STREAM, spend(amount, base + offset, model="m", task="t1",
                                       worker="w1", source="worker"))
    view = SPEND.fold(log.envelopes)
    assert sorted(view.rows) == [1, 2, 3, 4, 5]
    first = view.rows[1]
    assert (first.occurred_at, first.model, first.task, first.worker, first.source) == (
        to_us(base), "m", "t1", "w1", "worker",
    )
    assert [from_units(r.amount_units) for r in view.rows.values()] == [
        Decimal(a) for a in amounts
    ]
    start = to_us(base)
    assert start % BUCKET_US == 0
    assert {k: (from_units(u), n) for k, (u, n) in view.buckets.items()} == {
        start: (Decimal("0.3"), 2),
        start + BUCKET_US: (Decimal("1234.5678901235"), 2),
        start + 4 * BUCKET_US: (Decimal("0.3"), 1),
    }
    total = sum((from_units(u) for u, _ in view.buckets.values()), Decimal(0))
    assert total == sum((Decimal(a) for a in amounts), Decimal(0))
    assert sum(n for _, n in view.buckets.values()) == 5
    rows = SPEND.rows(view)
    assert len(rows["spend"]) == 5
    assert len(rows["spend_buckets"]) == 3


def test_spend_fold_ignores_everything_else() -> None:
    log = Log()
    log.task(submitted())
    view = SPEND.fold(log.envelopes)
    assert (view.rows, view.buckets) == ({}, {})


# --- kill switch -------------------------------------------------------------------------


def activated(reason: str = "too fast") -> ev.KillSwitchActivated:
    return ev.KillSwitchActivated(
        reason=reason, rate=Decimal("2.5"), daily=Decimal("10"),
        rate_limit=Decimal("1"), daily_limit=Decimal("100"),
    )


def test_killswitch_activate_then_reset() -> None:
    assert KILLSWITCH.rows(KILLSWITCH.fold([])) == {"killswitch": []}
    log = Log()
    log.task(submitted())
    on = log.add(KILL_SWITCH_STREAM, activated())
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.active, view.reason, view.by, view.rate, view.daily) == (
        True, "too fast", None, "2.5", "10",
    )
    assert (view.changed_at, view.position) == (on.recorded_at, on.position)

    off = log.add(KILL_SWITCH_STREAM, ev.KillSwitchReset(by="me", reason="ok now"))
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.active, view.reason, view.by, view.rate, view.daily) == (
        False, "ok now", "me", None, None,
    )
    assert (view.changed_at, view.position) == (off.recorded_at, off.position)
    assert KILLSWITCH.rows(view) == {
        "killswitch": [(1, 0, "ok now", off.recorded_at, "me", off.position, None, None,
                        None, None, None, None, None)]
    }


def test_the_last_watchdog_start_is_kept_and_makes_a_row_of_its_own() -> None:
    log = Log()
    first = ev.BudgetWatchdogStarted(rate_limit=Decimal(1), daily_limit=Decimal(75),
                                     window_seconds=300, host="h", pid=7)
    log.add(BUDGET_STREAM, first)
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.active, view.position) == (False, None)
    assert KILLSWITCH.rows(view)["killswitch"] != []  # as the inline save writes it
    log.add(KILL_SWITCH_STREAM, activated())
    later = log.add(BUDGET_STREAM, first.model_copy(update={"daily_limit": Decimal(20)}))
    view = KILLSWITCH.fold(log.envelopes)
    assert view.active
    assert json.loads(view.watchdog or "") == {
        "rate_limit": "1", "daily_limit": "20", "window_seconds": 300, "timezone": None,
        "host": "h", "pid": 7, "at": later.recorded_at}


def test_a_forced_reset_starts_the_rate_window_and_allowances_add_up_for_their_day() -> None:
    day = datetime(2026, 11, 30, tzinfo=EPOCH.tzinfo)
    next_day = day + timedelta(days=1)

    def allow(usd: str, start: datetime) -> ev.KillSwitchReset:
        return ev.KillSwitchReset(reason="ok", allow_today=Decimal(usd), day_start=start,
                                  day_end=start + timedelta(days=1))

    log = Log()
    log.add(KILL_SWITCH_STREAM, activated())
    log.add(KILL_SWITCH_STREAM, ev.KillSwitchReset(reason="ok", rate_window_start=day))
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.rate_since, view.allowance) == (to_us(day), None)
    log.add(KILL_SWITCH_STREAM, activated())
    log.add(KILL_SWITCH_STREAM, allow("5", day))  # not forced: the window stays
    log.add(KILL_SWITCH_STREAM, activated())
    log.add(KILL_SWITCH_STREAM, allow("2.5", day))
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.rate_since, view.allowance) == (to_us(day), "7.5")
    assert (view.allowance_start, view.allowance_end) == (to_us(day), to_us(next_day))
    log.add(KILL_SWITCH_STREAM, activated())  # an activation keeps both
    log.add(KILL_SWITCH_STREAM, allow("1", next_day))  # another day: replaced
    view = KILLSWITCH.fold(log.envelopes)
    assert (view.allowance, view.allowance_start) == ("1", to_us(next_day))


# -- the fold's shortcuts agree with the machines -----------------------------------------

EVENT_SAMPLES: list[Event] = [
    submitted(), claimed(), ev.TaskStarted(task_id="t1", worker="w1", attempt=1, pid=1, pgid=1),
    ev.LeaseRenewed(task_id="t1", worker="w1", attempt=1, lease_expires_at=EPOCH),
    ev.TaskCompleted(task_id="t1", worker="w1", attempt=1),
    ev.TaskFailed(task_id="t1", worker="w1", attempt=1, error="x"),
    *(ev.TaskRequeued(task_id="t1", attempt=1, reason=r) for r in RequeueReason),
    ev.TaskDeadLettered(task_id="t1", attempts=1, error="x"), ev.TaskCancelled(task_id="t1"),
    started_worker(), ev.WorkerHeartbeat(worker="w1"), ev.WorkerPauseRequested(worker="w1"),
    ev.WorkerPaused(worker="w1"), ev.WorkerResumeRequested(worker="w1"),
    ev.WorkerResumed(worker="w1"), ev.WorkerStopRequested(worker="w1"),
    ev.WorkerStopped(worker="w1"), ev.WorkerLost(worker="w1"),
    *(ev.WorkerSignalled(worker="w1", signal=s, pid=1, target=t)
      for s in ("SIGKILL", "SIGTERM") for t in ("worker", "agent")),
]


@pytest.mark.parametrize("machine", ["task", "worker"])
def test_the_folds_move_tables_agree_with_the_machines(machine: str) -> None:
    from tri24es.machines import TaskState, WorkerState
    from tri24es.machines.task import advance as advance_task
    from tri24es.machines.worker import advance as advance_worker
    from tri24es.projections import queue, workers

    moves, states, advance = (
        (queue._MOVES, TaskState, advance_task) if machine == "task"
        else (workers._MOVES, WorkerState, advance_worker)
    )
    for state in states:
        for event in EVENT_SAMPLES:
            shortcut = moves.get((state.value, type(event)))
            if shortcut is None:
                continue  # the fold asks the machine
            assert advance(state, event) == shortcut, (state, event)  # type: ignore[operator]


def test_replay_passes_over_events_no_view_handles_without_decoding_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from eventlog import NewEvent
    from eventlog.memory import MemoryStore
    from tri24es.projections.fold import fold_log

    store = MemoryStore()
    store.append("task-t1", [ev.encode(submitted())])
    store.append("task-t2", [NewEvent("TaskRejected", b"not json")])  # no view reads it
    store.append("task-t1", [ev.encode(claimed())])
    views = fold_log(store)
    assert views.queue["t1"].state == "running"
    assert views.position == 3
    assert "position 2" not in caplog.text  # never decoded, so never reported


def test_an_update_with_a_command_and_an_agent_changes_who_may_run_the_task() -> None:
    log = Log()
    log.task(submitted())
    assert QUEUE.fold(log.envelopes)["t1"].has_command == 0
    log.task(ev.TaskUpdated(task_id="t1", command=["echo", "hi"], agent="", body="# t\n"))
    assert QUEUE.fold(log.envelopes)["t1"].has_command == 1
    log.task(ev.TaskUpdated(task_id="t1", title="other"))  # neither given: left as it was
    assert QUEUE.fold(log.envelopes)["t1"].has_command == 1
    log.task(ev.TaskUpdated(task_id="t1", command=[], agent=""))
    row = QUEUE.fold(log.envelopes)["t1"]
    assert (row.has_command, row.title) == (0, "other")


def test_the_task_as_run_is_the_submission_with_its_updates() -> None:
    from tri24es.services.base import updated_task

    task = submitted(body="old", model="m", command=["a"], review=True)
    changed = updated_task(task, ev.TaskUpdated(
        task_id="t1", body="new", model="", command=[], agent="codex", review=False,
        priority=Priority.HIGH))
    assert (changed.body, changed.model, changed.command, changed.agent, changed.review,
            changed.priority, changed.title) == (
        "new", None, None, "codex", False, Priority.HIGH, "title t1")
    assert updated_task(task, ev.TaskUpdated(task_id="t1")) is task
