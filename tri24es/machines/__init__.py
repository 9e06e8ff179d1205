"""State machines: transition tables as data, checked by services and folded by projections.

The one API is the table (:class:`StateTable`: ``task.TASK``, ``worker.WORKER``) and, per
event, the machine's ``advance``::

    from tri24es.machines.task import TASK, advance

    state = advance(state, event)             # IllegalTransition if the event is not legal
    TASK.can(state, "claim")                  # may a trigger fire from a state?

This package exports what needs no event: the states (``states.py``) and the sets of them
callers group by (live workers, ended workers, open tasks), defined here once; callers import
them instead of restating them. The tables name the events that move each machine, so they
load the event catalog: read commands, which only look at states, do without it.
"""

from tri24es.machines.base import IllegalTransition, Move, StateTable
from tri24es.machines.states import ACTIVE as _ACTIVE_WORKERS
from tri24es.machines.states import ENDED as _ENDED_WORKERS
from tri24es.machines.states import LIVE as _LIVE_WORKERS
from tri24es.machines.states import OPEN as _OPEN_TASKS
from tri24es.machines.states import TaskState, WorkerState

#: Workers registered and taking requests (starting, idle, busy, paused).
ACTIVE_WORKER_STATES: frozenset[WorkerState] = frozenset(_ACTIVE_WORKERS)
#: Workers whose process should be running: the active ones and those stopping.
LIVE_WORKER_STATES: frozenset[WorkerState] = frozenset(_LIVE_WORKERS)
#: Workers that are gone: stopped, lost or killed.
ENDED_WORKER_STATES: frozenset[WorkerState] = frozenset(_ENDED_WORKERS)
#: Tasks not done yet: queued or running.
OPEN_TASK_STATES: frozenset[TaskState] = frozenset(_OPEN_TASKS)

__all__ = [
    "ACTIVE_WORKER_STATES",
    "ENDED_WORKER_STATES",
    "LIVE_WORKER_STATES",
    "OPEN_TASK_STATES",
    "IllegalTransition",
    "Move",
    "StateTable",
    "TaskState",
    "WorkerState",
]
