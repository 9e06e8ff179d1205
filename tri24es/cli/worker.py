"""``tri24es worker``: run a worker in this process until it is stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tri24es.cli.common import check_exec, context_of
from tri24es.errors import UsageError

#: services.DEFAULT_LEASE_SECONDS (a test keeps them equal), written here so that building
#: the command line does not import the services and the event catalog behind them.
DEFAULT_LEASE_SECONDS = 30.0


def worker(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None,
        typer.Option("--id", help="Worker id (env WORKER_ID). Default: worker-<pid>-<epoch>."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="Only tasks of this shard or none (WORKER_SHARD).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only tasks for this model or none "
                                                 "(WORKER_MODEL).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Only tasks of this type or none.")
    ] = None,
    exec_command: Annotated[
        str | None,
        typer.Option("--exec", help="Agent command for every task (split like a shell, never "
                                    "run by one). Default: each task's own command."),
    ] = None,
    max_tasks: Annotated[
        int | None, typer.Option("--max-tasks", min=1, help="Exit after this many tasks.")
    ] = None,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Exit 0 once nothing is left to claim.")
    ] = False,
    task_timeout: Annotated[
        float | None,
        typer.Option("--task-timeout", min=0.1, help="Seconds before an agent is stopped and its "
                                                     "task fails with 'timeout'."),
    ] = None,
    legacy_files: Annotated[
        bool,
        typer.Option("--legacy-files", help="Move queue files through tasks/running/ to "
                                            "tasks/completed/ or tasks/failed/, as TRI-24 did."),
    ] = False,
    lease_seconds: Annotated[
        float,
        typer.Option("--lease-seconds", envvar="TRI24ES_LEASE_SECONDS", min=0.5,
                     help="Lease on a claimed task; renewed (and heartbeat sent) every third."),
    ] = DEFAULT_LEASE_SECONDS,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="A git repository: each attempt runs in a worktree of it, "
                                    "on the branch tri24es/<task id> (env TRI24ES_REPO)."),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="claude, codex or gemini: its command line for tasks "
                                     "without a command of their own."),
    ] = None,
    review: Annotated[
        bool, typer.Option("--review", help="Every finished attempt waits for review "
                                            "(tasks approve/reject) instead of completing.")
    ] = False,
) -> None:
    """Run a worker: claim tasks and run each one's agent, until stopped.

    SIGUSR1 pauses (after the current task), SIGUSR2 resumes, SIGTERM stops now (the task
    goes back to the queue; exit 0), SIGINT the same with exit 1.

    Example: tri24es worker --exec 'claude -p --output-format json' --max-tasks 10
    """
    context = context_of(ctx)
    s = context.settings
    # Imported on use: only this command needs it, and every other one starts faster.
    from tri24es.agents import check_agent
    from tri24es.paths import ProjectPaths
    from tri24es.runtime.signals import received_signals
    from tri24es.runtime.worker import Worker, WorkerOptions
    from tri24es.runtime.workspace import GitError, repository

    preset = check_agent(agent)
    exec_command = check_exec(exec_command)
    where = repo or s.repo
    try:
        top = None if where is None else repository(where.resolve())
    except GitError as e:
        raise UsageError(f"bad --repo: {e}") from None

    options = WorkerOptions(
        worker_id=worker_id or s.default_worker_id(), paths=ProjectPaths(s.root.resolve()),
        db_url=s.absolute_db_url,
        shard=shard or s.worker_shard, model=model or s.worker_model, type=type_,
        exec_command=exec_command, max_tasks=max_tasks, exit_when_idle=exit_when_idle,
        task_timeout=task_timeout, legacy_files=legacy_files, poll_interval=s.poll_interval,
        fallback_usd_per_mtok=s.fallback_usd_per_mtok, repo=top, agent=preset, review=review,
        max_record_usd=s.budget_max_spend_record, usage_pause_s=s.usage_pause_seconds(),
        no_progress=s.no_progress_rule(),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from tri24es.budget import BudgetLimits

    # Its claims reserve from today's daily limit (see Services.claim).
    budget = BudgetLimits.from_settings(s)
    with context.services(options.worker_id, daemon=f"worker {options.worker_id}",
                          lease_seconds=lease_seconds, budget=budget) as services, \
            received_signals() as inbox:
        code = Worker(services, options, inbox).run()
    raise typer.Exit(code)
