"""The states of tasks and workers, and the groups of them callers ask about.

Apart from the transition tables (``task.py``, ``worker.py``), which name the events that move
them, so that what only reads the views imports no event catalog.
"""

from __future__ import annotations

import enum


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    REVIEW = "review"  # an attempt finished; its result waits for a person's approval
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Not done yet: waiting to be claimed, running, or waiting for review.
OPEN = (TaskState.QUEUED, TaskState.RUNNING, TaskState.REVIEW)


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    LOST = "lost"
    KILLED = "killed"


#: Registered and taking requests: a stop request moves these to ``stopping``.
ACTIVE = (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.PAUSED)
#: Whose process should be running: the active states and ``stopping``.
LIVE = (*ACTIVE, WorkerState.STOPPING)
#: The terminal states, left only by a new registration.
ENDED = (WorkerState.STOPPED, WorkerState.LOST, WorkerState.KILLED)
