"""``tri24es up``: run the fleet (queue watcher and workers) from one command, with a live
summary, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventlog import EventStore, sqlite_path
from eventlog.threads import threads_without_signals
from tri24es.cli.common import Context, context_of

if TYPE_CHECKING:  # rich, the supervisor, the demo and the domain are imported on use
    from rich.console import Group
    from rich.live import Live

    from tri24es.projections.sql import Db
    from tri24es.runtime.supervisor import Child, ChildSpec

#: How often the views are read (and the summary redrawn on a terminal).
TICK_SECONDS = 1.0
#: Without a terminal, one summary line at most this often (and only when it changed).
PLAIN_EVERY = 5.0
_UNFINISHED = ("queued", "running")  # TaskState.QUEUED and RUNNING (a test keeps them so)


def pending_queue_files(queue_dir: Path, conn: Db) -> list[str]:
    """Ids of queue files the queue watcher has not submitted yet (rejected ones are moved
    out of the folder, so they do not stay pending)."""
    from tri24es.inputs.taskfile import Location, locate
    from tri24es.projections import QUEUE

    pending = []
    for path in sorted(queue_dir.glob("*.md")) + sorted(queue_dir.glob("*/*.md")):
        where = locate(PurePosixPath(path.relative_to(queue_dir).as_posix()))
        if isinstance(where, Location) and QUEUE.load_by_id(conn, where.task_id) is None:
            pending.append(where.task_id)
    return pending


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"


class Dashboard:
    """Reads the views in one snapshot per tick and shows them: a rich table redrawn in
    place on a terminal, else a plain line now and then."""

    def __init__(self, store: EventStore, queue_dir: Path | None, live: Live | None,
                 exit_when_done: bool) -> None:
        self.store, self.queue_dir = store, queue_dir
        self.children: list[Child] = []
        self.live, self.exit_when_done = live, exit_when_done
        self.last_line, self.last_printed = "", 0.0
        self.info: dict[str, Any] = {}
        self.rows: dict[str, dict[str, Any]] = {}

    def report(self, message: str) -> None:
        stamped = f"[{datetime.now():%H:%M:%S}] {message}"
        if self.live is not None:
            self.live.console.print(stamped, markup=False, highlight=False)
        else:
            print(stamped, flush=True)

    def tick(self) -> bool:
        """Refresh the summary; True once there is nothing left to do (--exit-when-done)."""
        pending = self._read()
        self._show()
        by_state = self.info["queue"]["by_state"]
        return self.exit_when_done and not pending and not any(by_state[s] for s in _UNFINISHED)

    def final(self) -> None:
        """The summary as the fleet stopped, shown whatever was shown last."""
        self._read()
        self._show(force=True)

    def _read(self) -> list[str]:
        """Read the views in one snapshot; the queue files not submitted yet."""
        from tri24es.projections import WORKERS, connection_of
        from tri24es.views import live_summary

        with self.store.snapshot() as tx:
            conn = connection_of(tx)
            self.info = live_summary(conn, self.store.head())
            self.rows = {}
            for child in self.children:
                if child.spec.worker_id is not None:
                    row = WORKERS.load_by_id(conn, child.spec.worker_id)
                    if row is not None:
                        self.rows[child.spec.name] = {"state": row.state,
                                                      "task": row.current_task}
            return [] if self.queue_dir is None else pending_queue_files(self.queue_dir, conn)

    def line(self) -> str:
        info = self.info
        spend = info["spend"]
        return (f"tasks: {_nonzero(info['queue']['by_state'])} | "
                f"workers: {_nonzero(info['workers']['by_state'])} | "
                f"spend ${spend['total_usd']} ({spend['events']} records)")

    def _show(self, force: bool = False) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            return
        line, now = self.line(), time.monotonic()
        if force or (line != self.last_line and now - self.last_printed >= PLAIN_EVERY):
            self.report(line)
            self.last_line, self.last_printed = line, now

    def _table(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, header_style="bold")
        for column in ("process", "pid", "state", "task", "restarts"):
            table.add_column(column)
        for child in self.children:
            row = self.rows.get(child.spec.name, {})
            if not child.running:
                state = "restarting" if child.restart_at is not None else "stopped"
            else:
                state = row.get("state") or "running"
            table.add_row(child.spec.name, str(child.pid or "-"), state,
                          row.get("task") or "", str(child.restarts))
        return Group(Text.assemble(("tri24es up", "bold"), "  ", self.line()), table,
                     Text("Ctrl-C stops the fleet (running tasks go back to the queue)",
                          style="dim"))


def _child_env(context: Context) -> dict[str, str]:
    """The environment of every child: ours, with the project and store made absolute."""
    s = context.settings
    path = sqlite_path(s.db_url)
    db = s.db_url if path is None else str(Path(path).resolve())
    return os.environ | {"TRI24ES_ROOT": str(s.root.resolve()), "TRI24ES_DB": db,
                         "PYTHONUNBUFFERED": "1"}


def up(
    ctx: typer.Context,
    workers: Annotated[
        int, typer.Option("--workers", "-n", min=1, help="How many workers to run.")
    ] = 2,
    exec_command: Annotated[
        str | None,
        typer.Option("--exec", help="Agent command for every task (split like a shell, never "
                                    "run by one). Default: each task's own command."),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Queue a few sample tasks and run them with a "
                                          "simulated agent (no real agent, no real spend).")
    ] = False,
    no_watcher: Annotated[
        bool, typer.Option("--no-watcher", help="Do not run the queue watcher (tasks/queue/ "
                                                "files are then not picked up).")
    ] = False,
    exit_when_done: Annotated[
        bool, typer.Option("--exit-when-done", help="Stop the fleet and exit 0 once no task is "
                                                    "queued or running (for scripts and CI).")
    ] = False,
) -> None:
    """Run the fleet: the queue watcher and N workers, restarted if they crash, with a live
    summary, until Ctrl-C or SIGTERM (exit 0; running tasks go back to the queue).

    Without --exec or --demo, each worker runs every task's own command.

    Each process's output goes to logs/up/<name>.log.

    Example: tri24es up --workers 4 --exec 'claude -p --output-format stream-json --verbose'
    """
    # Imported on use: only this command needs them, and every other one starts faster.
    from tri24es.projections import install
    from tri24es.runtime.demo import demo_agent_command
    from tri24es.runtime.supervisor import fleet_specs

    context = context_of(ctx)
    s = context.settings
    store = context.open_store()
    try:
        install(store)
        if demo:
            if exec_command is None:
                exec_command = demo_agent_command()
            _seed_demo(store, context, s.tasks_dir / "queue", direct=no_watcher)
        specs = fleet_specs(workers, exec_command=exec_command, watcher=not no_watcher)
        _run(store, context, specs, exit_when_done, no_watcher)
    finally:
        store.close()


def _seed_demo(store: EventStore, context: Context, queue_dir: Path, *, direct: bool) -> None:
    from tri24es.runtime.demo import demo_specs, write_queue_files
    from tri24es.services import Services

    specs = demo_specs()
    if direct:
        Services(store, actor=context.actor, trace_id=context.settings.trace_id).submit_many(
            specs)
        typer.echo(f"demo: submitted {len(specs)} tasks")
    else:
        write_queue_files(queue_dir, specs)
        typer.echo(f"demo: wrote {len(specs)} task files to {queue_dir}/")


def _run(store: EventStore, context: Context, specs: list[ChildSpec], exit_when_done: bool,
         no_watcher: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    from tri24es.runtime.signals import received_signals
    from tri24es.runtime.supervisor import Supervisor, signal_wakeup

    s = context.settings
    log_dir = s.root / "logs" / "up"
    queue_dir = None if no_watcher else s.tasks_dir / "queue"
    interactive = sys.stdout.isatty()
    live = Live(console=Console(), auto_refresh=False, transient=False) if interactive else None
    dashboard = Dashboard(store, queue_dir, live, exit_when_done)
    supervisor = Supervisor(specs, env=_child_env(context), log_dir=log_dir,
                            report=dashboard.report)
    dashboard.children = supervisor.children
    dashboard.report(f"up: {len(specs)} processes, logs in {log_dir}/")
    with received_signals((signal.SIGTERM, signal.SIGINT)) as inbox, signal_wakeup() as wake:
        if live is not None:
            with threads_without_signals():  # rich's refresh thread
                live.start()
        try:
            reason = supervisor.run(inbox, wake, dashboard.tick, TICK_SECONDS)
            dashboard.final()
        finally:
            if live is not None:
                live.stop()
    typer.echo(f"up: stopped ({reason})")
