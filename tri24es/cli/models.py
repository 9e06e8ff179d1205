"""``tri24es models``: pause and resume the claims of one model's tasks, fleet-wide."""

from __future__ import annotations

from typing import Annotated

import typer

from tri24es.cli.common import JsonOption, context_of, print_json
from tri24es.errors import UsageError

models_app = typer.Typer(help="Pause and resume one model's tasks, fleet-wide.",
                         no_args_is_help=True)


@models_app.command("pause")
def pause(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model (a task's model, else its "
                                         "worker's).")],
    until: Annotated[str | None, typer.Option("--until", help="Until this time (ISO-8601) "
                                              "or delay (e.g. 2h); default: until resumed.")]
    = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the log.")] = None,
) -> None:
    """Claim no task for MODEL until the time given (or until resumed); its running
    attempts go back to the queue at no retry cost.

    Example: tri24es models pause claude --until 2026-12-01T15:00Z --reason "usage limit"
    """
    from tri24es.scheduling import parse_when
    from tri24es.timeutil import from_us, iso_time, now_us

    if not model.strip():
        raise UsageError("MODEL must not be empty")
    try:
        end = None if until is None else parse_when(until, now_us())
    except ValueError as e:
        raise UsageError(f"bad --until: {e}") from None
    context = context_of(ctx)
    with context.services() as services:
        services.pause_model(model, until=None if end is None else from_us(end),
                             by=context.actor, reason=reason)
    typer.echo(f"model {model}: paused " + ("until resumed" if end is None
                                             else f"until {iso_time(end)}"))


@models_app.command("resume")
def resume(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.")],
) -> None:
    """Lift a model's pause: its tasks are claimed again.

    Example: tri24es models resume claude
    """
    context = context_of(ctx)
    with context.services() as services:
        services.resume_model(model, by=context.actor)
    typer.echo(f"model {model}: resumed")


@models_app.command("list")
def list_paused(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the paused models (a pause whose time ended is listed until resumed).

    Example: tri24es models list --json
    """
    from tri24es.projections import reads
    from tri24es.timeutil import iso_time

    with context_of(ctx).reading() as (_, conn):
        pauses = reads.paused_models(conn)
    found = [{"model": p.model, "until": None if p.until is None else iso_time(p.until),
              "reason": p.reason, "by": p.by} for p in pauses]
    if as_json:
        print_json(found)
        return
    for p in found:
        typer.echo(f"{p['model']:<24} paused until {p['until'] or 'resumed'}"
                   + (f"  ({p['reason']})" if p["reason"] else ""))
    if not found:
        typer.echo("no paused models")
