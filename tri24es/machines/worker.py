"""The worker lifecycle (DESIGN.md §4): one table, read by services and by the workers fold.

States: ``starting``, ``idle``, ``busy``, ``paused`` (the *active* states), ``stopping``
(active or stopping: *live*, a process should be running), and the terminal (*ended*)
``stopped``, ``lost`` and ``killed``.

Decisions beyond DESIGN.md:

- A worker may stop without a prior stop request (SIGTERM handled in-process): ``stopped``
  is legal from every live state as well as from ``stopping``.
- ``lost`` and ``killed`` are reachable from ``stopping`` too: a stop can hang.
- The terminal states are left only by ``restart`` (-> ``starting``): a worker that comes
  back under the same id registers again with ``WorkerStarted``. ``WorkerStarted`` for a
  worker that is still live or stopping is illegal: the stale incarnation must first be
  declared ``WorkerLost`` (or stop), so its held task is not silently forgotten.
- There is no "ready" event in the catalog: the first ``WorkerHeartbeat`` of a ``starting``
  worker fires ``ready``. A worker appends a heartbeat once its loop runs, before its first
  claim (a claim by a ``starting`` worker is illegal, like any claim by a non-idle one).
- ``WorkerPauseRequested``, ``WorkerResumeRequested`` and heartbeats of a running worker
  change nothing: requests are not facts; ``WorkerPaused``/``WorkerResumed`` are.
- ``WorkerSignalled`` moves the worker only for SIGKILL sent to the worker itself
  (``target == "worker"``); a SIGKILL to the agent's process group, or any other signal,
  changes nothing (its effect is recorded by the event that follows, e.g. WorkerStopped).
- busy/idle follow the *task* streams: ``TaskClaimed`` fires ``take_task`` on the claiming
  worker; the end of the task it holds (``TaskCompleted``, ``TaskRequeued``,
  ``TaskDeadLettered``, ``TaskCancelled``) fires ``finish_task`` only if the worker is
  ``busy``. A worker that was paused, stopping or gone when its task ended stays where it
  is (the workers projection clears its current task). ``TaskFailed`` changes nothing: the
  requeue or dead letter that follows it does. The projection routes a task event to the
  worker holding that task; :func:`worker_trigger_for` does not check the worker id.
"""

from __future__ import annotations

from tri24es.events import (
    Event,
    TaskAwaitingReview,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskDeadLettered,
    TaskRequeued,
    WorkerHeartbeat,
    WorkerLost,
    WorkerPaused,
    WorkerResumed,
    WorkerSignalled,
    WorkerStarted,
    WorkerStopped,
    WorkerStopRequested,
)
from tri24es.machines.base import Move, StateTable
from tri24es.machines.states import ACTIVE, ENDED, LIVE, WorkerState

_STARTING, _IDLE, _BUSY = WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY

WORKER_TRANSITIONS: list[Move[WorkerState]] = [
    {"trigger": "ready", "source": _STARTING, "dest": _IDLE},
    {"trigger": "take_task", "source": _IDLE, "dest": _BUSY},
    {"trigger": "finish_task", "source": _BUSY, "dest": _IDLE},
    {"trigger": "pause", "source": [_IDLE, _BUSY], "dest": WorkerState.PAUSED},
    {"trigger": "resume", "source": WorkerState.PAUSED, "dest": _IDLE},
    {"trigger": "stop", "source": [*ACTIVE], "dest": WorkerState.STOPPING},
    {"trigger": "stopped", "source": [*LIVE], "dest": WorkerState.STOPPED},
    {"trigger": "lose", "source": [*LIVE], "dest": WorkerState.LOST},
    {"trigger": "kill", "source": [*LIVE], "dest": WorkerState.KILLED},
    {"trigger": "restart", "source": [*ENDED], "dest": _STARTING},
]

WORKER = StateTable("worker", WorkerState, WORKER_TRANSITIONS, initial=_STARTING)

INITIAL_EVENT = WorkerStarted

WORKER_EVENT_TRIGGERS: dict[type[Event], str] = {
    WorkerStarted: "restart",
    WorkerPaused: "pause",
    WorkerResumed: "resume",
    WorkerStopRequested: "stop",
    WorkerStopped: "stopped",
    WorkerLost: "lose",
    TaskClaimed: "take_task",
}
"""The trigger each event fires regardless of state; the rest are decided in code below."""

TASK_ENDS: frozenset[type[Event]] = frozenset(
    {TaskCompleted, TaskRequeued, TaskDeadLettered, TaskCancelled, TaskAwaitingReview}
)

# Hot-path aliases (see task.py): the fold calls worker_trigger_for per event.
_EVENT_TRIGGER = WORKER_EVENT_TRIGGERS.get
_FIRE = WORKER.fire


def is_sigkill(signal: str) -> bool:
    """``"SIGKILL"``, ``"KILL"`` or ``"9"``, in any case."""
    return signal.strip().upper().removeprefix("SIG") in {"KILL", "9"}


def worker_trigger_for(state: WorkerState, event: Event) -> str | None:
    """The trigger ``event`` (worker or task stream) fires on a worker in ``state``.

    None when it changes nothing. For a task event, the caller passes the state of the
    worker that claimed (or holds) that task.
    """
    cls = type(event)
    if cls in TASK_ENDS:
        return "finish_task" if state is _BUSY else None
    if cls is WorkerHeartbeat:
        return "ready" if state is _STARTING else None
    if type(event) is WorkerSignalled:  # type(event), not cls: mypy narrows on it
        return "kill" if event.target == "worker" and is_sigkill(event.signal) else None
    return _EVENT_TRIGGER(cls)


def advance(state: WorkerState | None, event: Event) -> WorkerState | None:
    """The worker's state after ``event``; ``None`` means not registered yet.

    Raises :class:`~tri24es.machines.base.IllegalTransition` when the event is not legal
    from ``state``.
    """
    if state is None:
        return _STARTING if type(event) is INITIAL_EVENT else None
    return _FIRE(state, worker_trigger_for(state, event))
