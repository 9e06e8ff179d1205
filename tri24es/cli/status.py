"""``tri24es status`` and ``tri24es replay``: the views now, rebuilt, verified, or as they were."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tri24es.cli.common import JsonOption, context_of, print_json, progress_bar
from tri24es.errors import Tri24esError, UsageError

if TYPE_CHECKING:
    from eventlog import EventStore


class ViewsDiffer(Tri24esError):
    """The projection tables differ from a fresh fold of the log."""


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
    from tri24es.views import live_summary, parse_until, summary_at

    if at is not None:
        point = parse_until(at, "--at")
        store = context_of(ctx).open_store()
        try:
            info = summary_at(store, point)
        finally:
            store.close()
        if not as_json:
            typer.echo(f"as of {at} (position {info['until']}):")
        _print_summary(info, as_json)
        return
    with context_of(ctx).reading() as (store, conn):
        info = live_summary(conn, store.head())
    _print_summary(info, as_json)


def _print_summary(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    queue, workers = info["queue"], info["workers"]
    typer.echo(f"log head:     {info['head']}")
    typer.echo(f"tasks:        {queue['total']} ({_nonzero(queue['by_state'])})")
    typer.echo(f"  queued by priority: {_nonzero(queue['by_state_and_priority']['queued'])}")
    typer.echo(f"workers:      {workers['total']} ({_nonzero(workers['by_state'])})")
    typer.echo(f"spend:        ${info['spend']['total_usd']} ({info['spend']['events']} events)")
    ks = info["killswitch"]
    typer.echo(f"kill switch:  {'ACTIVE: ' + str(ks['reason']) if ks['active'] else 'off'}")


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"


def replay(
    ctx: typer.Context,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare the tables with a fresh fold; change nothing.")
    ] = False,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Show the views as they were at a position or ISO time."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild every view table from the log (or --verify them, or look back --until).

    Example: tri24es replay --verify
    """
    if verify and until is not None:
        raise UsageError("--verify and --until do not go together")
    store = context_of(ctx).open_store()
    try:
        if until is not None:
            _until(store, until, as_json)
        elif verify:
            _verify(store, as_json)
        else:
            _rebuild(store, as_json)
    finally:
        store.close()


def _rebuild(store: EventStore, as_json: bool) -> None:
    from tri24es import projections

    with progress_bar("replaying", store.head(), enabled=not as_json) as progress:
        views = projections.rebuild(store, progress=progress)
    counts = {
        "events": views.position,
        "tasks": len(views.queue),
        "workers": len(views.workers),
        "spend_events": len(views.spend.rows),
        "killswitch_active": views.killswitch.active,
    }
    if as_json:
        print_json({"rebuilt": True, **counts})
    else:
        typer.echo(
            f"rebuilt the views from {counts['events']} events: {counts['tasks']} tasks, "
            f"{counts['workers']} workers, {counts['spend_events']} spend events"
        )


def _verify(store: EventStore, as_json: bool) -> None:
    from tri24es import projections

    folded = [0]

    def count(n: int) -> None:
        folded[0] += n

    differences = projections.verify(store, progress=count)
    if as_json:
        print_json({"verified": not differences, "events": folded[0],
                    "differences": differences})
    else:
        for line in differences:
            typer.echo(line)
    if differences:
        raise ViewsDiffer(
            f"views differ from the log in {len(differences)} rows (first: {differences[0]}); "
            "run `tri24es replay` to rebuild them"
        )
    if not as_json:
        typer.echo(f"verified: {folded[0]} events, views match")


def _until(store: EventStore, until: str, as_json: bool) -> None:
    from tri24es.views import parse_until, summary_at

    info = summary_at(store, parse_until(until))
    if not as_json:
        typer.echo(f"as of position {info['until']}:")
    _print_summary(info, as_json)
