"""The aggregates of the eventsourcing peer (a module of their own: eventsourcing names an
event's class by its import path, which ``__main__`` would not keep)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from eventsourcing.domain import Aggregate, event


class Task(Aggregate):
    @event("Submitted")
    def __init__(self, title: str, priority: int) -> None:
        self.state = "queued"

    @event("Claimed")
    def claim(self, worker: str, attempt: int, lease_expires_at: datetime) -> None:
        self.state = "running"

    @event("Renewed")
    def renew(self, worker: str, attempt: int, lease_expires_at: datetime) -> None:
        pass

    @event("Completed")
    def complete(self, worker: str, attempt: int) -> None:
        self.state = "completed"


class Spend(Aggregate):
    @event("Recorded")
    def __init__(self, amount: Decimal, task: str, worker: str, occurred_at: datetime) -> None:
        pass
