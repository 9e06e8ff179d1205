"""Worker commands: register, heartbeat, pause/resume/stop requests and facts."""

from __future__ import annotations

from collections.abc import Callable

from eventlog import NO_STREAM
from tri24es import events as ev
from tri24es.events import (
    Event,
)
from tri24es.machines import WorkerState
from tri24es.machines.worker import advance as advance_worker
from tri24es.names import worker_stream
from tri24es.projections import connection_of
from tri24es.projections.tables.workers import WorkerRow
from tri24es.projections.workers import WORKERS
from tri24es.services.base import (
    ServiceBase,
    is_gone,
    retry_on_conflict,
)
from tri24es.timeutil import from_us


class WorkerCommands(ServiceBase):
    # --- workers -----------------------------------------------------------------------

    @retry_on_conflict
    def start_worker(
        self, worker_id: str, *, pid: int, pid_start_time: int, host: str,
        shard: str | None = None, model: str | None = None, type: str | None = None,
        has_exec: bool = True,
    ) -> None:
        """Register a worker (again, if it had stopped) and mark it ready to claim.
        ``has_exec``: it runs every task with a command of its own (``--exec``); without,
        only tasks that carry their own command."""
        started = ev.WorkerStarted(worker=worker_id, pid=pid, pid_start_time=pid_start_time,
                                   host=host, shard=shard, model=model, type=type,
                                   has_exec=has_exec)
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = WORKERS.load_by_id(conn, worker_id)
            if row is not None:
                advance_worker(WorkerState(row.state), started)  # raises if still live
            self._append(conn, tx, worker_stream(worker_id),
                         [started, ev.WorkerHeartbeat(worker=worker_id)],
                         NO_STREAM if row is None else row.version)

    @retry_on_conflict
    def _worker_event(self, worker_id: str, make: Callable[[WorkerRow], Event | None]) -> bool:
        """Append the event ``make`` builds from the worker's row (None: nothing to do)."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = self._worker(conn, worker_id)
            event = make(row)
            if event is None:
                return False
            advance_worker(WorkerState(row.state), event)
            self._append(conn, tx, worker_stream(worker_id), [event], row.version)
            return True

    def heartbeat(self, worker_id: str) -> None:
        self._worker_event(worker_id, lambda row: ev.WorkerHeartbeat(worker=worker_id))

    def request_pause(self, worker_id: str, *, by: str | None = None,
                      reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: None if is_gone(row) or
                                  row.pause_requested else
                                  ev.WorkerPauseRequested(worker=worker_id, by=by, reason=reason))

    def request_resume(self, worker_id: str, *, by: str | None = None) -> bool:
        return self._worker_event(
            worker_id, lambda row: ev.WorkerResumeRequested(worker=worker_id, by=by)
            if not is_gone(row) and (row.pause_requested or row.state == WorkerState.PAUSED)
            else None)

    def request_stop(self, worker_id: str, *, by: str | None = None,
                     reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: None if row.stop_requested else
                                  ev.WorkerStopRequested(worker=worker_id, by=by, reason=reason))

    def paused(self, worker_id: str) -> bool:
        return self._worker_event(worker_id, lambda row: None if row.state == WorkerState.PAUSED
                                  else ev.WorkerPaused(worker=worker_id))

    def resumed(self, worker_id: str) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerResumed(worker=worker_id)
                                  if row.state == WorkerState.PAUSED else None)

    def stopped(self, worker_id: str, reason: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerStopped(worker=worker_id,
                                                                          reason=reason))

    def mark_lost(self, worker_id: str, *, by: str | None = None,
                  process: tuple[int, int] | None = None) -> bool:
        """Declare a live worker lost (e.g. its process is gone): False if it is gone already.
        ``process``: the (pid, pid_start_time) the caller found gone; False, and nothing
        recorded, if the worker is registered under another process since (a new
        incarnation of the id, not the one found gone, must not be declared lost)."""
        return self._worker_event(worker_id, lambda row: None if is_gone(row) or (
            process is not None and (row.pid, row.pid_start_time) != process)
            else ev.WorkerLost(worker=worker_id, by=by, last_seen=from_us(row.last_seen)))

    def signalled(self, worker_id: str, signal: str, pid: int, *, target: str = "worker",
                  by: str | None = None) -> bool:
        return self._worker_event(worker_id, lambda row: ev.WorkerSignalled(
            worker=worker_id, signal=signal, pid=pid, target=target, by=by))

