"""``tri24es replay``: rebuild the views from the log, verify them, or look back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import JsonOption, context_of, parse_point, print_json, progress_bar
from tri24es.cli.status import print_counts
from tri24es.errors import Tri24esError, UsageError

if TYPE_CHECKING:
    from eventlog import EventStore
    from tri24es.audit import Problem


class ViewsDiffer(Tri24esError):
    """The projection tables differ from a fresh fold of the log."""


class ChainRefused(Tri24esError):
    """The log's hash chain is broken: the views are not rebuilt from it unless told."""


def replay(
    ctx: typer.Context,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare the tables with a fresh fold; change nothing.")
    ] = False,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Show the views as they were at a position or ISO time."),
    ] = None,
    accept_broken_chain: Annotated[
        bool, typer.Option("--accept-broken-chain",
                           help="Rebuild even if the hash chain does not verify (recorded "
                                "in the log).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Rebuild every view table from the log (or --verify them, or look back --until).
    The log's hash chain is checked first: a broken chain is refused unless
    --accept-broken-chain, which records that decision in the log.

    Example: tri24es replay --verify
    """
    if verify and until is not None:
        raise UsageError("--verify and --until do not go together")
    if accept_broken_chain and (verify or until is not None):
        raise UsageError("--accept-broken-chain goes with a rebuild only")
    context = context_of(ctx)
    with context.store(views=False) as store:
        if until is not None:
            _until(store, until, as_json)
            return
        broken = _broken_chain(store, as_json)
        if broken is not None and not accept_broken_chain:
            action = "the views were compared with nothing" if verify else "nothing was rebuilt"
            raise ChainRefused(
                f"the log's hash chain is broken at {broken}: {action} (`tri24es audit "
                "verify` tells more; `tri24es replay --accept-broken-chain` rebuilds from "
                "it anyway and records that in the log)")
        if verify:
            _verify(store, as_json)
            return
        if broken is not None:
            from tri24es.services import Services

            services = Services(store, actor=context.actor, trace_id=context.settings.trace_id)
            position = services.accept_broken_chain(
                broken.position, broken.kind, broken.detail)
            typer.echo(f"tri24es: warning: rebuilding from a broken chain ({broken}); "
                       f"recorded at position {position}", err=True)
        _rebuild(store, as_json)


def _broken_chain(store: EventStore, as_json: bool) -> Problem | None:
    """The first bad position of the log's hash chain, if any (the whole log is read)."""
    from tri24es import audit

    with progress_bar("checking the chain", store.head(), enabled=not as_json) as progress:
        try:
            audit.verify_store(store, progress)
        except audit.ChainBroken as e:
            return e.problem
    return None


def _rebuild(store: EventStore, as_json: bool) -> None:
    from tri24es.projections import upkeep

    with progress_bar("replaying", store.head(), enabled=not as_json) as progress:
        rebuilt = upkeep.rebuild(store, progress=progress)
    counts = {
        "events": rebuilt.position,
        "tasks": rebuilt.tasks,
        "workers": rebuilt.workers,
        "spend_events": rebuilt.spend_events,
        "killswitch_active": rebuilt.killswitch_active,
    }
    if as_json:
        print_json({"rebuilt": True, **counts})
    else:
        typer.echo(
            f"rebuilt the views from {counts['events']} events: {counts['tasks']} tasks, "
            f"{counts['workers']} workers, {counts['spend_events']} spend events"
        )


def _verify(store: EventStore, as_json: bool) -> None:
    from tri24es.projections import upkeep

    folded = [0]

    def count(n: int) -> None:
        folded[0] += n

    differences = upkeep.verify(store, progress=count)
    if as_json:
        print_json({"verified": not differences, "events": folded[0],
                    "differences": differences})
    else:
        for line in differences:
            typer.echo(line)
    if differences:
        raise ViewsDiffer(
            f"views differ from the log in {len(differences)} rows (first: {differences[0]}): "
            "they were changed outside tri24es (the log's hash chain verifies); "
            "`tri24es replay` rebuilds them from the log"
        )
    if not as_json:
        typer.echo(f"verified: {folded[0]} events, views match")


def _until(store: EventStore, until: str, as_json: bool) -> None:
    from tri24es.cli.render import counts_dict
    from tri24es.projections import reads

    counts = reads.counts_at(store, parse_point(until, "--until"))
    if not as_json:
        typer.echo(f"as of position {counts.head}:")
    print_counts({"until": counts.head, **counts_dict(counts)}, as_json)
