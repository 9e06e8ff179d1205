"""``tri24es submit`` and ``tri24es tasks``: put work in the queue, look at it, steer it."""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer

from tri24es.cli.common import (
    JsonOption,
    context_of,
    parse_priority,
    parse_task_state,
    print_json,
)
from tri24es.errors import UsageError

tasks_app = typer.Typer(
    help="List, show, cancel and retry tasks.", no_args_is_help=True
)

SLUG_LENGTH = 40


def slug(title: str) -> str:
    """``"Fix the login page!"`` -> ``"fix-the-login-page"`` (empty titles give ``"task"``)."""
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:SLUG_LENGTH].rstrip("-") or "task"


def default_task_id(title: str) -> str:
    return f"{slug(title)}-{secrets.token_hex(3)}"


def _title_of(body: str, fallback: str) -> str:
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or fallback
    return fallback


def submit(
    ctx: typer.Context,
    title: Annotated[
        str | None, typer.Argument(help="What the task is (default with --file: its # heading).")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--id", help="Task id (default: file stem, or title slug).")
    ] = None,
    priority: Annotated[
        str, typer.Option("--priority", help="CRITICAL, HIGH, MEDIUM or LOW.")
    ] = "MEDIUM",
    shard: Annotated[str | None, typer.Option("--shard", help="Only for this shard.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only for this model.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only for this type.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Markdown file holding the task's body.")
    ] = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", help="Retries after the first attempt (>= 0).")
    ] = 3,
    command: Annotated[
        str | None, typer.Option("--command", help="This task's agent command (split like a "
                                 "shell, never run by one), for workers without --exec.")
    ] = None,
    max_budget: Annotated[
        str | None, typer.Option("--max-budget", help="USD the task may spend over all its "
                                 "attempts.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a task to the queue; idempotent by id (a known id is left as it is).

    Example: tri24es submit "Fix the login page" --priority HIGH --model claude
    """
    from tri24es.cli.render import task_dict
    from tri24es.inputs.taskfile import id_problem, parse_budget, parse_command
    from tri24es.services import TaskSpec

    rank = parse_priority(priority)
    if max_retries < 0:
        raise UsageError(f"bad --max-retries {max_retries}: must be >= 0")
    body, sha, source = "", None, None
    if file is not None:
        try:
            raw = file.read_bytes()
            body = raw.decode()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --file {str(file)!r}: {e}") from e
        sha, source = hashlib.sha256(raw).hexdigest(), str(file)
        title = title or _title_of(body, file.stem)
        task_id = task_id or file.stem
    if not title or not title.strip():
        raise UsageError("a task needs a TITLE (or --file)")
    task_id = task_id or default_task_id(title)
    problem = id_problem(task_id)  # the queue folder's rule: an id is also a file name
    if problem is not None:
        raise UsageError(f"{problem}: nothing submitted")
    try:
        argv = parse_command(command)
        budget = None if max_budget is None else parse_budget(max_budget)
    except ValueError as e:
        raise UsageError(f"{e}: nothing submitted") from None
    spec = TaskSpec(
        task_id=task_id, title=title, priority=rank, body=body, shard=shard, model=model,
        type=type_, max_retries=max_retries, source=source, body_sha256=sha, command=argv,
        max_budget_usd=budget,
    )
    with context_of(ctx).services() as services:
        row, new = services.submit(spec)
    if as_json:
        print_json({"task_id": row.task_id, "new": new, **task_dict(row)})
    elif new:
        typer.echo(f"submitted {row.task_id}")
    else:
        typer.echo(f"{row.task_id} already submitted ({row.state}): unchanged")


@tasks_app.command("list")
def list_tasks(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List tasks in claim order: CRITICAL first, then oldest first.

    Example: tri24es tasks list --state queued --json
    """
    from tri24es.cli.render import task_dict
    from tri24es.projections import reads

    wanted = None if state is None else parse_task_state(state).value
    with context_of(ctx).reading() as (_, conn):
        rows = reads.tasks(conn, wanted)
        waits = reads.waiting(conn) if wanted in (None, "queued") else []
    if as_json:
        print_json([task_dict(row) for row in rows])
        return
    for wait in waits:  # no silent waiting: say why queued tasks are not being taken
        typer.echo(f"tri24es: note: {wait}", err=True)
    for row in rows:
        d = task_dict(row)
        typer.echo(
            f"{row.task_id:<28} {row.state:<10} {d['priority']:<8} "
            f"attempts {row.attempt}, retries {row.retries_used}/{row.max_retries}  "
            f"{row.worker or '-':<14} {row.title}"
        )


@tasks_app.command("show")
def show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a task's row and its full event history.

    Example: tri24es tasks show fix-login-3f9a2c
    """
    from tri24es.cli.render import decode_problem, history_entry, task_dict
    from tri24es.events import task_stream
    from tri24es.projections import QUEUE
    from tri24es.services import NotFound

    with context_of(ctx).reading() as (store, conn):
        row = QUEUE.load_by_id(conn, task_id)
        history = []
        for event in store.read_stream(task_stream(task_id)):
            problem = decode_problem(event)
            if problem is None:
                history.append(history_entry(event))
            else:  # a corrupt or unknown event: reported, the rest of the history shown
                typer.echo(f"tri24es: warning: skipped {problem}", err=True)
    if row is None and not history:
        raise NotFound(f"no task {task_id!r}")
    task = None if row is None else task_dict(row)
    if as_json:
        print_json({"task": task, "history": history})
        return
    if task is not None:
        for key, value in task.items():
            typer.echo(f"{key + ':':<20}{'' if value is None else value}")
    typer.echo("history:")
    for h in history:
        fields = " ".join(f"{k}={v}" for k, v in h["fields"].items())
        typer.echo(f"{h['position']:>7}  {h['time']}  {h['type']:<16} {h['who'] or '-'}  {fields}")


@tasks_app.command("cancel")
def cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the log.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued or running task.

    Example: tri24es tasks cancel fix-login-3f9a2c --reason "duplicate"
    """
    context = context_of(ctx)
    with context.services() as services:
        services.cancel(task_id, by=context.actor, reason=reason)
    _done(task_id, "cancelled", as_json)


@tasks_app.command("retry")
def retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    budget: Annotated[
        str | None, typer.Option("--budget", help="Raise the task's max_budget_usd (over all "
                                 "its attempts, those spent included) to USD.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a failed (dead-lettered) task back to the queue with a fresh retry budget; a task
    that spent its whole max_budget_usd needs --budget USD, a higher cap.

    Example: tri24es tasks retry fix-login-3f9a2c --budget 10
    """
    from tri24es.inputs.taskfile import parse_budget

    try:
        cap = None if budget is None else parse_budget(budget)
    except ValueError as e:
        raise UsageError(f"bad --budget: {e}") from None
    context = context_of(ctx)
    with context.services() as services:
        services.retry(task_id, by=context.actor, budget_usd=cap)
    _done(task_id, "queued", as_json)


def _done(task_id: str, state: str, as_json: bool) -> None:
    if as_json:
        print_json({"task_id": task_id, "state": state})
    else:
        typer.echo(f"{task_id}: {state}")
