"""``tri24es serve``: the web dashboard and its JSON API."""

from __future__ import annotations

from typing import Annotated

import typer

from tri24es.cli.common import context_of


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Beyond "
                                      "loopback, reading needs the token too.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port (0: any free one, printed).")] = 8024,
) -> None:
    """Serve the web dashboard (overview, tasks, workers, events, live) and its JSON API
    under /api/, until Ctrl-C or SIGTERM. Actions need the token in state/web-token.

    Example: tri24es serve --port 8024
    """
    # Imported on use: the web stack (Starlette, uvicorn, Jinja2) is this command's alone.
    from tri24es.web.server import serve as run

    context = context_of(ctx)
    with context.store(daemon="serve") as store:
        run(store, context.settings, host, port, lambda line: typer.echo(line, err=True))
