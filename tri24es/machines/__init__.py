"""State machines: transition tables as data, checked by services and folded by projections.

The hot path, for services and projection folds::

    trigger = trigger_for(task_state, event)            # None: no change
    if trigger is not None:
        task_state = next_state(task_state, trigger)    # IllegalTransition if not allowed

or in one call, handling the stream's first event: ``advance_task(state, event)`` and
``advance_worker(state, event)``. ``can``/``next_state`` accept a state of either machine.
"""

from tri24es.machines.base import (
    TABLES,
    IllegalTransition,
    Lifecycle,
    Move,
    StateTable,
    allowed_triggers,
    can,
    mermaid,
    next_state,
    render_doc,
    table_of,
)
from tri24es.machines.task import (
    TASK,
    TASK_EVENT_TRIGGERS,
    TASK_TRANSITIONS,
    TaskLifecycle,
    TaskState,
    trigger_for,
)
from tri24es.machines.task import advance as advance_task
from tri24es.machines.worker import (
    WORKER,
    WORKER_EVENT_TRIGGERS,
    WORKER_TRANSITIONS,
    WorkerLifecycle,
    WorkerState,
    worker_trigger_for,
)
from tri24es.machines.worker import advance as advance_worker

__all__ = [
    "TABLES",
    "TASK",
    "TASK_EVENT_TRIGGERS",
    "TASK_TRANSITIONS",
    "WORKER",
    "WORKER_EVENT_TRIGGERS",
    "WORKER_TRANSITIONS",
    "IllegalTransition",
    "Lifecycle",
    "Move",
    "StateTable",
    "TaskLifecycle",
    "TaskState",
    "WorkerLifecycle",
    "WorkerState",
    "advance_task",
    "advance_worker",
    "allowed_triggers",
    "can",
    "mermaid",
    "next_state",
    "render_doc",
    "table_of",
    "trigger_for",
    "worker_trigger_for",
]
