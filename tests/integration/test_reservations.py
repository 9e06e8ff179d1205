"""Spend-aware reservations in the claim, on a real store of each backend with a clock the
test controls: a claim reserves the task's budget (or the default reservation) against what
is left of today's daily limit, its spend settles the reservation, its end releases it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest

import eventlog
from eventlog import EventStore
from tests.integration.test_services import LEASE_S, SECOND, Clock, start, submit, task
from tri24es import events as ev
from tri24es.budget import BudgetLimits, TodayBudget
from tri24es.names import RequeueReason, task_stream
from tri24es.projections import connection_of, reads
from tri24es.projections.upkeep import rebuild, verify
from tri24es.services import WORK, Services, TaskSpec
from tri24es.services.base import bells_for
from tri24es.timeutil import from_us

UTC = ZoneInfo("UTC")
T = TypeVar("T")
D = Decimal


def limits(daily: str = "2", default: str = "0") -> BudgetLimits:
    return BudgetLimits(daily_limit=D(daily), timezone=UTC, default_reservation=D(default))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(new_url: Callable[[], str], clock: Clock) -> Iterator[EventStore]:
    s = eventlog.open_store(new_url(), clock=clock)
    yield s
    assert verify(s) == []  # after every scenario: the inline views equal a fresh replay
    s.close()


def services(store: EventStore, clock: Clock, budget: BudgetLimits | None) -> Services:
    return Services(store, clock=clock, lease_seconds=LEASE_S, actor="test",
                    rng=random.Random(7), budget=budget)


@pytest.fixture
def svc(store: EventStore, clock: Clock) -> Services:
    return services(store, clock, limits())


def spend(svc: Services, amount: str, task_id: str | None = None) -> None:
    svc.record_spend(ev.SpendRecorded(amount=D(amount), occurred_at=from_us(svc.clock()),
                                      task=task_id, source="cli"))


def today(store: EventStore, budget: BudgetLimits, now: int) -> TodayBudget:
    with store.snapshot() as tx:
        return reads.today_budget(connection_of(tx), budget, now)


def waits(store: EventStore, budget: BudgetLimits | None, now: int) -> list[str]:
    with store.snapshot() as tx:
        return [str(w) for w in reads.waiting(connection_of(tx), now, budget)]


def reserved_in_claim(store: EventStore, task_id: str) -> Decimal | None:
    claims = [ev.decode_event(r) for r in store.read_stream(task_stream(task_id))
              if r.type == "TaskClaimed"]
    last = claims[-1]
    assert isinstance(last, ev.TaskClaimed)
    return last.reserved_usd


def test_a_task_whose_reservation_does_not_fit_waits_and_a_cheaper_one_goes_first(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "big", max_budget_usd=D("1.00"))
    submit(svc, "small", max_budget_usd=D("0.30"))
    start(svc, "w1")
    start(svc, "w2")
    spend(svc, "1.60")  # $0.40 left of $2
    assert waits(store, limits(), clock()) == [
        "1 waiting for today's budget: today's budget left $0.40 cannot cover its "
        "reservation $1.00"]
    assert svc.claimable("w1")
    claim = svc.claim("w1")
    assert claim is not None
    assert claim.task_id == "small"  # the cheaper task behind it was claimed instead
    assert reserved_in_claim(store, "small") == D("0.30")
    assert svc.claim("w2") is None  # $0.10 left: not the $1 task
    assert task(svc, store, "big").state == "queued"
    assert today(store, limits(), clock()) == TodayBudget(D(2), D("1.60"), D("0.30"))
    # The day's limit raised (another worker's settings, or the watchdog's): it fits.
    assert services(store, clock, limits("3")).claim("w2") is not None
    assert task(svc, store, "big").state == "running"
    assert reserved_in_claim(store, "big") == D("1.00")


def test_spend_settles_the_reservation_and_the_attempts_end_releases_it(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_budget_usd=D("1.00"))
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    assert today(store, limits(), clock()).reserved == D("1.00")
    spend(svc, "0.25", "a")
    spend(svc, "0.50")  # spend on no task settles nothing
    assert today(store, limits(), clock()) == TodayBudget(D(2), D("0.75"), D("0.75"))
    spend(svc, "0.90", "a")  # past its reservation: it holds nothing more
    assert today(store, limits(), clock()).reserved == 0
    assert task(svc, store, "a").state == "running"
    svc.complete("a", "w", claim.attempt)
    assert today(store, limits(), clock()) == TodayBudget(D(2), D("1.65"), D(0))


@pytest.mark.parametrize("end", ["complete", "fail", "requeue", "cancel", "expire"])
def test_every_end_of_an_attempt_releases_its_reservation(
    svc: Services, store: EventStore, clock: Clock, end: str
) -> None:
    submit(svc, "a", max_budget_usd=D("1.50"), max_retries=3)
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    spend(svc, "0.50", "a")
    assert today(store, limits(), clock()).reserved == D("1.00")
    if end == "complete":
        svc.complete("a", "w", claim.attempt)
    elif end == "fail":
        svc.fail("a", "w", claim.attempt, "boom")
    elif end == "requeue":
        svc.requeue("a", RequeueReason.MANUAL, by="test")
    elif end == "cancel":
        svc.cancel("a", by="test")
    else:
        clock.now += 2 * LEASE_S * SECOND
        assert svc.expire_leases()[0] == ["a"]
    assert today(store, limits(), clock()).reserved == 0
    assert task(svc, store, "a").reserved_units is None


def test_a_retry_reserves_only_what_its_budget_has_left(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_budget_usd=D("1.50"), max_retries=3)
    start(svc, "w")
    claim = svc.claim("w")
    assert claim is not None
    spend(svc, "1.20", "a")
    svc.requeue("a", RequeueReason.MANUAL, by="test")
    assert svc.claim("w") is not None  # $0.80 left of $2: enough for the $0.30 it may spend
    assert reserved_in_claim(store, "a") == D("0.30")


def test_the_default_reservation_holds_tasks_without_a_budget(
    store: EventStore, clock: Clock
) -> None:
    budget = limits("2", default="0.75")
    svc = services(store, clock, budget)
    for task_id in "abc":
        submit(svc, task_id)
    for worker in ("w1", "w2", "w3"):
        start(svc, worker)
    assert svc.claim("w1") is not None
    assert svc.claim("w2") is not None
    assert svc.claim("w3") is None  # $0.50 left cannot cover a third $0.75
    assert not svc.claimable("w3")
    assert waits(store, budget, clock()) == [
        "1 waiting for today's budget: today's budget left $0.50 cannot cover its "
        "reservation $0.75"]
    assert today(store, budget, clock()).reserved == D("1.50")


def test_nothing_reserved_fits_even_an_overdrawn_day_and_no_limits_checks_nothing(
    store: EventStore, clock: Clock
) -> None:
    plain = services(store, clock, None)  # no daily limit given: no reservation at all
    submit(plain, "budgeted", max_budget_usd=D("5"))
    submit(plain, "open")
    start(plain, "w1")
    start(plain, "w2")
    spend(plain, "3")  # over the $2 of limits(): a reservation would not fit
    svc = services(store, clock, limits())
    assert svc.claim("w1") is not None
    assert task(svc, store, "open").state == "running"  # it reserves nothing
    assert reserved_in_claim(store, "open") is None
    assert svc.claim("w2") is None
    assert waits(store, None, clock()) == []  # the reason is given only with limits
    assert plain.claim("w2") is not None
    assert reserved_in_claim(store, "budgeted") is None


def test_the_watchdogs_limit_and_todays_allowance_are_what_a_claim_reserves_from(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_budget_usd=D("1"))
    start(svc, "w")
    svc.record_watchdog_start(ev.BudgetWatchdogStarted(
        rate_limit=D(1), daily_limit=D("0.50"), window_seconds=300, timezone="UTC", host="h",
        pid=1))
    assert svc.claim("w") is None  # the watchdog's $0.50, not the worker's own $2
    raised = ev.BudgetWatchdogStarted(
        rate_limit=D(1), daily_limit=D("1.50"), window_seconds=300, timezone="UTC", host="h",
        pid=2)
    assert WORK in bells_for([raised])  # idle workers look again at once
    svc.record_watchdog_start(raised)
    assert svc.claim("w") is not None
    spend(svc, "0.25", "a")
    svc.activate_killswitch(ev.KillSwitchActivated(
        reason="test", rate=D(1), daily=D(2), rate_limit=D(1), daily_limit=D(2)))
    assert svc.reset_killswitch(by="test", reason="test", allow_today=D("0.75"))
    assert today(store, limits(), clock()) == TodayBudget(D("2.25"), D("0.25"), D("0.75"))


def test_a_new_day_starts_from_the_whole_limit(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_budget_usd=D("1"))
    start(svc, "w")
    spend(svc, "1.50")
    assert svc.claim("w") is None
    clock.now += 24 * 3600 * SECOND
    assert svc.claim("w") is not None


def test_a_replay_rebuilds_the_reservations(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    submit(svc, "a", max_budget_usd=D("1"))
    submit(svc, "b", max_budget_usd=D("0.50"))
    start(svc, "w1")
    start(svc, "w2")
    assert svc.claim("w1") is not None
    assert svc.claim("w2") is not None
    spend(svc, "0.20", "b")
    before = today(store, limits(), clock())
    rebuild(store)
    assert today(store, limits(), clock()) == before == TodayBudget(D(2), D("0.20"), D("1.30"))


# --- estimates ---------------------------------------------------------------------------


def run_one(svc: Services, clock: Clock, task_id: str, cost: str, seconds: int,
            **fields: object) -> None:
    submit(svc, task_id, **fields)
    worker = f"w-{task_id}"  # a worker that fits it
    start(svc, worker, **fields)  # type: ignore[arg-type]
    claim = svc.claim(worker)
    assert claim is not None
    assert claim.task_id == task_id
    clock.now += seconds * SECOND
    if cost != "0":
        spend(svc, cost, task_id)
    svc.complete(task_id, worker, claim.attempt)


def test_estimates_are_the_completed_attempts_of_the_same_type_and_model(
    svc: Services, store: EventStore, clock: Clock
) -> None:
    svc.budget = None  # estimates need no reservations
    run_one(svc, clock, "f1", "0.10", 10, type="fix", model="m")
    run_one(svc, clock, "f2", "0.30", 30, type="fix", model="m")
    assert svc.estimate("fix", "m") is None  # two samples: too few to say
    run_one(svc, clock, "f3", "0.20", 20, type="fix", model="m")
    run_one(svc, clock, "other", "5", 500, type="docs", model="m")
    run_one(svc, clock, "open", "7", 700)
    found = svc.estimate("fix", "m")
    assert found is not None
    assert (found.samples, found.cost_p50, found.cost_p90) == (3, D("0.2"), D("0.3"))
    assert (found.seconds_p50, found.seconds_p90) == (20.0, 30.0)
    assert svc.estimate("docs", "m") is None
    assert svc.estimate(None, None) is None  # one open task so far

    # Only the successful attempt counts: a failed first attempt's spend and time do not,
    # and a task not completed (failed for good, cancelled, still running) is no sample.
    submit(svc, "f4", type="fix", model="m", max_retries=1)
    start(svc, "w", type="fix", model="m")
    claim = svc.claim("w")
    assert claim is not None
    spend(svc, "9", "f4")
    clock.now += 900 * SECOND
    svc.fail("f4", "w", claim.attempt, "boom")
    clock.now += 3600 * SECOND  # its backoff
    claim = svc.claim("w")
    assert claim is not None
    clock.now += 40 * SECOND
    spend(svc, "0.40", "f4")
    svc.complete("f4", "w", claim.attempt)
    submit(svc, "f5", type="fix", model="m")
    svc.cancel("f5", by="test")
    found = svc.estimate("fix", "m")
    assert found is not None
    assert (found.samples, found.cost_p50, found.cost_p90) == (4, D("0.2"), D("0.4"))
    assert (found.seconds_p50, found.seconds_p90) == (20.0, 40.0)
    rebuild(store)
    assert svc.estimate("fix", "m") == found


@pytest.mark.parametrize("seed", range(4))
def test_the_budget_wait_counts_what_a_scan_of_the_queue_would(
    store: EventStore, clock: Clock, seed: int
) -> None:
    """The count comes from the budgeted tasks' index and the counts, not from the rows:
    checked against a reading of every queued row, over tasks with and without budgets,
    budgets partly and wholly spent, delays, open dependencies and days nearly spent."""
    rng = random.Random(seed)
    plain = services(store, clock, None)
    ids: list[str] = []
    for n in range(60):
        fields: dict[str, object] = {}
        if rng.random() < 0.4:
            fields["max_budget_usd"] = D(rng.choice(["0.10", "0.50", "1.00", "3.00"]))
        if rng.random() < 0.2:
            fields["not_before"] = from_us(clock() + rng.choice([-1, 1]) * 60 * SECOND)
        if ids and rng.random() < 0.15:
            fields["after"] = (rng.choice(ids),)
        submit(plain, f"t{n}", **fields)
        ids.append(f"t{n}")
        if rng.random() < 0.3:
            spend(plain, rng.choice(["0.05", "0.40", "2.00"]), f"t{n}")
    spent = today(store, limits(), clock()).spent
    for remainder, default in [(r, d) for r in ("0", "0.30", "0.60", "4") for d in
                               ("0", "0.20", "0.75", "5")]:
        budget = limits(str(spent + D(remainder)), default=default)
        left = D(remainder)
        with store.snapshot() as tx:
            rows = reads.tasks(connection_of(tx), "queued")
        held = [units for units in (
            row.reservation(int(D(default) * 10**10)) for row in rows
            if row.deps_open == 0 and (row.not_before is None or row.not_before <= clock()))
            if units > left * 10**10]
        said = [w for w in waits(store, budget, clock()) if "today's budget" in w]
        if not held:
            assert said == []
            continue
        (line,) = said
        assert line.startswith(f"{len(held)} waiting for today's budget: ")
        assert f"${D(min(held)) / 10**10:.2f}" in line
        assert f"left ${left:.2f}" in line


def vm_steps(store: EventStore, read: Callable[[], T]) -> tuple[T, int]:
    """What ``read`` returns, and the steps (of ten instructions) SQLite's virtual machine
    made on the store's own connection meanwhile."""
    counted = [0]

    def step() -> int:
        counted[0] += 1
        return 0

    db = store._db  # type: ignore[attr-defined]  # the SQLite store's own connection
    db.set_progress_handler(step, 10)
    try:
        return read(), counted[0]
    finally:
        db.set_progress_handler(None, 0)


def test_the_budget_wait_reads_the_same_at_any_backlog(tmp_path: Path, clock: Clock) -> None:
    """What ``status`` and ``tasks list`` say of today's budget costs the same work at 3,000
    queued tasks as at 100 (SQLite's virtual machine steps, counted by its progress
    handler): a scan of the queue made ``status`` at a million tasks take seconds and read
    the whole table into memory."""
    steps: dict[int, int] = {}
    for size in (100, 3000):
        store = eventlog.open_store(str(tmp_path / f"{size}.db"), clock=clock)
        plain = services(store, clock, None)
        plain.submit_many([TaskSpec(f"t{n}", "t") for n in range(size)])
        submit(plain, "budgeted", max_budget_usd=D("1"))
        spend(plain, "1.90")
        budget = limits("2", default="0.50")  # $0.10 left: every task is held
        with store.snapshot() as tx:
            said, steps[size] = vm_steps(
                store, partial(reads.waiting, connection_of(tx), clock(), budget))
        assert f"{size + 1} waiting for today's budget: today's budget left $0.10" in str(said[0])
        store.close()
    assert steps[3000] < 1.5 * steps[100], steps
