"""The command handlers on a real store of each backend, with a clock the test controls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import eventlog
from eventlog import EventStore
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.machines import IllegalTransition
from tri24es.names import KILL_SWITCH_STREAM, Priority, RequeueReason
from tri24es.projections import connection_of, reads
from tri24es.projections.queue import QUEUE
from tri24es.projections.tables.killswitch import read_killswitch
from tri24es.projections.tables.queue import TaskRow
from tri24es.projections.tables.workers import WorkerRow
from tri24es.projections.upkeep import verify
from tri24es.projections.workers import WORKERS
from tri24es.services import (
    AttemptProcess,
    NotFound,
    ResetRefused,
    ServiceError,
    Services,
    StaleAttempt,
    TaskSpec,
)
from tri24es.timeutil import from_us

T0 = 1_800_000_000_000_000
LEASE_S = 30
SECOND = 1_000_000


class Clock:
    """Integer microseconds that move only when the test says so."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(new_url: Callable[[], str], clock: Clock) -> Iterator[EventStore]:
    s = eventlog.open_store(new_url(), clock=clock)
    yield s
    assert verify(s) == []  # after every scenario: the inline views equal a fresh replay
    with s.snapshot() as tx:  # and every view's checkpoint is the head: none is behind
        found = connection_of(tx).execute("SELECT min(position), max(position) FROM checkpoints")
        assert found.fetchone() == (s.head(), s.head())
    s.close()


@pytest.fixture
def svc(store: EventStore, clock: Clock) -> Services:
    return Services(store, clock=clock, lease_seconds=LEASE_S, actor="test")


def task(svc: Services, store: EventStore, task_id: str) -> TaskRow:
    with store.transaction() as tx:
        row = QUEUE.load_by_id(connection_of(tx), task_id)
    assert row is not None
    return row


def worker(store: EventStore, worker_id: str) -> WorkerRow:
    with store.transaction() as tx:
        row = WORKERS.load_by_id(connection_of(tx), worker_id)
    assert row is not None
    return row


def start(svc: Services, worker_id: str, **filters: str | None) -> None:
    svc.start_worker(worker_id, pid=1000, pid_start_time=1, host="test", **filters)


def submit(svc: Services, task_id: str, **fields: object) -> TaskRow:
    row, new = svc.submit(TaskSpec(task_id, f"title {task_id}", **fields))  # type: ignore[arg-type]
    assert new
    return row


def activation() -> ev.KillSwitchActivated:
    return ev.KillSwitchActivated(
        reason="over budget", rate=Decimal("5"), daily=Decimal("50"),
        rate_limit=Decimal("1"), daily_limit=Decimal("40"),
    )


# --- submit and claim --------------------------------------------------------------------


def test_submit_is_idempotent_by_id(svc: Services, store: EventStore) -> None:
    first = submit(svc, "a", priority=Priority.HIGH)
    again, new = svc.submit(TaskSpec("a", "another title", priority=Priority.LOW))
    assert not new
    assert again == first
    assert len(store.read_stream("task-a")) == 1


def test_claims_go_by_priority_then_submission_order(svc: Services) -> None:
    order = [("l1", Priority.LOW), ("m1", Priority.MEDIUM), ("c1", Priority.CRITICAL),
             ("h1", Priority.HIGH), ("l2", Priority.LOW), ("c2", Priority.CRITICAL),
             ("m2", Priority.MEDIUM), ("h2", Priority.HIGH)]
    for task_id, priority in order:
        submit(svc, task_id, priority=priority)
    start(svc, "w")
    claimed = []
    while (claim := svc.claim("w")) is not None:
        assert claim.attempt == 1
        claimed.append(claim.task_id)
        svc.complete(claim.task_id, "w", claim.attempt)
    assert claimed == ["c1", "c2", "h1", "h2", "m1", "m2", "l1", "l2"]


def test_claim_sets_the_lease_from_the_clock(svc: Services, store: EventStore,
                                             clock: Clock) -> None:
    submit(svc, "a")
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    assert claim.lease_expires_at == from_us(T0 + LEASE_S * SECOND)
    row = task(svc, store, "a")
    assert (row.state, row.worker, row.attempt, row.lease_expires_at) == (
        "running", "w", 1, T0 + LEASE_S * SECOND,
    )
    assert claim.row == row
    w = worker(store, "w")
    assert (w.state, w.current_task, w.current_attempt) == ("busy", "a", 1)
    assert svc.claim("w") is None  # a busy worker does not claim a second task
    clock.advance(10)
    assert svc.renew_lease("a", "w", 1) == from_us(T0 + (10 + LEASE_S) * SECOND)
    assert task(svc, store, "a").lease_expires_at == T0 + (10 + LEASE_S) * SECOND


