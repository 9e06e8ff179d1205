"""State machines: transition tables as data, checked by services and folded by projections.

The one API is the table (:class:`StateTable`: ``TASK``, ``WORKER``) and, per event, the
machine's ``advance``::

    state = advance_task(state, event)        # IllegalTransition if the event is not legal
    TASK.can(state, "claim")                  # may a trigger fire from a state?

The sets of states callers group by (live workers, ended workers, open tasks) are defined
here once; callers import them instead of restating them.
"""

from tri24es.machines.base import (
    TABLES,
    IllegalTransition,
    Move,
    StateTable,
    mermaid,
    render_doc,
)
from tri24es.machines.task import OPEN as _OPEN_TASKS
from tri24es.machines.task import (
    TASK,
    TASK_EVENT_TRIGGERS,
    TASK_TRANSITIONS,
    TaskState,
    trigger_for,
)
from tri24es.machines.task import advance as advance_task
from tri24es.machines.worker import ACTIVE as _ACTIVE_WORKERS
from tri24es.machines.worker import ENDED as _ENDED_WORKERS
from tri24es.machines.worker import LIVE as _LIVE_WORKERS
from tri24es.machines.worker import (
    WORKER,
    WORKER_EVENT_TRIGGERS,
    WORKER_TRANSITIONS,
    WorkerState,
    worker_trigger_for,
)
from tri24es.machines.worker import advance as advance_worker

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
    "TABLES",
    "TASK",
    "TASK_EVENT_TRIGGERS",
    "TASK_TRANSITIONS",
    "WORKER",
    "WORKER_EVENT_TRIGGERS",
    "WORKER_TRANSITIONS",
    "IllegalTransition",
    "Move",
    "StateTable",
    "TaskState",
    "WorkerState",
    "advance_task",
    "advance_worker",
    "mermaid",
    "render_doc",
    "trigger_for",
    "worker_trigger_for",
]
