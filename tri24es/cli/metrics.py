"""``tri24es metrics``: a Prometheus endpoint computed from the views on every scrape."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from tri24es.cli.common import context_of
from tri24es.errors import UsageError


def metrics(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")
    ] = 9464,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics until SIGTERM or Ctrl-C.

    Prints `serving metrics on http://HOST:PORT/metrics` once it listens (the real port when
    --port is 0).

    Example: tri24es metrics --port 9464 --host 0.0.0.0
    """
    from tri24es.budget import BudgetLimits

    context = context_of(ctx)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with context.store(daemon="metrics") as store:
            # Imported on use: only this command needs it, and every other one starts faster.
            from prometheus_client import CollectorRegistry, start_http_server

            from tri24es.metrics import FleetCollector

            limits = BudgetLimits.from_settings(context.settings)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(FleetCollector(store, limits))
            try:
                server, thread = start_http_server(port, addr=host, registry=registry)
            except OSError as e:
                raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from e
            typer.echo(f"serving metrics on http://{host}:{server.server_port}/metrics")
            stop.wait()
            server.shutdown()
            server.server_close()
            thread.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
