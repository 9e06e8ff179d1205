"""Scheduling in the claim, on a real store of each backend with a clock the test controls:
retry backoff, delays, dependencies, changes to waiting tasks, fleet-wide caps."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

import eventlog
from eventlog import EventStore
from tests.integration.test_services import LEASE_S, SECOND, Clock, start, submit, task
from tri24es import events as ev
from tri24es.events import Backoff
from tri24es.names import (
    STOP_REASONS,
    LimitKey,
    Priority,
    RequeueReason,
    schedule_stream,
    task_stream,
)
from tri24es.projections import connection_of, reads
from tri24es.projections.upkeep import rebuild, verify
from tri24es.services import DependencyError, NotFound, ScheduleExists, Services, TaskSpec
from tri24es.services.tasks import NotQueued
from tri24es.timeutil import from_us, to_us

FLEET = Backoff(base_s=10, cap_s=60)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(new_url: Callable[[], str], clock: Clock) -> Iterator[EventStore]:
    s = eventlog.open_store(new_url(), clock=clock)
    yield s
    assert verify(s) == []  # after every scenario: the inline views equal a fresh replay
    s.close()


@pytest.fixture
def svc(store: EventStore, clock: Clock) -> Services:
    return Services(store, clock=clock, lease_seconds=LEASE_S, actor="test",
                    retry_backoff=FLEET, rng=random.Random(7))


def fail_once(svc: Services, task_id: str, worker: str = "w") -> ev.TaskRequeued:
    claim = svc.claim(worker)
    assert claim is not None
    assert claim.task_id == task_id
    svc.fail(task_id, worker, claim.attempt, "boom")
    last = svc.store.read_stream(task_stream(task_id))[-1]
    requeued = ev.decode_event(last)
    assert isinstance(requeued, ev.TaskRequeued)
    return requeued


def waits(store: EventStore, now: int) -> list[str]:
    with store.snapshot() as tx:
        return [str(w) for w in reads.waiting(connection_of(tx), now)]


# --- backoff -----------------------------------------------------------------------------


def test_a_failed_attempt_waits_its_backoff_doubling_up_to_the_cap(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_retries=5)
    start(svc, "w")
    waited = []
    for failures in range(1, 5):
        requeued = fail_once(svc, "a")
        assert requeued.reason is RequeueReason.RETRY
        assert requeued.not_before is not None
        wait = to_us(requeued.not_before) - clock.now
        step = min(10 * 2 ** (failures - 1), 60) * SECOND
        assert step // 2 <= wait <= step, (failures, wait)  # jittered, never sooner than half
        waited.append(wait)
        assert task(svc, store, "a").not_before == to_us(requeued.not_before)
        assert svc.claim("w") is None  # not before its time
        assert not svc.claimable("w")
        assert svc.next_due() == to_us(requeued.not_before)
        assert waits(store, clock.now) == [
            f"1 waiting for their time: a delay or a retry's backoff; the first at "
            f"{from_us(to_us(requeued.not_before)).isoformat().replace('+00:00', 'Z')}"]
        clock.now = to_us(requeued.not_before) - 1
        assert svc.claim("w") is None
        clock.now += 1
        assert svc.claimable("w")  # the loop's next claim takes it, at its time
    assert waited[3] <= 60 * SECOND


def test_stops_that_are_not_failures_are_not_delayed(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a")
    start(svc, "w")
    for reason in sorted(STOP_REASONS):
        claim = svc.claim("w")
        assert claim is not None, reason
        svc.requeue("a", reason, attempt=claim.attempt)
        assert task(svc, store, "a").not_before is None
    assert svc.claim("w") is not None  # at once, the same instant


def test_a_tasks_own_backoff_wins_and_zero_retries_at_once(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "own", retry_backoff=Backoff(base_s=100, cap_s=100))
    submit(svc, "now", retry_backoff=Backoff(base_s=0, cap_s=0))
    start(svc, "w")
    requeued = fail_once(svc, "own")
    assert requeued.not_before is not None
    assert 50 * SECOND <= to_us(requeued.not_before) - clock.now <= 100 * SECOND
    assert task(svc, store, "own").backoff() == Backoff(base_s=100, cap_s=100)
    assert fail_once(svc, "now").not_before is None
    assert svc.claim("w") is not None


def test_an_expired_lease_is_backed_off_and_a_manual_retry_is_not(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_retries=1)
    start(svc, "w")
    assert svc.claim("w") is not None
    clock.advance(LEASE_S + 1)
    svc.expire_leases()
    row = task(svc, store, "a")
    assert row.state == "queued"
    assert row.not_before is not None
    assert row.not_before > clock.now
    clock.now = row.not_before
    start(svc, "w2")
    claim = svc.claim("w2")
    assert claim is not None
    svc.fail("a", "w2", claim.attempt, "boom")  # the last attempt: dead-lettered
    assert task(svc, store, "a").state == "failed"
    svc.retry("a", by="test")
    assert task(svc, store, "a").not_before is None
    assert svc.claimable("w")


def test_backoff_is_in_the_log_so_a_replay_gives_the_same_time(
    new_url: Callable[[], str], clock: Clock
) -> None:
    store = eventlog.open_store(new_url(), clock=clock)
    try:
        svc = Services(store, clock=clock, lease_seconds=LEASE_S, retry_backoff=FLEET)
        submit(svc, "a")
        start(svc, "w")
        requeued = fail_once(svc, "a")
        assert requeued.not_before is not None
        assert verify(store) == []
        rebuild(store)
        assert task(svc, store, "a").not_before == to_us(requeued.not_before)
    finally:
        store.close()



# --- delays ------------------------------------------------------------------------------


def test_a_delayed_task_is_claimed_at_its_time_and_others_go_first(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    later = clock.now + 60 * SECOND
    submit(svc, "later", priority=Priority.CRITICAL, not_before=from_us(later))
    submit(svc, "now", priority=Priority.LOW)
    start(svc, "w")
    assert task(svc, store, "later").not_before == later
    assert svc.next_due() == later
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "now"  # the critical one waits for its time
    svc.complete("now", "w", 1)
    assert svc.claim("w") is None
    assert waits(store, clock.now)[0].startswith("1 waiting for their time")
    clock.now = later
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "later"
    assert svc.next_due() is None
    assert waits(store, clock.now) == []


# --- dependencies ------------------------------------------------------------------------


def test_a_task_is_claimed_once_all_its_dependencies_completed(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "build")
    submit(svc, "lint")
    submit(svc, "deploy", priority=Priority.CRITICAL, after=("build", "lint"))
    assert task(svc, store, "deploy").deps_open == 2
    assert task(svc, store, "build").waiting_tasks == ["deploy"]
    start(svc, "w")
    for expected in ("build", "lint"):
        assert waits(store, clock.now) == ["1 waiting for their dependencies: not completed yet"]
        claim = svc.claim("w")
        assert claim is not None
        assert claim.task_id == expected  # the critical one waits for them
        svc.complete(expected, "w", 1)
    assert task(svc, store, "deploy").deps_open == 0
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "deploy"


def test_a_completed_dependency_counts_at_submit(svc: Services, store: EventStore) -> None:
    submit(svc, "build")
    start(svc, "w")
    assert svc.claim("w") is not None
    svc.complete("build", "w", 1)
    submit(svc, "deploy", after=("build",))
    assert task(svc, store, "deploy").deps_open == 0
    assert svc.claimable("w")


def test_a_failed_dependency_blocks_the_chain_and_its_retry_unblocks_it(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "build", max_retries=0)
    submit(svc, "test", after=("build",))
    submit(svc, "deploy", after=("test",))
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    svc.fail("build", "w", 1, "boom")
    assert task(svc, store, "build").state == "failed"
    assert task(svc, store, "test").blocked == "dependency build failed"
    assert task(svc, store, "deploy").blocked == "dependency test is blocked"
    blocked = [ev.decode_event(r) for r in store.read_all(types=[ev.TaskBlocked.topic])]
    assert [(e.task_id, e.dependency) for e in blocked] == [  # type: ignore[attr-defined]
        ("test", "build"), ("deploy", "test")]
    assert waits(store, clock.now) == [
        "1 waiting for their dependencies: blocked: dependency build failed",
        "1 waiting for their dependencies: blocked: dependency test is blocked"]
    submit(svc, "late", after=("deploy",))  # blocked at once: its dependency is
    assert task(svc, store, "late").blocked == "dependency deploy is blocked"
    svc.retry("build", by="test")
    for task_id in ("test", "deploy", "late"):
        assert task(svc, store, task_id).blocked is None
    assert svc.claim("w") is not None  # build again; the rest still waits for it
    svc.complete("build", "w", 2)
    claim = svc.claim("w")
    assert claim is not None
    assert claim.task_id == "test"


def test_a_cancelled_dependency_blocks_and_another_bad_one_keeps_it_blocked(
    svc: Services, store: EventStore
) -> None:
    submit(svc, "a", max_retries=0)
    submit(svc, "b")
    submit(svc, "c", after=("a", "b"))
    svc.cancel("b", by="test")
    assert task(svc, store, "c").blocked == "dependency b was cancelled"
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    svc.fail("a", "w", 1, "boom")
    svc.retry("a", by="test")
    assert task(svc, store, "c").blocked == "dependency b was cancelled"  # b still is


@pytest.mark.parametrize(("after", "error"), [
    (("nope",), "task 'x': unknown dependency 'nope'"),
    (("x",), "task 'x': a task cannot wait for itself"),
])
def test_unknown_and_self_dependencies_are_refused_and_nothing_is_written(
    svc: Services, store: EventStore, after: tuple[str, ...], error: str
) -> None:
    head = store.head()
    with pytest.raises(DependencyError, match=error):
        svc.submit(TaskSpec("x", "x", after=after))
    assert store.head() == head


def test_a_batch_is_submitted_in_dependency_order_and_a_cycle_is_refused(
    svc: Services, store: EventStore
) -> None:
    batch = [TaskSpec("deploy", "d", after=("test",)), TaskSpec("test", "t", after=("build",)),
             TaskSpec("build", "b")]
    assert svc.submit_many(batch) == ["build", "test", "deploy"]
    assert task(svc, store, "deploy").deps_open == 1
    head = store.head()
    with pytest.raises(DependencyError, match="dependency cycle"):
        svc.submit_many([TaskSpec("p", "p", after=("q",)), TaskSpec("q", "q", after=("p",))])
    assert store.head() == head


# --- changing a waiting task -------------------------------------------------------------


def test_a_queued_task_is_changed_by_an_event_and_claimed_by_its_new_place(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "first")
    submit(svc, "second", not_before=from_us(clock.now + 3600 * SECOND))
    submit(svc, "gpu", shard="gpu")
    row = svc.update(ev.TaskUpdated(task_id="second", by="test", priority=Priority.CRITICAL,
                                    not_before=from_us(clock.now), title="Second, sooner",
                                    max_retries=7))
    assert (row.priority, row.not_before, row.title, row.max_retries) == (
        0, clock.now, "Second, sooner", 7)
    svc.update(ev.TaskUpdated(task_id="gpu", shard=""))  # any shard now
    assert task(svc, store, "gpu").shard is None
    start(svc, "w")
    order = []
    while (claim := svc.claim("w")) is not None:
        order.append(claim.task_id)
        svc.complete(claim.task_id, "w", claim.attempt)
    assert order == ["second", "first", "gpu"]
    with pytest.raises(NotQueued, match="task 'first' is completed: only a queued task"):
        svc.update(ev.TaskUpdated(task_id="first", priority=Priority.LOW))
    updates = [r for r in store.read_all(types=[ev.TaskUpdated.topic])]
    assert len(updates) == 2


# --- fleet-wide caps ---------------------------------------------------------------------


def test_a_cap_counts_a_tasks_field_or_else_its_workers(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    assert svc.set_limit(LimitKey.MODEL, "claude", 2, by="test")
    assert not svc.set_limit(LimitKey.MODEL, "claude", 2, by="test")  # no second event
    submit(svc, "named", model="claude")
    submit(svc, "open")
    submit(svc, "also-named", model="claude")
    submit(svc, "other", model="codex")
    start(svc, "c1", model="claude")
    start(svc, "c2", model="claude")
    start(svc, "c3", model="claude")
    start(svc, "any")
    first, second = svc.claim("c1"), svc.claim("c2")
    assert first is not None
    assert second is not None
    assert (first.task_id, second.task_id) == ("named", "open")  # open: counts as claude
    assert svc.claim("c3") is None  # the cap is reached
    assert svc.claim("any") is None  # "other" is for codex workers, "also-named" capped
    with store.snapshot() as tx:
        assert reads.limits_in_use(connection_of(tx)) == [("model", "claude", 2, 2)]
    assert waits(store, clock.now)[0] == (
        "1 waiting for model=claude: its fleet-wide cap of 2 is in use (2 running)")
    svc.complete("open", "c2", 1)
    claim = svc.claim("c3")
    assert claim is not None
    assert claim.task_id == "also-named"
    assert svc.remove_limit(LimitKey.MODEL, "claude", by="test")
    assert not svc.remove_limit(LimitKey.MODEL, "claude", by="test")


def test_a_cap_of_zero_holds_every_such_task_until_raised(
    svc: Services, store: EventStore
) -> None:
    svc.set_limit(LimitKey.SHARD, "gpu", 0, by="test")
    submit(svc, "train", shard="gpu")
    submit(svc, "web", shard="web")
    start(svc, "g", shard="gpu")
    assert svc.claim("g") is None
    svc.set_limit(LimitKey.SHARD, "gpu", 1, by="test")
    claim = svc.claim("g")
    assert claim is not None
    assert claim.task_id == "train"


# --- recurring tasks ---------------------------------------------------------------------


def nightly(**fields: object) -> ev.ScheduleAdded:
    return ev.ScheduleAdded(name="nightly", cron="0 3 * * *", title="Bump dependencies",
                            by="test", model="claude", **fields)  # type: ignore[arg-type]


def test_a_schedule_submits_its_latest_slot_once_with_an_id_of_the_slot(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    clock.now = to_us(datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    svc.add_schedule(nightly(priority=Priority.HIGH))
    assert svc.fire_schedules() == ([], to_us(datetime(2026, 12, 1, 3, tzinfo=UTC)))
    clock.now = to_us(datetime(2026, 12, 1, 3, 0, 30, tzinfo=UTC))
    fired, coming = svc.fire_schedules()
    assert [s.task_id for s in fired] == ["nightly-20261201T0300Z"]
    assert coming == to_us(datetime(2026, 12, 2, 3, tzinfo=UTC))
    row = task(svc, store, "nightly-20261201T0300Z")
    assert (row.title, row.model, row.priority) == ("Bump dependencies", "claude", 1)
    assert svc.fire_schedules()[0] == []  # the same slot: nothing new
    other = Services(store, clock=clock, actor="other")  # a second scheduler
    assert other.fire_schedules()[0] == []
    clock.now = to_us(datetime(2026, 12, 4, 9, 0, tzinfo=UTC))  # down for three nights
    assert [s.task_id for s in other.fire_schedules()[0]] == ["nightly-20261204T0300Z"]
    svc.remove_schedule("nightly", by="test")
    clock.now = to_us(datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    assert svc.fire_schedules() == ([], None)
    assert svc.schedules() == []


def test_a_schedule_name_is_taken_once_and_bad_ones_are_refused(
    svc: Services, store: EventStore
) -> None:
    svc.add_schedule(nightly())
    with pytest.raises(ScheduleExists, match="schedule 'nightly' exists: remove it first"):
        svc.add_schedule(nightly())
    head = store.head()
    with pytest.raises(ValueError, match="bad cron expression"):
        svc.add_schedule(ev.ScheduleAdded(name="x", cron="0 99 * * *", title="x"))
    with pytest.raises(NotFound, match="no schedule 'y'"):
        svc.remove_schedule("y", by="test")
    assert store.head() == head
    [(row, added)] = svc.schedules()
    assert (row.name, row.cron, added.title) == ("nightly", "0 3 * * *", "Bump dependencies")


def test_a_cron_that_names_no_date_is_refused_and_one_in_the_log_never_fires(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    """`0 3 31 2 *` (31 February) was taken; then every fire_schedules, so the queue watcher
    (a daemon), and `schedule list` ended in croniter's traceback. It is refused now, and one
    already in the log (added before) is skipped, the others firing as before."""
    clock.now = to_us(datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    never = ev.ScheduleAdded(name="never", cron="0 3 31 2 *", title="x", by="test")
    with pytest.raises(ValueError, match="it names no date to come"):
        svc.add_schedule(never)
    with pytest.raises(ValueError, match="expected 5 fields"):
        svc.add_schedule(ev.ScheduleAdded(name="x", cron="0 0 3 * * * 2030", title="x"))
    stream = schedule_stream(never.name)
    with store.transaction() as tx:  # as an older version recorded it, unchecked
        svc._append(connection_of(tx), tx, stream, [never], tx.stream_version(stream))
    svc.add_schedule(nightly())
    clock.now = to_us(datetime(2026, 12, 1, 3, 0, 30, tzinfo=UTC))
    fired, coming = svc.fire_schedules()
    assert [spec.task_id for spec in fired] == ["nightly-20261201T0300Z"]
    assert coming == to_us(datetime(2026, 12, 2, 3, tzinfo=UTC))
    leap = ev.ScheduleAdded(name="leap", cron="0 0 29 2 *", title="x", by="test")
    svc.add_schedule(leap)  # once in four years is a date to come


# --- models paused -----------------------------------------------------------------------


def test_a_paused_model_is_not_claimed_until_its_pause_ends_or_is_lifted(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "named", model="claude")
    submit(svc, "open")
    submit(svc, "codex", model="codex")
    start(svc, "c", model="claude")
    start(svc, "x", model="codex")
    end = clock.now + 600 * SECOND
    svc.pause_model("claude", until=from_us(end), by="test", reason="usage limit")
    assert svc.claim("c") is None  # "open" counts under its worker's model too
    claim = svc.claim("x")
    assert claim is not None
    assert claim.task_id == "open"  # other models keep running; under codex, open runs
    assert svc.next_due() == end
    assert waits(store, clock.now)[0] == (
        f"1 waiting for model=claude: the model is paused until "
        f"{from_us(end).isoformat().replace('+00:00', 'Z')} (usage limit)")
    clock.now = end  # the pause ends by itself
    claim = svc.claim("c")
    assert claim is not None
    assert claim.task_id == "named"
    svc.complete("named", "c", 1)
    svc.pause_model("claude", until=None, by="test")
    submit(svc, "later", model="claude")
    assert svc.claim("c") is None
    svc.resume_model("claude", by="test")
    assert svc.claim("c") is not None
    with pytest.raises(NotFound, match="model 'claude' is not paused"):
        svc.resume_model("claude", by="test")


def test_a_usage_limit_pauses_the_model_and_requeues_the_task_in_one_step(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "fix", model="claude", max_retries=0)
    start(svc, "c", model="claude")
    claim = svc.claim("c")
    assert claim is not None
    end = clock.now + 3600 * SECOND
    assert svc.usage_limited("fix", "c", 1, model="claude", until=from_us(end),
                             reason="usage limit: Claude AI usage limit reached|1")
    row = task(svc, store, "fix")
    assert (row.state, row.retries_used, row.attempts_left()) == ("queued", 0, 1)
    [requeued] = [e for e in map(ev.decode_event, store.read_stream("task-fix"))
                  if isinstance(e, ev.TaskRequeued)]
    assert (requeued.reason, requeued.not_before) == (RequeueReason.USAGE_LIMIT, None)
    assert svc.claim("c") is None
    assert svc.next_due() == end
    clock.now = end  # the reset: claimed again, by itself
    again = svc.claim("c")
    assert again is not None
    assert (again.task_id, again.attempt) == ("fix", 2)


def test_a_usage_limit_never_shortens_a_longer_pause_and_pauses_even_a_lost_attempt(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", model="claude")
    submit(svc, "b", model="claude")
    start(svc, "c", model="claude")
    claim = svc.claim("c")
    assert claim is not None
    svc.pause_model("claude", until=None, by="person", reason="holding it")
    assert not svc.usage_limited("a", "c", 1, model="claude",
                                 until=from_us(clock.now + SECOND), reason="usage limit")
    with store.snapshot() as tx:
        [kept] = reads.paused_models(connection_of(tx))
    assert (kept.until, kept.by) == (None, "person")
    assert task(svc, store, "a").state == "queued"
    svc.resume_model("claude", by="person")
    claim = svc.claim("c")
    assert claim is not None
    assert (claim.task_id, claim.attempt) == ("a", 2)  # requeued ahead of b, at no cost
    # The attempt lost its task meanwhile: no requeue of it, but the model is paused.
    svc.cancel("a", by="person")
    end = clock.now + 60 * SECOND
    assert svc.usage_limited("a", "c", 2, model="claude", until=from_us(end),
                             reason="usage limit")
    assert task(svc, store, "a").state == "cancelled"
    assert svc.next_due() == end


def test_without_a_model_the_task_itself_waits_for_the_reset(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "open")
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    end = clock.now + 90 * SECOND
    assert not svc.usage_limited("open", "w", 1, model=None, until=from_us(end),
                                 reason="usage limit")
    assert task(svc, store, "open").not_before == end
    assert svc.claim("w") is None
    clock.now = end
    assert svc.claim("w") is not None
