"""``tri24es up``: run the fleet (queue watcher and workers) from one command, with a live
summary, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import Context, check_exec, context_of

if TYPE_CHECKING:  # rich, the supervisor, the demo and the domain are imported on use
    from eventlog import EventStore
    from tri24es.runtime.supervisor import ChildSpec
    from tri24es.services import Services

#: Each worker is a Python process (~40 MB) beside its agent: a typo such as 10000 would
#: fork a storm, not a fleet. Larger fleets run on several hosts (PostgreSQL).
MAX_WORKERS = 256


def _child_env(context: Context) -> dict[str, str]:
    """The environment of every child: ours, with the project and store made absolute."""
    s = context.settings
    return os.environ | {"TRI24ES_ROOT": str(s.root.resolve()), "TRI24ES_DB": s.absolute_db_url,
                         "PYTHONUNBUFFERED": "1"}


def up(
    ctx: typer.Context,
    workers: Annotated[
        int, typer.Option("--workers", "-n", min=1, max=MAX_WORKERS,
                          help=f"How many workers to run (at most {MAX_WORKERS} on one host).")
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
    model: Annotated[
        str | None, typer.Option("--model", help="Workers take tasks for this model (and "
                                                 "tasks that name none).")
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="Workers take tasks of this shard (and "
                                                 "tasks that name none).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Workers take tasks of this type (and tasks "
                                                "that name none).")
    ] = None,
    task_timeout: Annotated[
        float | None, typer.Option("--task-timeout", min=0.1, help="Seconds before an agent "
                                   "is stopped and its task fails with 'timeout'.")
    ] = None,
    lease_seconds: Annotated[
        float | None, typer.Option("--lease-seconds", min=0.5, help="Lease on a claimed task "
                                   "(env TRI24ES_LEASE_SECONDS, default 30).")
    ] = None,
    repo: Annotated[
        Path | None, typer.Option("--repo", help="A git repository: each attempt runs in a "
                                  "worktree of it (env TRI24ES_REPO).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="claude, codex or gemini: the command line "
                                 "for tasks without a command of their own.")
    ] = None,
    review: Annotated[
        bool, typer.Option("--review", help="Every finished attempt waits for review.")
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Run the web dashboard too (tri24es serve, on "
                           "127.0.0.1).")
    ] = False,
    serve_port: Annotated[
        int, typer.Option("--serve-port", min=0, max=65535, help="The dashboard's port "
                          "(with --serve).")
    ] = 8024,
) -> None:
    """Run the fleet: the queue watcher, N workers and the budget watchdog, restarted if
    they crash, with a live summary, until Ctrl-C or SIGTERM (exit 0; running tasks go back
    to the queue). A worker stopped by `tri24es workers stop` stays down; while the kill
    switch is on, stopped workers stay down and come back once it is reset.

    Without --exec or --demo, workers take only tasks that carry their own command.

    Each process's output goes to logs/up/<name>.log.

    Example: tri24es up --workers 4 --exec 'claude -p --output-format stream-json --verbose'
    """
    # Imported on use: only this command needs them, and every other one starts faster.
    from tri24es.runtime.demo import demo_agent_command
    from tri24es.runtime.supervisor import ChildSpec, fleet_specs

    context = context_of(ctx)
    # The workers' own settings, read here first: a bad value is one line now, not workers
    # that exit at once and are restarted for ever.
    context.settings.usage_pause_seconds()
    context.settings.no_progress_rule()
    exec_command = check_exec(exec_command)
    with context.services(daemon="up") as services:
        if demo:
            if exec_command is None:
                exec_command = demo_agent_command()
            _seed_demo(services, context.settings.paths.queue, direct=no_watcher)
        elif exec_command is None and agent is None:
            typer.echo("up: no --exec or --agent: workers take only tasks that carry their own "
                       "command or agent (submit --command/--agent, or a 'command:' or "
                       "'agent:' line in a task file)", err=True)
        options = [*(["--repo", str(repo.resolve())] if repo else []),
                   # the demo's files follow their tasks to tasks/completed/ or failed/, so
                   # that the next run's queue does not look like a backlog
                   *(["--legacy-files"] if demo else []),
                   *(["--agent", agent] if agent else []), *(["--review"] if review else []),
                   *(["--model", model] if model else []),
                   *(["--shard", shard] if shard else []), *(["--type", type_] if type_ else []),
                   *(["--task-timeout", repr(task_timeout)] if task_timeout else []),
                   *(["--lease-seconds", repr(lease_seconds)] if lease_seconds else [])]
        specs = fleet_specs(workers, exec_command=exec_command, watcher=not no_watcher,
                            worker_options=options)
        if serve:  # supervised like the rest: restarted if it crashes
            specs.append(ChildSpec("serve", ("serve", "--port", str(serve_port))))
            where = f"http://127.0.0.1:{serve_port}/" if serve_port else "a free port"
            typer.echo(f"up: the dashboard is on {where} (logs/up/serve.log)")
        _run(services.store, context, specs, exit_when_done, no_watcher)


def _seed_demo(services: Services, queue_dir: Path, *, direct: bool) -> None:
    from tri24es.runtime.demo import demo_specs, write_queue_files

    specs = demo_specs()
    if direct:
        services.submit_many(specs)
        typer.echo(f"demo: submitted {len(specs)} tasks")
    else:
        write_queue_files(queue_dir, specs)
        typer.echo(f"demo: wrote {len(specs)} task files to {queue_dir}/")


def _run(store: EventStore, context: Context, specs: list[ChildSpec], exit_when_done: bool,
         no_watcher: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    from eventlog.threads import threads_without_signals
    from tri24es.files import private_folder
    from tri24es.runtime.signals import received_signals, signal_wakeup
    from tri24es.runtime.supervisor import Supervisor
    from tri24es.runtime.up_screen import TICK_SECONDS, UpScreen

    paths = context.settings.paths
    log_dir = paths.up_logs
    queue_dir = None if no_watcher else paths.queue
    interactive = sys.stdout.isatty()
    live = Live(console=Console(), auto_refresh=False, transient=False) if interactive else None
    screen = UpScreen(store, queue_dir, live, exit_when_done)
    private_folder(log_dir, paths.root)  # refused before anything starts, not at a restart
    supervisor = Supervisor(specs, env=_child_env(context), log_dir=log_dir,
                            report=screen.report, hold=screen.hold, root=paths.root)
    screen.children = supervisor.children
    screen.report(f"up: {len(specs)} processes, logs in {log_dir}/")
    with received_signals((signal.SIGTERM, signal.SIGINT)) as inbox, signal_wakeup() as wake:
        if live is not None:
            with threads_without_signals():  # rich's refresh thread
                live.start()
        try:
            reason = supervisor.run(inbox, wake, screen.tick, TICK_SECONDS)
            screen.final()
        finally:
            if live is not None:
                live.stop()
    typer.echo(f"up: stopped ({reason})")
