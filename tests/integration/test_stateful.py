"""Random command sequences against the services on a real store of each backend.

Any command may be refused with a service error; nothing else may go wrong, and after every
step the inline views must equal a fresh replay of the log.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

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
from tri24es.events import Priority, RequeueReason, decode_all
from tri24es.machines import IllegalTransition
from tri24es.projections import connection_of, reads, verify
from tri24es.projections.queue import TaskRow
from tri24es.projections.workers import WorkerRow
from tri24es.services import NotFound, ServiceError, Services, StaleAttempt, TaskSpec
from tri24es.timeutil import from_us

REFUSED = (StaleAttempt, NotFound, IllegalTransition, ServiceError)
SECOND = 1_000_000
LEASE_S = 30
SILENT_S = 120
WORKER_SHARDS = {"w0": None, "w1": "a", "w2": "b"}
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
        self.svc = Services(self.store, clock=self.clock, lease_seconds=LEASE_S, actor="test")
        self.submitted: list[str] = []

    def teardown(self) -> None:
        self.store.close()

    # --- helpers ---------------------------------------------------------------------

    def tasks(self) -> list[TaskRow]:
        with self.store.transaction() as tx:
            return reads.tasks(connection_of(tx))

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
            self.svc.start_worker(worker, pid=1, pid_start_time=0, host="test", shard=shard)
        for shard in shards:
            self.submit(Priority.MEDIUM, shard, 1)

    @rule(priority=st.sampled_from(Priority), shard=st.sampled_from([None, None, "a", "b"]),
          max_retries=st.integers(0, 2))
    def submit(self, priority: Priority, shard: str | None, max_retries: int) -> None:
        task_id = f"t{len(self.submitted)}"
        _, new = self.svc.submit(TaskSpec(task_id, task_id, priority=priority, shard=shard,
                                          max_retries=max_retries))
        assert new
        self.submitted.append(task_id)

    @rule(worker=WORKER_IDS)
    def start_worker(self, worker: str) -> None:
        with contextlib.suppress(*REFUSED):
            self.svc.start_worker(worker, pid=1, pid_start_time=0, host="test",
                                  shard=WORKER_SHARDS[worker])

    @rule(worker=WORKER_IDS)
    def claim(self, worker: str) -> None:
        before = self.workers().get(worker)
        try:
            claim = self.svc.claim(worker)
        except REFUSED:
            return
        if claim is None:
            return
        assert before is not None
        assert before.state == "idle"
        assert claim.row.state == "running"
        assert claim.row.worker == worker
        assert claim.row.shard in (None, WORKER_SHARDS[worker])

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

    @rule(cents=st.integers(0, 10_000), event_id=st.sampled_from([None, "s1", "s2"]))
    def record_spend(self, cents: int, event_id: str | None) -> None:
        spend = ev.SpendRecorded(amount=Decimal(cents) / 100, occurred_at=from_us(self.clock()),
                                 model="m", source="worker")
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
