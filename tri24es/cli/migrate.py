"""``tri24es migrate --to URL``: move the store (log and views) to another backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tri24es.cli.common import JsonOption, context_of, print_json, progress_bar
from tri24es.errors import UsageError


def migrate(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option("--to", help="The target store URL (postgresql://... or a SQLite path)."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Copy the log into another store, verify its hash chain there, and rebuild the views.

    The target must be empty, or hold an interrupted copy (which is resumed).

    Stop the fleet first: events appended during the copy are left for a second run.

    Example: tri24es migrate --to postgresql://tri24es@db.internal/fleet
    """
    from eventlog import open_store
    from tri24es.migrate import migrate as copy_store

    context = context_of(ctx)
    settings = context.settings
    if _same_store(to, settings.db_url):
        raise UsageError("--to names the store being migrated: give another store")
    with context.store(views=False) as source, \
            open_store(to, busy_timeout=settings.busy_timeout,
                       synchronous=settings.sqlite_synchronous) as target, \
            progress_bar("copying", source.head(), enabled=not as_json) as progress:
        done = copy_store(source, target, progress)
    if as_json:
        print_json(done.__dict__)
        return
    typer.echo(f"copied {done.copied} events from {done.source} to {done.target}"
               + (f" (it had {done.resumed_after} already)" if done.resumed_after else ""))
    typer.echo(f"  hash chain verified on arrival: {done.verified} events, head {done.head}")
    typer.echo("  views rebuilt from the copied log")
    if done.behind:
        typer.echo(f"  note: the source gained {done.behind} events during the copy; stop "
                   "the fleet and run migrate again to copy them")


def _same_store(a: str, b: str) -> bool:
    from eventlog import sqlite_path

    path_a, path_b = sqlite_path(a), sqlite_path(b)
    if path_a and path_b:
        return Path(path_a).resolve() == Path(path_b).resolve()
    return a == b
