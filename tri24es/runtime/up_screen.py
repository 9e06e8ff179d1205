"""What ``tri24es up`` shows while the fleet runs: a summary redrawn in place on a terminal
(rich), else a plain line now and then; and whether the fleet is done (``--exit-when-done``).

Each tick reads the views in one snapshot (``projections/reads.py``).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from eventlog import EventStore, TransientStoreError
from tri24es.budget import dollars, killswitch_banner
from tri24es.machines import ENDED_WORKER_STATES, OPEN_TASK_STATES, TaskState, WorkerState
from tri24es.projections import connection_of, reads
from tri24es.projections.tables.killswitch import read_killswitch
from tri24es.projections.workers import WORKERS
from tri24es.runtime.queue_watcher import pending_files
from tri24es.runtime.resilience import Outage

if TYPE_CHECKING:
    from rich.console import Group
    from rich.live import Live

    from tri24es.runtime.supervisor import Child

#: How often the views are read (and the summary redrawn on a terminal).
TICK_SECONDS = 1.0
#: Without a terminal, one summary line at most this often (and only when it changed).
PLAIN_EVERY = 5.0


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"


class UpScreen:
    """Reads the views in one snapshot per tick and shows them."""

    def __init__(self, store: EventStore, queue_dir: Path | None, live: Live | None,
                 exit_when_done: bool) -> None:
        self.store, self.queue_dir = store, queue_dir
        self.children: list[Child] = []
        self.live, self.exit_when_done = live, exit_when_done
        self.last_line, self.last_printed = "", 0.0
        self.counts: reads.FleetCounts | None = None
        self.outage = Outage("up", self.report)
        self.rows: dict[str, tuple[str, str | None]] = {}  # child name -> (state, task)

    def hold(self, child: Child) -> str | None:
        """Why a worker that exited stays down (read from the log now): it was stopped by
        request, or the kill switch is on (it comes back once the switch is reset). None for
        any other child, or when the store cannot say (a crash is restarted as ever)."""
        worker_id = child.spec.worker_id
        if worker_id is None:
            return None
        try:
            with self.store.snapshot() as tx:
                conn = connection_of(tx)
                row = WORKERS.load_by_id(conn, worker_id)
                switch = read_killswitch(conn)
        except TransientStoreError:
            return None
        if row is not None and row.stop_requested and row.state in ENDED_WORKER_STATES:
            return "stopped by request (tri24es workers stop)"
        if switch.active:
            return f"the kill switch is on ({switch.reason}); back once it is reset"
        return None

    def report(self, message: str) -> None:
        stamped = f"[{datetime.now():%H:%M:%S}] {message}"
        if self.live is not None:
            self.live.console.print(stamped, markup=False, highlight=False)
        else:
            print(stamped, flush=True)

    def tick(self) -> bool:
        """Refresh the summary; True once there is nothing left to do (--exit-when-done).
        While the store is unavailable the last summary stays (the outage is reported once);
        a fault that cannot heal is raised, and stops the fleet."""
        try:
            pending = self._read()
        except TransientStoreError as e:
            self.outage.failed(e)  # the supervisor ticks again in a second
            return False
        self.outage.ok()
        self._show()
        assert self.counts is not None
        unfinished = any(n for (state, _), n in self.counts.tasks.items()
                         if state in OPEN_TASK_STATES)
        return self.exit_when_done and not pending and not unfinished

    def final(self) -> None:
        """The summary as the fleet stopped, shown whatever was shown last."""
        try:
            self._read()
        except TransientStoreError:
            if self.counts is None:
                return
        self._show(force=True)

    def _read(self) -> list[str]:
        """Read the views in one snapshot; the queue files not submitted yet."""
        with self.store.snapshot() as tx:
            conn = connection_of(tx)
            self.counts = reads.fleet_counts(conn, self.store.head())
            self.rows = {}
            for child in self.children:
                if child.spec.worker_id is not None:
                    row = WORKERS.load_by_id(conn, child.spec.worker_id)
                    if row is not None:
                        self.rows[child.spec.name] = (row.state, row.current_task)
            return [] if self.queue_dir is None else pending_files(self.queue_dir, conn)

    def line(self) -> str:
        """The summary as one line, the kill switch first while it is on."""
        assert self.counts is not None
        switch = self.counts.killswitch
        return (f"KILL SWITCH: {switch.reason} | " if switch.active else "") + self.summary()

    def summary(self) -> str:
        counts = self.counts
        assert counts is not None
        tasks = {state.value: 0 for state in TaskState}
        for (state, _), n in counts.tasks.items():
            tasks[state] = tasks.get(state, 0) + n
        workers = {state.value: counts.workers.get(state.value, 0) for state in WorkerState}
        return (f"tasks: {_nonzero(tasks)} | workers: {_nonzero(workers)} | "
                f"spend {dollars(counts.spend_total)} ({counts.spend_events} records)")

    def _show(self, force: bool = False) -> None:
        if self.live is not None:
            self.live.update(self.frame(), refresh=True)
            return
        line, now = self.line(), time.monotonic()
        if force or (line != self.last_line and now - self.last_printed >= PLAIN_EVERY):
            self.report(line)
            self.last_line, self.last_printed = line, now

    def frame(self) -> Group:
        """The live screen: the kill switch banner first, the summary, the processes."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        assert self.counts is not None
        banner = killswitch_banner(self.counts.killswitch)  # first: in sight on any terminal
        table = Table(box=None, header_style="bold")
        for column in ("process", "pid", "state", "task", "restarts"):
            table.add_column(column)
        for child in self.children:
            state, task = self.rows.get(child.spec.name, (None, None))
            if child.held is not None:
                state = f"down: {child.held}"
            elif not child.running:
                state = "restarting" if child.restart_at is not None else "stopped"
            table.add_row(child.spec.name, str(child.pid or "-"), state or "running",
                          task or "", str(child.restarts))
        return Group(*([Text(banner, style="bold white on red")] if banner else []),
                     Text.assemble(("tri24es up", "bold"), "  ", self.summary()), table,
                     Text("Ctrl-C stops the fleet (running tasks go back to the queue)",
                          style="dim"))