@pytest.mark.parametrize("field", ["shard", "model", "type"])
def test_filters_a_set_task_field_needs_the_same_worker_value(
    svc: Services, store: EventStore, field: str
) -> None:
    submit(svc, "x-only", **{field: "x"})
    submit(svc, "any")
    submit(svc, "y-only", **{field: "y"})
    start(svc, "plain")
    start(svc, "wx", **{field: "x"})
    start(svc, "wy", **{field: "y"})
    start(svc, "wz", **{field: "z"})

    first = svc.claim("plain")
    assert first is not None
    assert first.task_id == "any"  # a worker without the filter takes only unfiltered tasks
    svc.complete("any", "plain", 1)
    assert svc.claim("plain") is None
    assert svc.claim("wz") is None
    got_x, got_y = svc.claim("wx"), svc.claim("wy")
    assert got_x is not None
    assert got_y is not None
    assert (got_x.task_id, got_y.task_id) == ("x-only", "y-only")


def test_an_unfiltered_task_goes_to_a_filtered_worker(svc: Services) -> None:
    submit(svc, "a")
    start(svc, "w", shard="s", model="m", type="t")
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "a"


def test_a_reset_is_refused_while_the_breach_holds_and_recorded_with_its_terms(
        svc: Services, store: EventStore, clock: Clock) -> None:
    limits = BudgetLimits(daily_limit=Decimal(10), rate_limit=Decimal(1), timezone=UTC)
    for amount in ("2.75", "2.75", "6"):
        svc.record_spend(ev.SpendRecorded(amount=Decimal(amount),
                                          occurred_at=from_us(clock.now)))
    assert svc.activate_killswitch(activation())
    for terms in ({}, {"fresh_window": True}, {"allow_today": Decimal("1.5")}):
        with pytest.raises(ResetRefused):
            svc.reset_killswitch(by="me", reason="r", limits=limits, **terms)  # type: ignore[arg-type]
    assert len(store.read_stream(KILL_SWITCH_STREAM)) == 1  # nothing recorded
    assert svc.reset_killswitch(by="me", reason="r", limits=limits, fresh_window=True,
                                allow_today=Decimal(2))
    with store.snapshot() as tx:
        reading = reads.read_budget(connection_of(tx), limits, clock.now)
    assert (reading.rate, reading.daily, reading.allowance) == (0, Decimal("11.5"), 2)
    assert reading.killswitch.rate_since == reading.reset_at == clock.now
    clock.advance(301)
    with store.snapshot() as tx:  # a whole window later, the window is whole again
        assert reads.read_budget(connection_of(tx), limits, clock.now).reset_at is None


def test_a_claim_records_the_keeper_of_its_attempt_in_its_own_transaction(
    svc: Services, store: EventStore,
) -> None:
    """An idle worker's claim records the process its attempt will run under (TaskStarted)
    in the claim's transaction, before the agent runs: one commit, the history it carries
    read before that record (the attempts before this one), the task's row showing it."""
    submit(svc, "a")
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    svc.started("a", "w", 1, pid=11, pgid=11, pid_start_time=5, key="k1")
    svc.requeue("a", RequeueReason.LEASE_LOST, by="w", attempt=1)
    head = store.head()
    claim = svc.claim("w", with_history=True,
                      process=AttemptProcess(pid=22, pgid=22, pid_start_time=6, key="k2"))
    assert claim is not None
    assert claim.history is not None
    assert [(s.attempt, s.pid) for s in claim.history.started] == [(1, 11)]
    new = list(store.read_all(head))
    assert [r.type for r in new] == [ev.TaskClaimed.topic, ev.TaskStarted.topic]
    started = ev.decode_event(new[1])
    assert isinstance(started, ev.TaskStarted)
    assert (started.attempt, started.worker, started.pid, started.pgid, started.pid_start_time,
            started.key, started.host) == (2, "w", 22, 22, 6, "k2", svc.metadata.host)
    assert task(svc, store, "a").pid == 22
    assert [s.pid for s in svc.history("a").started] == [11, 22]
    svc.complete("a", "w", 2)  # the attempt holds the task as after a separate record
    head = store.head()
    assert svc.claim("w", process=AttemptProcess(33, 33)) is None  # nothing claimed:
    assert store.head() == head  # nothing recorded


