"""The task lifecycle (DESIGN.md §4): one table, read by services and by the queue fold.

States: ``queued``, ``running``, ``review`` (a finished attempt's result waits for a
person), ``completed``, ``failed`` (attempts exhausted: the dead letter) and ``cancelled``.
``completed`` and ``cancelled`` are terminal; ``failed`` only leaves by a manual retry;
``review`` by approval (completed), rejection (queued, the reviewer's words given to the
next attempt) or cancellation.

Events and triggers (:func:`trigger_for`):

- ``TaskSubmitted`` is the stream's first event and creates the task in ``queued``
  (:func:`advance` from ``None``); it is not a trigger.
- ``TaskClaimed`` -> claim, ``TaskCompleted`` -> complete, ``TaskDeadLettered`` ->
  dead_letter, ``TaskCancelled`` -> cancel.
- ``TaskRequeued`` -> requeue (running -> queued: attempt failed with attempts left, lease
  expired, worker stopped), except from ``failed`` with reason ``manual``, which is the
  manual retry (failed -> queued). A ``TaskRequeued`` from ``failed`` with any other reason
  stays ``requeue`` and is therefore illegal: only a person retries a dead letter.
- ``TaskFailed`` does not move the task by itself: it is always followed by ``TaskRequeued``
  or ``TaskDeadLettered``, which carry the decision. ``TaskStarted``, ``LeaseRenewed`` and
  ``TaskRejected`` do not move it either.
"""

from __future__ import annotations

from tri24es.events import (
    Event,
    TaskApproved,
    TaskAwaitingReview,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskDeadLettered,
    TaskRequeued,
    TaskReviewRejected,
    TaskSubmitted,
)
from tri24es.machines.base import Move, StateTable
from tri24es.machines.states import TaskState
from tri24es.names import RequeueReason

_Q, _R, _F, _V = TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED, TaskState.REVIEW

TASK_TRANSITIONS: list[Move[TaskState]] = [
    {"trigger": "claim", "source": _Q, "dest": _R},
    {"trigger": "complete", "source": _R, "dest": TaskState.COMPLETED},
    {"trigger": "requeue", "source": _R, "dest": _Q},
    {"trigger": "dead_letter", "source": _R, "dest": _F},
    {"trigger": "cancel", "source": [_Q, _R, _V], "dest": TaskState.CANCELLED},
    {"trigger": "retry", "source": _F, "dest": _Q},
    {"trigger": "await_review", "source": _R, "dest": _V},
    {"trigger": "approve", "source": _V, "dest": TaskState.COMPLETED},
    {"trigger": "reject_review", "source": _V, "dest": _Q},
]

TASK = StateTable("task", TaskState, TASK_TRANSITIONS, initial=_Q)

INITIAL_EVENT = TaskSubmitted

TASK_EVENT_TRIGGERS: dict[type[Event], str] = {
    TaskClaimed: "claim",
    TaskCompleted: "complete",
    TaskRequeued: "requeue",
    TaskDeadLettered: "dead_letter",
    TaskCancelled: "cancel",
    TaskAwaitingReview: "await_review",
    TaskApproved: "approve",
    TaskReviewRejected: "reject_review",
}
"""The trigger each task event fires; events not listed leave the state alone."""

# Hot-path aliases: the fold calls these per event, and reading an Enum member or a method
# through its class costs more in Python 3.11 than the dict lookup itself.
_MANUAL = RequeueReason.MANUAL
_EVENT_TRIGGER = TASK_EVENT_TRIGGERS.get
_FIRE = TASK.fire


def trigger_for(state: TaskState, event: Event) -> str | None:
    """The trigger ``event`` fires on a task in ``state``; None when it changes nothing."""
    if state is _F and type(event) is TaskRequeued and event.reason is _MANUAL:
        return "retry"
    return _EVENT_TRIGGER(type(event))


def advance(state: TaskState | None, event: Event) -> TaskState | None:
    """The task's state after ``event``; ``None`` means no task yet (before TaskSubmitted).

    Raises :class:`~tri24es.machines.base.IllegalTransition` when the event is not legal
    from ``state``.
    """
    if state is None:
        return _Q if type(event) is INITIAL_EVENT else None
    return _FIRE(state, trigger_for(state, event))
