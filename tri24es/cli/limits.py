"""``tri24es limits``: fleet-wide caps on running tasks per model, shard or type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import JsonOption, context_of, print_json
from tri24es.errors import UsageError

if TYPE_CHECKING:
    from tri24es.names import LimitKey

limits_app = typer.Typer(help="Fleet-wide caps on running tasks per model, shard or type.",
                         no_args_is_help=True)


def parse_selector(text: str) -> tuple[LimitKey, str]:
    """``"model=claude"`` -> (LimitKey.MODEL, "claude"); anything else is a usage error."""
    from tri24es.names import LimitKey

    key, sep, value = text.partition("=")
    choices = "|".join(k.value for k in LimitKey)
    if not sep or not value.strip() or key.strip().lower() not in {k.value for k in LimitKey}:
        raise UsageError(f"bad limit {text!r}: expected {choices}=VALUE, e.g. model=claude")
    return LimitKey(key.strip().lower()), value.strip()


@limits_app.command("set")
def set_limit(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help="model=M, shard=S or type=T.")],
    cap: Annotated[int, typer.Argument(min=0, help="At most this many running at once.")],
) -> None:
    """Let at most CAP tasks with this model, shard or type run at once, fleet-wide (a task
    leaving the field open counts under its worker's).

    Example: tri24es limits set model=claude 3
    """
    key, value = parse_selector(selector)
    context = context_of(ctx)
    with context.services() as services:
        changed = services.set_limit(key, value, cap, by=context.actor)
    typer.echo(f"{key.value}={value}: at most {cap} running" + ("" if changed else
                                                                 " (unchanged)"))


@limits_app.command("unset")
def unset_limit(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help="model=M, shard=S or type=T.")],
) -> None:
    """Remove a fleet-wide cap.

    Example: tri24es limits unset model=claude
    """
    key, value = parse_selector(selector)
    context = context_of(ctx)
    with context.services() as services:
        removed = services.remove_limit(key, value, by=context.actor)
    if not removed:
        raise UsageError(f"no limit on {key.value}={value}")
    typer.echo(f"{key.value}={value}: no cap")


@limits_app.command("list")
def list_limits(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the caps and how many tasks run under each now.

    Example: tri24es limits list --json
    """
    from tri24es.projections import reads

    with context_of(ctx).reading() as (_, conn):
        limits = reads.limits_in_use(conn)
    if as_json:
        print_json([{"key": key, "value": value, "cap": cap, "running": running}
                    for key, value, cap, running in limits])
        return
    for key, value, cap, running in limits:
        typer.echo(f"{key}={value:<24} {running} of {cap} running")
    if not limits:
        typer.echo("no limits")