def test_claim_refused_while_the_kill_switch_is_active(svc: Services, store: EventStore) -> None:
    submit(svc, "a")
    start(svc, "w")
    assert svc.activate_killswitch(activation())
    assert not svc.activate_killswitch(activation())  # exactly once
    assert len(store.read_stream(KILL_SWITCH_STREAM)) == 1
    assert svc.claim("w") is None
    assert task(svc, store, "a").state == "queued"
    assert svc.reset_killswitch(by="me", reason="raised the limit")
    assert not svc.reset_killswitch(by="me", reason="again")
    with store.transaction() as tx:
        assert not read_killswitch(connection_of(tx)).active
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "a"


def test_a_completion_that_claims_next_reads_the_switch_and_the_worker_as_they_stand(
    svc: Services, store: EventStore
) -> None:
    """complete(claim_next=True) reads the task, the worker and the kill switch ahead, in
    one round trip on PostgreSQL: what it reads is what the claim would have read."""
    for name in "abc":
        submit(svc, name)
    start(svc, "w")
    first = svc.claim("w")
    assert first is not None
    assert first.task_id == "a"
    assert svc.activate_killswitch(activation())
    assert svc.complete("a", "w", 1, claim_next=True) is None  # the switch is on
    assert (task(svc, store, "a").state, worker(store, "w").current_task) == ("completed", None)
    assert svc.reset_killswitch(by="me", reason="raised the limit")
    second = svc.claim("w")
    assert second is not None
    assert second.task_id == "b"
    assert svc.request_pause("w", by="me")
    assert svc.complete("b", "w", 1, claim_next=True) is None  # a pause was asked
    assert task(svc, store, "c").state == "queued"
    assert worker(store, "w").current_task is None
    assert svc.request_resume("w")
    third = svc.claim("w")
    assert third is not None
    assert third.task_id == "c"
    assert worker(store, "w").current_task == "c"


def test_claim_refused_for_paused_or_pause_requested_worker(
    svc: Services, store: EventStore
) -> None:
    submit(svc, "a")
    start(svc, "w")
    assert svc.request_pause("w", by="me")
    assert not svc.request_pause("w")  # already asked
    assert worker(store, "w").state == "idle"
    assert svc.claim("w") is None
    assert svc.paused("w")
    assert worker(store, "w").state == "paused"
    assert svc.claim("w") is None
    assert svc.request_resume("w")
    assert svc.claim("w") is None  # still paused until the worker says it resumed
    assert svc.resumed("w")
    assert worker(store, "w").state == "idle"
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "a"


def test_claim_refused_once_stop_was_requested(svc: Services) -> None:
    submit(svc, "a")
    start(svc, "w")
    assert svc.request_stop("w")
    assert svc.claim("w") is None


def test_unknown_worker_or_task(svc: Services) -> None:
    with pytest.raises(NotFound):
        svc.claim("nobody")
    with pytest.raises(NotFound):
        svc.cancel("nothing")
    with pytest.raises(NotFound):
        svc.complete("nothing", "w", 1)


def test_starting_a_live_worker_again_is_illegal(svc: Services) -> None:
    start(svc, "w")
    with pytest.raises(IllegalTransition):
        start(svc, "w")


def test_a_process_found_gone_is_not_its_ids_next_incarnation(svc: Services,
                                                                store: EventStore) -> None:
    """Two processes start a worker id whose last process died: both find it gone; the
    first declares it lost and registers. The second's declaration must not reach the
    first (alive): it would register too, and two live processes would claim as one id."""
    start(svc, "w")  # pid 1000, started at 1: then gone
    assert svc.mark_lost("w", by="w", process=(1000, 1))
    svc.start_worker("w", pid=2000, pid_start_time=2, host="test")
    assert not svc.mark_lost("w", by="w", process=(1000, 1))  # the second, late
    assert (worker(store, "w").state, worker(store, "w").pid) == ("idle", 2000)
    with pytest.raises(IllegalTransition):
        svc.start_worker("w", pid=3000, pid_start_time=3, host="test")


# --- stale attempts ----------------------------------------------------------------------


