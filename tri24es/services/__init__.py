"""Command handlers: decide with the machines and the views, append, apply views inline.

Every command is one transaction. It reads the rows it decides on inside that transaction,
appends with the stream version it read as the expected version, and applies the views
before commit. ``WrongExpectedVersion`` (possible where writers do not serialise, e.g. on a
server database) is retried here and nowhere else.
"""

from tri24es.services.audit import AuditCommands
from tri24es.services.base import (
    CONFLICT_RETRIES,
    DEFAULT_LEASE_SECONDS,
    KILL_SWITCH,
    WORK,
    Claim,
    NotFound,
    ServiceError,
    StaleAttempt,
    TaskSpec,
    retry_on_conflict,
    task_bell,
    worker_bell,
)
from tri24es.services.budget import BudgetCommands, ResetRefused
from tri24es.services.tasks import TaskCommands
from tri24es.services.workers import WorkerCommands


class Services(TaskCommands, WorkerCommands, BudgetCommands, AuditCommands):
    """Every command of tri24es, on one store."""


__all__ = [
    "CONFLICT_RETRIES",
    "DEFAULT_LEASE_SECONDS",
    "KILL_SWITCH",
    "WORK",
    "Claim",
    "NotFound",
    "ResetRefused",
    "ServiceError",
    "Services",
    "StaleAttempt",
    "TaskSpec",
    "retry_on_conflict",
    "task_bell",
    "worker_bell",
]
