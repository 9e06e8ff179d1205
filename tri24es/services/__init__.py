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
    MODELS,
    WORK,
    AttemptProcess,
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
from tri24es.services.dependencies import DependencyError
from tri24es.services.limits import LimitCommands
from tri24es.services.models import ModelCommands
from tri24es.services.schedules import ScheduleCommands, ScheduleExists
from tri24es.services.tasks import BudgetTooLow, NotQueued, Outdated, TaskCommands
from tri24es.services.workers import WorkerCommands


class Services(ScheduleCommands, TaskCommands, WorkerCommands, BudgetCommands, LimitCommands,
               ModelCommands, AuditCommands):
    """Every command of tri24es, on one store."""


__all__ = [
    "CONFLICT_RETRIES",
    "DEFAULT_LEASE_SECONDS",
    "KILL_SWITCH",
    "MODELS",
    "WORK",
    "AttemptProcess",
    "BudgetTooLow",
    "Claim",
    "DependencyError",
    "NotFound",
    "NotQueued",
    "Outdated",
    "ResetRefused",
    "ScheduleExists",
    "ServiceError",
    "Services",
    "StaleAttempt",
    "TaskSpec",
    "retry_on_conflict",
    "task_bell",
    "worker_bell",
]
