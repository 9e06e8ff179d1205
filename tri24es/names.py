"""The names the log uses that are not events: priorities, requeue reasons, limit keys, the
streams' names, and the error of an event that cannot be read.

They live apart from the event catalog (``tri24es.events``, which re-exports them) so that what
only reads the views (``status``, ``spend``, ``tasks list``) need not build the catalog's
pydantic models: that is most of a read command's start-up.
"""

from __future__ import annotations

import enum

from tri24es.errors import Tri24esError


class Priority(enum.StrEnum):
    """Task priority; claims take CRITICAL first. Stored and shown by name."""

    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """0 for CRITICAL ... 3 for LOW: the order in which tasks are claimed."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {p: rank for rank, p in enumerate(Priority)}


class RetryFrom(enum.StrEnum):
    BRANCH = "branch"  # a retry goes on from the last attempt's branch
    BASE = "base"  # a retry starts over from the base (the last attempt's head is kept)


class RequeueReason(enum.StrEnum):
    LEASE_EXPIRED = "lease_expired"
    WORKER_STOPPED = "worker_stopped"  # the worker was told to stop (signal, request, up)
    KILL_SWITCH = "kill_switch"  # the kill switch stopped the attempt
    LEASE_LOST = "lease_lost"  # the worker stalled past its lease; its agent was ended
    STORE_FAULT = "store_fault"  # the attempt could not go on (e.g. its log's disk is full)
    MODEL_PAUSED = "model_paused"  # its model was paused fleet-wide (tri24es models pause)
    USAGE_LIMIT = "usage_limit"  # its agent reported its provider's usage limit: model paused
    RETRY = "retry"
    MANUAL = "manual"


#: Requeues that end an attempt that did not fail: the task is not to blame, so the attempt
#: costs none of its retries.
STOP_REASONS = frozenset({RequeueReason.WORKER_STOPPED, RequeueReason.KILL_SWITCH,
                          RequeueReason.LEASE_LOST, RequeueReason.STORE_FAULT,
                          RequeueReason.MODEL_PAUSED, RequeueReason.USAGE_LIMIT})


class EventDecodeError(Tri24esError):
    """A stored event could not be turned back into an event model."""

    def __init__(self, position: int, type: str, problem: str) -> None:
        self.position = position
        self.type = type
        self.problem = problem
        super().__init__(f"event at position {position} ({type}): {problem}")


class LimitKey(enum.StrEnum):
    """What a cap counts running tasks by: the task's field, or its worker's when the task
    leaves it open."""

    MODEL = "model"
    SHARD = "shard"
    TYPE = "type"


def schedule_stream(name: str) -> str:
    return f"schedule-{name}"


def task_stream(task_id: str) -> str:
    return f"task-{task_id}"


def worker_stream(worker_id: str) -> str:
    return f"worker-{worker_id}"


#: The stored type of ``events.KillSwitchActivated``, named here because the kill switch's
#: reader (``projections/tables/killswitch.py``) checks the log for it without the catalog.
KILL_SWITCH_ACTIVATED = "KillSwitchActivated"

SPEND_STREAM = "spend"
BUDGET_STREAM = "budget"
KILL_SWITCH_STREAM = "killswitch"
AUDIT_STREAM = "audit"
LIMITS_STREAM = "limits"
MODELS_STREAM = "models"
