"""``tri24es status``: the fleet in numbers, now or as it was."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from tri24es.cli.common import JsonOption, context_of, parse_point, print_json
from tri24es.errors import UsageError


def status(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option("--at", help="As it was at this ISO time (or log position)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show queue counts by state and priority, workers by state, spend, the kill switch.

    Example: tri24es status --at 2026-11-24T09:00:00Z --json
    """
    from tri24es.cli.render import counts_dict
    from tri24es.projections import reads

    context = context_of(ctx)
    if at is not None:
        point = parse_point(at, "--at")
        with context.store(views=False) as store:
            head = store.head()
            if isinstance(point, int) and point > head:
                raise UsageError(f"--at {point} is past the end of the log (head {head})")
            counts = reads.counts_at(store, point)
        if not as_json:
            typer.echo(f"as of {at} (position {counts.head}):")
        print_counts({"until": counts.head, **counts_dict(counts)}, as_json)
        return
    from tri24es.budget import BudgetLimits
    from tri24es.cli.render import status_now
    from tri24es.timeutil import now_us

    budget = BudgetLimits.from_settings(context.settings)  # the default reservation, the zone
    with context.reading() as (store, conn):
        now = now_us()
        counts = reads.fleet_counts(conn, store.head())
        waits = reads.waiting(conn, now, budget)
        limits = reads.limits_in_use(conn)
        today = reads.today_budget(conn, budget, now)
    print_counts(status_now(counts, waits, context.settings.paths.queue, limits, today),
                 as_json)


def print_counts(info: dict[str, Any], as_json: bool) -> None:
    """``status`` as people and programs read it (``replay --until`` prints the same)."""
    from tri24es.budget import dollars

    if as_json:
        print_json(info)
        return
    queue, workers = info["queue"], info["workers"]
    typer.echo(f"log head:     {info['head']}")
    typer.echo(f"tasks:        {queue['total']} ({_nonzero(queue['by_state'])})")
    typer.echo(f"  queued by priority: {_nonzero(queue['by_state_and_priority']['queued'])}")
    typer.echo(f"workers:      {workers['total']} ({_nonzero(workers['by_state'])})")
    spend = info["spend"]
    skipped = (f"; {spend['lines_skipped']} unreadable spend lines skipped"
               if spend.get("lines_skipped") else "")
    typer.echo(f"spend:        {dollars(Decimal(spend['total_usd']))} "
               f"({spend['events']} records{skipped})")
    ks = info["killswitch"]
    typer.echo(f"kill switch:  {'ACTIVE: ' + str(ks['reason']) if ks['active'] else 'off'}")
    for limit in info.get("limits", []):
        typer.echo(f"limit:        {limit['key']}={limit['value']}: {limit['running']} of "
                   f"{limit['cap']} running")
    today = info.get("budget_today")
    if today is not None:
        typer.echo(f"budget today: {dollars(Decimal(today['spent_usd']))} spent, "
                   f"{dollars(Decimal(today['reserved_usd']))} reserved by running attempts, "
                   f"of {dollars(Decimal(today['daily_limit_usd']))} "
                   f"({dollars(Decimal(today['left_usd']))} left)")
    for line in info.get("waiting", []):
        typer.echo(f"waiting:      {line}")
    for entry in info.get("ignored_in_queue", []):  # what the queue watcher leaves alone
        typer.echo(f"ignored:      {entry['source']}: {entry['reason']}")


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"
