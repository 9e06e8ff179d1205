"""The queue table as readers see it: a task's row, the columns, and what running attempts
hold of today's budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tri24es.projections.sql import Db

if TYPE_CHECKING:
    from tri24es.events import Backoff


COLUMNS = (
    "task_id, state, priority, submitted_position, title, shard, model, type, max_retries,"
    " attempt, worker, lease_expires_at, pid, last_error, submitted_at, updated_at, version,"
    " retries_from, has_command, budget_units, spent_units, not_before, backoff_base_us,"
    " backoff_cap_us, after_ids, dependants, deps_open, blocked, reserved_units,"
    " claim_spent_units, claimed_at, ran_us"
)


@dataclass(slots=True)
class TaskRow:
    task_id: str
    state: str
    priority: int
    submitted_position: int
    title: str
    shard: str | None
    model: str | None
    type: str | None
    max_retries: int
    attempt: int = 0
    worker: str | None = None
    lease_expires_at: int | None = None
    pid: int | None = None
    last_error: str | None = None
    submitted_at: int = 0
    updated_at: int = 0
    version: int = 0
    retries_from: int = 0
    has_command: int = 0
    budget_units: int | None = None
    spent_units: int = 0
    not_before: int | None = None
    backoff_base_us: int | None = None
    backoff_cap_us: int | None = None
    after_ids: str | None = None
    dependants: str | None = None
    deps_open: int = 0
    blocked: str | None = None
    reserved_units: int | None = None
    claim_spent_units: int = 0
    claimed_at: int | None = None
    ran_us: int | None = None

    @property
    def after(self) -> list[str]:
        """The tasks this one waits for."""
        return self.after_ids.split() if self.after_ids else []

    @property
    def waiting_tasks(self) -> list[str]:
        """The tasks that wait for this one."""
        return self.dependants.split() if self.dependants else []

    def attempts_left(self) -> int:
        """Claims still allowed after the current one: ``max_retries`` retries per budget."""
        return self.max_retries + 1 - (self.attempt - self.retries_from)

    @property
    def retries_used(self) -> int:
        """Attempts after the first that counted against ``max_retries`` (stopped attempts
        and those before a manual retry do not)."""
        return max(self.attempt - self.retries_from - 1, 0)

    def backoff(self) -> Backoff | None:
        """The task's own retry backoff, if it has one."""
        if self.backoff_base_us is None or self.backoff_cap_us is None:
            return None
        from tri24es.events import Backoff  # the catalog, on this rare path only

        return Backoff(base_s=self.backoff_base_us / 1e6, cap_s=self.backoff_cap_us / 1e6)

    def budget_left(self) -> int | None:
        """What the task may still spend over all its attempts (1e-10 USD), if it is capped."""
        return None if self.budget_units is None else self.budget_units - self.spent_units

    def reservation(self, default_units: int) -> int:
        """What a claim of it reserves of today's budget (1e-10 USD): what it may still
        spend (an attempt is stopped there), else the default reservation."""
        left = self.budget_left()
        return default_units if left is None else max(left, 0)


#: A queued task's reservation (the parameter: the default one), as ``TaskRow.reservation``.
RESERVATION = ("coalesce(CASE WHEN budget_units > spent_units THEN budget_units - spent_units"
               " WHEN budget_units IS NOT NULL THEN 0 END, ?)")


#: What running attempts still hold of today's budget: each its reservation less what it
#: spent since its claim (never below nothing), over the running tasks' partial index.
OUTSTANDING = (
    "SELECT coalesce(sum(CASE WHEN reserved_units > spent_units - claim_spent_units"
    " THEN reserved_units - spent_units + claim_spent_units ELSE 0 END), 0)"
    " FROM queue INDEXED BY queue_leases WHERE state = 'running'")


def outstanding_units(conn: Db) -> int:
    """Today's budget held by running attempts now (1e-10 USD)."""
    (units,) = conn.execute(OUTSTANDING).fetchone()
    return int(units)