def test_a_stale_attempt_cannot_complete_or_renew(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a")
    start(svc, "w1")
    start(svc, "w2")
    first = svc.claim("w1")
    assert first is not None
    clock.advance(LEASE_S + 1)
    assert svc.expire_leases() == (["a"], [])
    row = task(svc, store, "a")
    assert (row.state, row.worker, row.attempt) == ("queued", None, 1)
    assert worker(store, "w1").state == "idle"
    second = svc.claim("w2")
    assert second is not None
    assert (second.task_id, second.attempt) == ("a", 2)

    with pytest.raises(StaleAttempt):
        svc.complete("a", "w1", 1)
    with pytest.raises(StaleAttempt):
        svc.renew_lease("a", "w1", 1)
    with pytest.raises(StaleAttempt):
        svc.fail("a", "w1", 1, "late")
    with pytest.raises(StaleAttempt):
        svc.complete("a", "w2", 1)  # the right worker, the wrong attempt
    with pytest.raises(StaleAttempt):
        svc.requeue("a", RequeueReason.MANUAL, attempt=1)

    svc.complete("a", "w2", 2)
    assert task(svc, store, "a").state == "completed"
    with pytest.raises(StaleAttempt):
        svc.complete("a", "w2", 2)  # not twice
    assert len(list(store.read_all(types=["TaskCompleted"]))) == 1


# --- failures and retries ----------------------------------------------------------------


def test_fail_requeues_until_attempts_run_out_then_dead_letters(
    svc: Services, store: EventStore
) -> None:
    submit(svc, "a", max_retries=2)
    start(svc, "w")
    states = []
    for attempt in (1, 2, 3):
        claim = svc.claim("w")
        assert claim is not None
        assert claim.attempt == attempt
        states.append(svc.fail("a", "w", attempt, f"boom {attempt}"))
    assert states == ["queued", "queued", "failed"]
    row = task(svc, store, "a")
    assert (row.state, row.attempt, row.last_error, row.worker) == ("failed", 3, "boom 3", None)
    assert svc.claim("w") is None
    assert worker(store, "w").state == "idle"
    types = [e.type for e in store.read_stream("task-a")]
    assert types.count("TaskRequeued") == 2
    assert types[-2:] == ["TaskFailed", "TaskDeadLettered"]


def test_a_non_retryable_failure_dead_letters_at_once(svc: Services, store: EventStore) -> None:
    submit(svc, "a", max_retries=5)
    start(svc, "w")
    assert svc.claim("w") is not None
    assert svc.fail("a", "w", 1, "bad input", retryable=False) == "failed"


def test_retry_of_a_failed_task_gives_a_fresh_budget(svc: Services, store: EventStore) -> None:
    submit(svc, "a", max_retries=0)
    start(svc, "w")
    with pytest.raises(ServiceError):
        svc.retry("a")  # only failed tasks retry
    assert svc.claim("w") is not None
    assert svc.fail("a", "w", 1, "boom") == "failed"
    svc.retry("a", by="me")
    row = task(svc, store, "a")
    assert (row.state, row.attempt, row.attempts_left()) == ("queued", 1, 1)
    claim = svc.claim("w")
    assert claim is not None
    assert claim.attempt == 2
    assert svc.fail("a", "w", 2, "boom again") == "failed"  # max_retries=0: one claim per budget
    svc.retry("a")
    claim = svc.claim("w")
    assert claim is not None
    svc.complete("a", "w", claim.attempt)
    assert task(svc, store, "a").state == "completed"


def test_cancel_queued_and_running_but_not_completed(svc: Services, store: EventStore) -> None:
    submit(svc, "q")
    submit(svc, "r")
    start(svc, "w")
    svc.cancel("q", by="me", reason="not needed")
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "r"
    svc.cancel("r")
    assert (task(svc, store, "q").state, task(svc, store, "r").state) == ("cancelled",) * 2
    w = worker(store, "w")
    assert (w.state, w.current_task) == ("idle", None)
    with pytest.raises(StaleAttempt):
        svc.complete("r", "w", 1)
    with pytest.raises(IllegalTransition):
        svc.cancel("r")


def test_manual_requeue_of_a_running_task(svc: Services, store: EventStore) -> None:
    submit(svc, "a")
    start(svc, "w")
    assert svc.claim("w") is not None
    svc.requeue("a", RequeueReason.WORKER_STOPPED, by="me", attempt=1)
    assert task(svc, store, "a").state == "queued"
    assert worker(store, "w").state == "idle"
    with pytest.raises(IllegalTransition):
        svc.requeue("a", RequeueReason.MANUAL)  # a queued task cannot be requeued


# --- leases and silent workers -----------------------------------------------------------


def test_expire_leases_requeues_expired_tasks_and_marks_silent_workers_lost(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a")
    submit(svc, "b")
    start(svc, "w1")
    start(svc, "w2")
    assert svc.claim("w1") is not None
    clock.advance(20)
    assert svc.claim("w2") is not None
    clock.advance(15)  # w1's lease (30 s) ran out, w2's not
    assert svc.expire_leases() == (["a"], [])
    assert task(svc, store, "a").state == "queued"
    assert task(svc, store, "b").state == "running"
    svc.heartbeat("w2")
    clock.advance(30)
    tasks, lost = svc.expire_leases(silent_after_us=40 * SECOND)
    assert tasks == ["b"]
    assert lost == ["w1"]  # silent for 65 s; w2 beat 30 s ago
    assert worker(store, "w1").state == "lost"
    assert worker(store, "w2").state == "idle"
    assert svc.claim("w1") is None
    start(svc, "w1")  # a lost worker may register again
    assert worker(store, "w1").state == "idle"


def test_a_lease_expiring_on_the_last_attempt_dead_letters(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_retries=0)
    start(svc, "w")
    assert svc.claim("w") is not None
    clock.advance(LEASE_S + 1)
    assert svc.expire_leases() == (["a"], [])
    row = task(svc, store, "a")
    assert (row.state, row.last_error) == ("failed", "lease expired")


def test_a_renewed_lease_does_not_expire(svc: Services, store: EventStore, clock: Clock) -> None:
    submit(svc, "a")
    start(svc, "w")
    assert svc.claim("w") is not None
    clock.advance(LEASE_S - 1)
    svc.renew_lease("a", "w", 1)
    clock.advance(LEASE_S - 1)
    assert svc.expire_leases() == ([], [])
    svc.complete("a", "w", 1)


# --- spend -------------------------------------------------------------------------------


def spend(amount: str, at: datetime) -> ev.SpendRecorded:
    return ev.SpendRecorded(amount=Decimal(amount), occurred_at=at, model="m", source="cli")


def test_record_spend_counts_an_event_id_once(svc: Services, store: EventStore) -> None:
    at = from_us(T0)
    assert svc.record_spend(spend("0.1", at), event_id="line-1")
    assert not svc.record_spend(spend("0.1", at), event_id="line-1")
    assert svc.record_spend(spend("0.2", at), event_id="line-2")
    assert svc.record_spend(spend("0.3", at))
    assert svc.record_spend(spend("0.3", at))  # no id: every call counts
    with store.transaction() as tx:
        conn = connection_of(tx)
        rows = conn.execute("SELECT count(*), sum(amount_units) FROM spend").fetchone()
        buckets = conn.execute("SELECT sum(amount_units), sum(events) FROM spend_buckets")
        bucket_sum = buckets.fetchone()
    assert rows == (4, 9 * 10**9)
    assert bucket_sum == (9 * 10**9, 4)


def test_a_worker_resumed_while_holding_its_task_is_still_busy_with_it(
    svc: Services, store: EventStore
) -> None:
    submit(svc, "a")
    submit(svc, "b")
    start(svc, "w")
    assert svc.claim("w") is not None
    assert svc.paused("w")  # paused mid-task: it still holds "a"
    w = worker(store, "w")
    assert (w.state, w.current_task) == ("paused", "a")
    assert svc.resumed("w")
    w = worker(store, "w")
    assert (w.state, w.current_task) == ("busy", "a")
    assert svc.claim("w") is None  # one task at a time
    assert task(svc, store, "b").state == "queued"


def test_rows_read_in_a_transaction_are_the_rows_its_events_change(
    svc: Services, store: EventStore
) -> None:
    """The views reuse the rows a command read (fewer statements): they must stay the rows
    the tables hold, and nothing of a rolled-back transaction may outlive it."""
    svc.submit(TaskSpec("a", "A"))
    svc.submit(TaskSpec("b", "B"))
    start(svc, "w1")
    with store.transaction() as tx:
        conn = connection_of(tx)
        claim = svc.claim("w1")
        assert claim is not None
        assert QUEUE.load_by_id(conn, "a") is claim.row  # the object the views changed
        fresh = conn.execute("SELECT state, worker, attempt FROM queue WHERE task_id = 'a'")
        assert fresh.fetchone() == ("running", "w1", 1)
        assert worker(store, "w1").current_task == "a"
    claimed: list[str] = []

    def complete_then_fail() -> None:
        with store.transaction():
            claim = svc.complete("a", "w1", 1, claim_next=True)
            claimed.append(claim.task_id if claim else "")
            raise RuntimeError("roll it back")

    with pytest.raises(RuntimeError):
        complete_then_fail()
    assert claimed == ["b"]
    assert task(svc, store, "a").state == "running"
    assert task(svc, store, "b").state == "queued"
    assert worker(store, "w1").current_task == "a"
    next_claim = svc.complete("a", "w1", 1, claim_next=True)
    assert next_claim is not None
    assert (next_claim.task_id, task(svc, store, "a").state) == ("b", "completed")
