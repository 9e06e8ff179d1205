"""The wall clock steps back and forward during a run (NTP, a VM resumed, a hand-set clock).

One injected clock drives both the store (``recorded_at``) and the services (leases). What is
expected:

- ``recorded_at`` never decreases over the log, whatever the clock does (the store clamps a
  step back to the head's time);
- a lease is measured on the wall clock: a step back never expires a lease early (it only
  lengthens it), and a step forward expires it exactly as that much real time would;
- spend lands in rolling windows by its own ``occurred_at``, not by when it was recorded;
- the hash chain and the views still verify.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from eventlog import open_store
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.projections import connection_of, upkeep
from tri24es.projections.reads import read_budget
from tri24es.services import Services, TaskSpec
from tri24es.timeutil import from_us

SECOND = 1_000_000
HOUR = 3600 * SECOND
T0 = 1_800_000_000 * SECOND  # a fixed start: the tests never read the real clock


class SteppingClock:
    """A wall clock the test moves: ``tick`` advances a little on every read."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000  # 1 ms per read: time passes while the run goes on
        return self.now

    def step(self, delta_us: int) -> None:
        self.now += delta_us


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(T0)


@pytest.fixture
def services(tmp_path: Path, clock: SteppingClock) -> Services:
    store = open_store(str(tmp_path / "events.db"), clock=clock)
    return Services(store, actor="clock", clock=clock, lease_seconds=30)


def start(services: Services, worker: str) -> None:
    services.start_worker(worker, pid=os.getpid(), pid_start_time=1, host="test")


def check_log(services: Services) -> list[int]:
    store = services.store
    assert store.verify() == store.head()
    assert upkeep.verify(store) == []
    times = [e.recorded_at for e in store.read_all()]
    assert times == sorted(times), "recorded_at went backwards"
    return times


@pytest.mark.chaos
def test_recorded_at_stays_monotonic_across_clock_steps(
    services: Services, clock: SteppingClock
) -> None:
    start(services, "w1")
    for n, step in enumerate([-HOUR, 2 * HOUR, -10 * HOUR, 24 * HOUR, -SECOND]):
        services.submit(TaskSpec(f"t{n}", f"task {n}"))
        clock.step(step)
        services.submit(TaskSpec(f"t{n}-after", f"task {n} after a step of {step} us"))
        claim = services.claim("w1")
        assert claim is not None
        services.complete(claim.task_id, "w1", claim.attempt)
    times = check_log(services)
    assert len(times) > 10
    # After a step back the log holds its time; after a step forward it follows the clock.
    assert times[-1] >= T0 + 15 * HOUR


@pytest.mark.chaos
def test_a_step_back_never_expires_a_lease_early(
    services: Services, clock: SteppingClock
) -> None:
    start(services, "w1")
    services.submit(TaskSpec("t", "task"))
    claim = services.claim("w1")
    assert claim is not None
    clock.step(-HOUR)
    assert services.expire_leases() == ([], [])
    # Even once the lease's length has passed on the stepped-back clock, the lease stands:
    # its expiry is a wall-clock time, still in this clock's future.
    clock.step(31 * SECOND)
    assert services.expire_leases() == ([], [])
    assert services.task("t").state == "running"
    # The worker goes on and completes the attempt it holds.
    services.complete("t", "w1", claim.attempt)
    assert services.task("t").state == "completed"
    check_log(services)


@pytest.mark.chaos
def test_a_step_forward_expires_leases_like_real_time(
    services: Services, clock: SteppingClock
) -> None:
    start(services, "w1")
    services.submit(TaskSpec("short", "expires", max_retries=3))
    services.submit(TaskSpec("renewed", "renewed after the step"))
    first = services.claim("w1")
    assert first is not None
    assert first.task_id == "short"
    clock.step(20 * SECOND)  # less than the 30 s lease: nothing expires
    assert services.expire_leases() == ([], [])
    clock.step(11 * SECOND)  # past the lease: requeued, as 31 real seconds would
    assert services.expire_leases()[0] == ["short"]
    assert services.task("short").state == "queued"
    # The worker's late completion is refused: the attempt no longer holds the task.
    with pytest.raises(Exception, match="not held"):
        services.complete("short", "w1", first.attempt)
    check_log(services)


@pytest.mark.chaos
def test_a_renewal_after_a_step_back_is_measured_from_the_new_clock(
    services: Services, clock: SteppingClock
) -> None:
    start(services, "w1")
    services.submit(TaskSpec("t", "task"))
    claim = services.claim("w1")
    assert claim is not None
    clock.step(-HOUR)
    renewed = services.renew_lease("t", "w1", claim.attempt)
    # The renewed lease is 30 s from the stepped-back clock: earlier than the first one.
    assert renewed < claim.lease_expires_at
    assert from_us(clock.now + 29 * SECOND) < renewed <= from_us(clock.now + 30 * SECOND)
    clock.step(29 * SECOND)
    assert services.expire_leases() == ([], [])
    clock.step(2 * SECOND)
    assert services.expire_leases()[0] == ["t"]
    check_log(services)


@pytest.mark.chaos
def test_spend_lands_in_windows_by_its_occurred_at(
    services: Services, clock: SteppingClock
) -> None:
    limits = BudgetLimits(window_seconds=300, timezone=from_us(0).tzinfo)
    clock.step(HOUR)
    now = clock.now
    clock.step(-HOUR)  # the clock is back an hour when these are recorded
    services.record_spend(ev.SpendRecorded(amount=Decimal("1.00"),
                                           occurred_at=from_us(now - 60 * SECOND)))
    clock.step(3 * HOUR)  # and two hours ahead for these
    services.record_spend(ev.SpendRecorded(amount=Decimal("2.00"),
                                           occurred_at=from_us(now - 10 * SECOND)))
    services.record_spend(ev.SpendRecorded(amount=Decimal("4.00"),
                                           occurred_at=from_us(now - 600 * SECOND)))
    services.record_spend(ev.SpendRecorded(amount=Decimal("8.00"),
                                           occurred_at=from_us(now + 600 * SECOND)))
    with services.store.snapshot() as tx:
        conn = connection_of(tx)
        reading = read_budget(conn, limits, now)
        # In [now - 300 s, now]: the 1.00 and the 2.00, whenever they were recorded.
        assert reading.window_total == Decimal("3.00")
        later = read_budget(conn, limits, now + 700 * SECOND)
        assert later.window_total == Decimal("8.00")
        earlier = read_budget(conn, limits, now - 500 * SECOND)
        assert earlier.window_total == Decimal("4.00")
    check_log(services)
