"""``tri24es schedule``: recurring tasks (a cron expression and the task to submit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tri24es.cli.common import JsonOption, context_of, parse_priority, print_json
from tri24es.errors import UsageError

schedule_app = typer.Typer(help="Recurring tasks: add, list and remove schedules.",
                           no_args_is_help=True)


@schedule_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The schedule's name; its tasks are "
                                        "NAME-<slot time>.")],
    cron: Annotated[str, typer.Option("--cron", help="When: 5 cron fields (minute hour day "
                                      "month weekday), or @hourly, @daily, @weekly.")],
    title: Annotated[str, typer.Option("--title", help="Each task's title.")],
    timezone: Annotated[str, typer.Option("--tz", help="The zone the cron times are in.")]
    = "UTC",
    file: Annotated[Path | None, typer.Option("--file", help="Markdown file holding each "
                                              "task's body.")] = None,
    priority: Annotated[str, typer.Option("--priority", help="CRITICAL, HIGH, MEDIUM or "
                                          "LOW.")] = "MEDIUM",
    shard: Annotated[str | None, typer.Option("--shard", help="Only for this shard.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only for this model.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only for this type.")] = None,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries after the "
                                             "first attempt.")] = 3,
    max_budget: Annotated[str | None, typer.Option("--max-budget", help="USD each task may "
                                                   "spend over all its attempts.")] = None,
    command: Annotated[str | None, typer.Option("--command", help="Each task's agent "
                                                "command (split like a shell).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="claude, codex or gemini.")]
    = None,
) -> None:
    """Add a recurring task, submitted at each time the cron expression names (by the queue
    watcher, which `tri24es up` runs).

    Example: tri24es schedule add nightly-deps --cron "0 3 * * *" --title "Bump dependencies"
    """
    from tri24es.agents import check_agent
    from tri24es.events import ScheduleAdded
    from tri24es.files import read_regular
    from tri24es.inputs.taskfile import id_problem, parse_budget, parse_command
    from tri24es.scheduling import MAX_SCHEDULE_NAME, check_cron
    from tri24es.timeutil import now_us

    problem = id_problem(name)
    if problem is not None or len(name) > MAX_SCHEDULE_NAME:
        raise UsageError(f"bad schedule name {name!r}: letters, digits, '.', '_' and '-', at "
                         f"most {MAX_SCHEDULE_NAME}")
    if not title.strip():
        raise UsageError("--title must not be empty")
    body = ""
    if file is not None:
        try:
            body = read_regular(file).decode()  # a FIFO or a device: refused, never waited on
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --file {str(file)!r}: "
                             f"{e.strerror if isinstance(e, OSError) else e}") from e
    try:
        check_cron(cron, timezone, now_us())
        budget = None if max_budget is None else parse_budget(max_budget)
        argv = parse_command(command)
    except ValueError as e:
        raise UsageError(f"{e}: nothing added") from None
    context = context_of(ctx)
    event = ScheduleAdded(
        name=name, cron=cron, timezone=timezone, by=context.actor, title=title, body=body,
        priority=parse_priority(priority), shard=shard, model=model, type=type_,
        max_retries=max_retries, max_budget_usd=budget, command=argv,
        agent=check_agent(agent))
    with context.services() as services:
        services.add_schedule(event)
    typer.echo(f"schedule {name}: {cron} ({timezone})")


@schedule_app.command("list")
def list_schedules(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the schedules, each with its next and latest slot's task.

    Example: tri24es schedule list --json
    """
    from tri24es.scheduling import last_slot, next_slot, slot_task_id
    from tri24es.timeutil import iso_time

    with context_of(ctx).services() as services:
        now = services.clock()
        found = []
        for row, added in services.schedules():
            last = last_slot(row.cron, row.timezone, now)
            after = next_slot(row.cron, row.timezone, now)  # None: it names no date
            found.append({
                "name": row.name, "cron": row.cron, "timezone": row.timezone,
                "title": added.title, "added_at": iso_time(row.added_at),
                "next_at": None if after is None else iso_time(after),
                "last_task": slot_task_id(row.name, last)
                if last is not None and last >= row.added_at else None,
            })
    if as_json:
        print_json(found)
        return
    for s in found:
        typer.echo(f"{s['name']:<24} {s['cron']:<16} {s['timezone']:<14} next "
                   f"{s['next_at'] or 'never'}"
                   f"  last task {s['last_task'] or '-'}  {s['title']}")
    if not found:
        typer.echo("no schedules")


@schedule_app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
) -> None:
    """Remove a schedule (its tasks already submitted stay).

    Example: tri24es schedule remove nightly-deps
    """
    context = context_of(ctx)
    with context.services() as services:
        services.remove_schedule(name, by=context.actor)
    typer.echo(f"schedule {name}: removed")
