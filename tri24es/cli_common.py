"""What every ``tri24es`` command shares: the resolved options, the store, the services,
and how results are printed (text for people, ``--json`` for programs)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from eventlog import EventStore, StoreUnavailable, open_store, sqlite_path
from tri24es.config import Settings
from tri24es.projections import connection_of, install
from tri24es.projections.sql import Db
from tri24es.services import Services

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class Context:
    """What the global options resolve to, handed to every command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_store(self, *, create: bool = False) -> EventStore:
        s = self.settings
        path = sqlite_path(s.db_url)
        if path is not None and not create and not Path(path).exists():
            raise StoreUnavailable(f"no store at {path}: run `tri24es init` first")
        return open_store(
            s.db_url, busy_timeout=s.busy_timeout, synchronous=s.sqlite_synchronous
        )

    @property
    def actor(self) -> str:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no login name in the environment or passwd
            user = "unknown"
        return f"cli:{user}"

    @contextmanager
    def services(self) -> Iterator[Services]:
        store = self.open_store()
        try:
            yield Services(store, actor=self.actor, trace_id=self.settings.trace_id)
        finally:
            store.close()

    @contextmanager
    def reading(self) -> Iterator[tuple[EventStore, Db]]:
        """The store and a connection inside one transaction: a consistent snapshot of the
        views (created and caught up first, if the store is new)."""
        store = self.open_store()
        try:
            install(store)
            with store.snapshot() as tx:
                yield store, connection_of(tx)
        finally:
            store.close()


def context_of(ctx: typer.Context) -> Context:
    context: Context = ctx.find_root().obj
    return context


def print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
