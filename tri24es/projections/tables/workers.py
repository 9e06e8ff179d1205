"""The workers table as readers see it: a worker's row and the columns."""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = (
    "worker_id, state, pid, pid_start_time, host, shard, model, type, current_task,"
    " current_attempt, pause_requested, stop_requested, started_at, last_seen, version,"
    " has_exec"
)


@dataclass(slots=True)
class WorkerRow:
    worker_id: str
    state: str
    pid: int
    pid_start_time: int
    host: str
    shard: str | None
    model: str | None
    type: str | None
    current_task: str | None = None
    current_attempt: int | None = None
    pause_requested: bool = False
    stop_requested: bool = False
    started_at: int = 0
    last_seen: int = 0
    version: int = 0
    has_exec: bool = True
