"""Random command sequences against the services on a real store of each backend.

Any command may be refused with a service error; nothing else may go wrong, and after every
step the inline views must equal a fresh replay of the log.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import eventlog
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.events import decode_all
from tri24es.machines import IllegalTransition
from tri24es.names import LimitKey, Priority, RequeueReason
from tri24es.projections import connection_of, reads
from tri24es.projections.tables.money import to_units
from tri24es.projections.tables.queue import TaskRow
from tri24es.projections.tables.workers import WorkerRow
from tri24es.projections.upkeep import verify
from tri24es.services import (
    DependencyError,
    NotFound,
    ServiceError,
    Services,
    StaleAttempt,
    TaskSpec,
)
from tri24es.timeutil import from_us

REFUSED = (StaleAttempt, NotFound, IllegalTransition, ServiceError)
SECOND = 1_000_000
LEASE_S = 30
SILENT_S = 120
WORKER_SHARDS = {"w0": None, "w1": "a", "w2": "b"}
WORKER_MODELS = {"w0": None, "w1": "m1", "w2": None}
WORKER_IDS = st.sampled_from(sorted(WORKER_SHARDS))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000_000

    def __call__(self) -> int:
        return self.now


class ServicesMachine(RuleBasedStateMachine):
    def __init__(self, new_url: Callable[[], str]) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = eventlog.open_store(new_url(), clock=self.clock)
        self.svc = Services(self.store, clock=self.clock, lease_seconds=LEASE_S, actor="test",
                            retry_backoff=ev.Backoff(base_s=5, cap_s=40),
                            rng=random.Random(0))
        # The same store through a worker's services given a daily limit: its claims
        # reserve (a watchdog_started rule may lower the limit they reserve from).
        self.budget = BudgetLimits(daily_limit=Decimal(5), timezone=ZoneInfo("UTC"),
                                   default_reservation=Decimal("0.25"))
        self.budgeted = Services(self.store, clock=self.clock, lease_seconds=LEASE_S,
                                 actor="test", retry_backoff=ev.Backoff(base_s=5, cap_s=40),
                                 rng=random.Random(1), budget=self.budget)
        self.submitted: list[str] = []

    def teardown(self) -> None:
        self.store.close()

    # --- helpers ---------------------------------------------------------------------

    def tasks(self) -> list[TaskRow]:
        with self.store.transaction() as tx:
            return reads.tasks(connection_of(tx))

    def tasks_by_id(self) -> dict[str, TaskRow]:
        return {t.task_id: t for t in self.tasks()}

    def workers(self) -> dict[str, WorkerRow]:
        with self.store.transaction() as tx:
            return {w.worker_id: w for w in reads.workers(connection_of(tx))}

    def attempt_of(self, data: st.DataObject) -> tuple[str, str, int]:
        """(task, worker, attempt): usually a running attempt, sometimes a stale or made-up one."""
        running = [t for t in self.tasks() if t.state == "running"]
        if running and data.draw(st.integers(0, 3), label="pick running") > 0:
            row = data.draw(st.sampled_from(running), label="running task")
            assert row.worker is not None
            return row.task_id, row.worker, row.attempt
        task_id = data.draw(st.sampled_from([*self.submitted, "missing"]), label="task")
        worker = data.draw(WORKER_IDS, label="worker")
        return task_id, worker, data.draw(st.integers(1, 4), label="attempt")

    def task_id(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([*self.submitted, "missing"]), label="task")

    # --- rules -----------------------------------------------------------------------

    @initialize(shards=st.lists(st.sampled_from([None, "a", "b"]), min_size=1, max_size=4))
    def some_workers_and_tasks(self, shards: list[str | None]) -> None:
        for worker, shard in WORKER_SHARDS.items():
            self.svc.start_worker(worker, pid=1, pid_start_time=0, host="test", shard=shard,
                                  model=WORKER_MODELS[worker])
        for shard in shards:
            self.submit(Priority.MEDIUM, shard, 1)

    @rule(priority=st.sampled_from(Priority), shard=st.sampled_from([None, None, "a", "b"]),
          max_retries=st.integers(0, 2),
          budget=st.sampled_from([None, None, Decimal("0.5"), Decimal("3")]))
    def submit(self, priority: Priority, shard: str | None, max_retries: int,
               budget: Decimal | None = None) -> None:
        task_id = f"t{len(self.submitted)}"
        _, new = self.svc.submit(TaskSpec(task_id, task_id, priority=priority, shard=shard,
                                          max_retries=max_retries, max_budget_usd=budget))
        assert new
        self.submitted.append(task_id)

    @rule(data=st.data(), priority=st.sampled_from(Priority),
          delay=st.sampled_from([None, 0, 20, 90]), backoff=st.sampled_from([None, 0, 10]))
    def submit_scheduled(self, data: st.DataObject, priority: Priority, delay: int | None,
                         backoff: int | None) -> None:
        """A task waiting for others (sometimes an unknown one, or itself), a time, or with a
        backoff of its own."""
        task_id = f"t{len(self.submitted)}"
        after = tuple(data.draw(st.lists(st.sampled_from([*self.submitted, "missing", task_id]),
                                         max_size=3, unique=True), label="after"))
        spec = TaskSpec(
            task_id, task_id, priority=priority, max_retries=1, after=after,
            model=data.draw(st.sampled_from([None, "m1", "m2"]), label="model"),
            not_before=None if delay is None else from_us(self.clock.now + delay * SECOND),
            retry_backoff=None if backoff is None else ev.Backoff(base_s=backoff, cap_s=backoff))
        try:
            self.svc.submit(spec)
        except DependencyError:
            assert "missing" in after or task_id in after
            return
        self.submitted.append(task_id)

    @rule(data=st.data(), priority=st.sampled_from([None, *Priority]),
          shard=st.sampled_from([None, "", "a", "b"]), delay=st.sampled_from([None, 0, 30]))
    def update(self, data: st.DataObject, priority: Priority | None, shard: str | None,
               delay: int | None) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.update(ev.TaskUpdated(
                task_id=self.task_id(data), by="test", priority=priority, shard=shard,
                not_before=None if delay is None else from_us(self.clock.now + delay * SECOND)))

    @rule(shard=st.sampled_from(["a", "b"]), cap=st.sampled_from([None, 0, 1, 2]))
    def limit(self, shard: str, cap: int | None) -> None:
        if cap is None:
            self.svc.remove_limit(LimitKey.SHARD, shard, by="test")
        else:
            self.svc.set_limit(LimitKey.SHARD, shard, cap, by="test")

    @rule(name=st.sampled_from(["s1", "s2"]), cron=st.sampled_from(["* * * * *", "*/2 * * * *"]),
          add=st.booleans())
    def schedule(self, name: str, cron: str, add: bool) -> None:
        with contextlib.suppress(*REFUSED):
            if add:
                self.svc.add_schedule(ev.ScheduleAdded(name=name, cron=cron, title=name,
                                                       max_retries=0))
            else:
                self.svc.remove_schedule(name, by="test")

    @rule()
    def fire_schedules(self) -> None:
        fired, _ = self.svc.fire_schedules()
        for spec in fired:
            assert spec.task_id not in self.submitted
            self.submitted.append(spec.task_id)
        assert self.svc.fire_schedules()[0] == []  # a slot once

    @rule(model=st.sampled_from(["m1", "m2"]), minutes=st.sampled_from([None, 0, 1, 5]))
    def pause_model(self, model: str, minutes: int | None) -> None:
        with contextlib.suppress(*REFUSED):
            if minutes == 0:
                self.svc.resume_model(model, by="test")
            else:
                until = None if minutes is None else from_us(self.clock.now + minutes * 60
                                                             * SECOND)
                self.svc.pause_model(model, until=until, by="test")

    @rule(seconds=st.integers(1, 60))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds * SECOND

    @rule(worker=WORKER_IDS)
    def start_worker(self, worker: str) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.start_worker(worker, pid=1, pid_start_time=0, host="test",
                                  shard=WORKER_SHARDS[worker], model=WORKER_MODELS[worker])

    @rule(worker=WORKER_IDS, reserving=st.booleans())
    def claim(self, worker: str, reserving: bool = False) -> None:
        before = self.workers().get(worker)
        try:
            claim = (self.budgeted if reserving else self.svc).claim(worker)
        except REFUSED:
            return
        if claim is None:
            return
        if reserving:  # what it reserved was left of today's budget
            with self.store.snapshot() as tx:
                today = reads.today_budget(connection_of(tx), self.budget, self.clock.now)
            reserved = claim.row.reservation(to_units(self.budget.default_reservation))
            assert reserved == 0 or today.left >= 0, (today, reserved)
        assert before is not None
        assert before.state == "idle"
        assert claim.row.state == "running"
        assert claim.row.worker == worker
        assert claim.row.shard in (None, WORKER_SHARDS[worker])
        assert claim.row.deps_open == 0
        with self.store.snapshot() as tx:  # the claim passed no cap its task counts under
            model = claim.row.model or WORKER_MODELS[worker]
            for pause in reads.paused_models(connection_of(tx)):  # nor a paused model
                assert pause.model != model or (
                    pause.until is not None and pause.until <= self.clock.now), pause
            for key, value, cap, running in reads.limits_in_use(connection_of(tx)):
                if key == "shard" and (claim.row.shard or WORKER_SHARDS[worker]) == value:
                    assert running <= cap, (value, running, cap)
        assert claim.row.not_before is None or claim.row.not_before <= self.clock.now
        for dependency in claim.row.after:  # every dependency completed
            assert self.tasks_by_id()[dependency].state == "completed"

    @rule()
    def every_worker_claims(self) -> None:
        for worker in WORKER_SHARDS:
            self.claim(worker)

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.complete(*self.attempt_of(data))

    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data: st.DataObject, retryable: bool) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.fail(*self.attempt_of(data), "boom", retryable=retryable)

    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.renew_lease(*self.attempt_of(data))

    @rule(seconds=st.integers(0, 45))
    def expire_leases(self, seconds: int) -> None:
        self.clock.now += seconds * SECOND
        tasks, _ = self.svc.expire_leases(silent_after_us=SILENT_S * SECOND)
        for row in self.tasks():
            if row.task_id in tasks:
                assert row.state in ("queued", "failed")

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.cancel(self.task_id(data), by="test")

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.retry(self.task_id(data), by="test")

    @rule(data=st.data(), reason=st.sampled_from([RequeueReason.MANUAL,
                                                  RequeueReason.WORKER_STOPPED]))
    def requeue(self, data: st.DataObject, reason: RequeueReason) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.requeue(self.task_id(data), reason, by="test")

    @rule(worker=WORKER_IDS, action=st.sampled_from(
        ["request_pause", "request_resume", "paused", "resumed", "heartbeat"]))
    def worker_command(self, worker: str, action: str) -> None:
        with contextlib.suppress(*REFUSED):
            getattr(self.svc, action)(worker)

    @rule(active=st.booleans(), force=st.booleans(),
          allow=st.sampled_from([None, Decimal(5), Decimal(1000)]))
    def killswitch(self, active: bool, force: bool, allow: Decimal | None) -> None:
        if active:
            self.svc.activate_killswitch(ev.KillSwitchActivated(
                reason="test", rate=Decimal(1), daily=Decimal(2), rate_limit=Decimal(1),
                daily_limit=Decimal(2)))
        else:  # refused (ResetRefused) while the spend is still over a limit
            with contextlib.suppress(*REFUSED):
                self.svc.reset_killswitch(by="test", reason="test", fresh_window=force,
                                          allow_today=allow)

    @rule(daily=st.sampled_from([Decimal(1), Decimal(75)]))
    def watchdog_started(self, daily: Decimal) -> None:
        self.svc.record_watchdog_start(ev.BudgetWatchdogStarted(
            rate_limit=Decimal(1), daily_limit=daily, window_seconds=300, host="h", pid=1))

    @rule(data=st.data(), cents=st.integers(0, 10_000),
          event_id=st.sampled_from([None, "s1", "s2"]))
    def record_spend(self, data: st.DataObject, cents: int, event_id: str | None) -> None:
        on = data.draw(st.sampled_from([None, *self.submitted]), label="task")  # settles
        spend = ev.SpendRecorded(amount=Decimal(cents) / 100, occurred_at=from_us(self.clock()),
                                 model="m", source="worker", task=on)
        self.svc.record_spend(spend, event_id=event_id)

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def views_equal_a_replay(self) -> None:
        assert verify(self.store) == []

    @invariant()
    def running_tasks_are_held_by_their_worker(self) -> None:
        workers = self.workers()
        for row in self.tasks():
            if row.state != "running":
                continue
            assert row.worker is not None
            holder = workers[row.worker]
            assert (holder.current_task, holder.current_attempt) == (row.task_id, row.attempt), (
                f"{row.task_id} attempt {row.attempt} runs on {row.worker}, which holds "
                f"{holder.current_task} attempt {holder.current_attempt} ({holder.state})"
            )
            assert holder.state in ("busy", "paused"), (
                f"{row.task_id} runs on {row.worker}, which is {holder.state}"
            )

    @invariant()
    def busy_workers_hold_a_running_task(self) -> None:
        tasks = {t.task_id: t for t in self.tasks()}
        for w in self.workers().values():
            if w.state == "busy":
                assert w.current_task is not None
                held = tasks[w.current_task]
                assert (held.state, held.worker, held.attempt) == (
                    "running", w.worker_id, w.current_attempt)

    @invariant()
    def dependencies_are_counted_and_blocked_right(self) -> None:
        tasks = self.tasks_by_id()
        for row in tasks.values():
            deps = [tasks[d] for d in row.after]
            assert row.deps_open == sum(d.state != "completed" for d in deps), row.task_id
            if row.state != "queued":
                continue
            bad = [d for d in deps if d.state in ("failed", "cancelled")
                   or (d.state == "queued" and d.blocked)]
            # Blocked exactly while a dependency failed, was cancelled or is blocked itself.
            assert bool(row.blocked) == bool(bad), (
                row.task_id, row.blocked, [(d.task_id, d.state, d.blocked) for d in deps])

    @invariant()
    def only_running_attempts_hold_a_reservation(self) -> None:
        for row in self.tasks():
            assert row.reserved_units is None or (row.state == "running"
                                                  and row.reserved_units > 0), row

    @invariant()
    def no_task_completes_twice(self) -> None:
        done = Counter(
            e.event.task_id  # type: ignore[attr-defined]
            for e in decode_all(self.store.read_all(types=["TaskCompleted"]))
        )
        assert all(n == 1 for n in done.values()), done
        completed = {t.task_id for t in self.tasks() if t.state == "completed"}
        assert completed == set(done)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 25 stores of 30 steps, each checked against a replay: a ceiling
def test_random_command_sequences_keep_the_views_equal_to_a_replay(
    new_url: Callable[[], str],
) -> None:
    run_state_machine_as_test(
        lambda: ServicesMachine(new_url),
        settings=settings(max_examples=25, stateful_step_count=30, deadline=None),
    )
