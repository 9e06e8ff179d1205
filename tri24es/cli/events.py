"""``tri24es events``: the log as lines, oldest first, and followed as it grows."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from tri24es.cli.common import (
    check_event_types,
    context_of,
    output_gone,
    say,
    watch_for_changes,
)


def events(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they commit.")
    ] = False,
    stream: Annotated[str | None, typer.Option("--stream", help="Only this stream.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only events of this type (repeatable)."),
    ] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Start after this position.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the event log, oldest first.

    Example: tri24es events --follow --type TaskClaimed --json
    """
    from eventlog import TransientStoreError
    from tri24es.cli.render import decode_problem, event_json_line, event_text_line
    from tri24es.runtime.resilience import Outage

    check_event_types(type_)
    context = context_of(ctx)
    line = event_json_line if as_json else event_text_line
    position = after
    out = sys.stdout
    outage = Outage("events", say)
    with context.store(views=False, daemon="events" if follow else None) as store:
        head = store.head()
        if after > head:  # a position from another store, or a typo: never silent
            typer.echo(f"tri24es: note: --after {after} is past the end of the log (head "
                       f"{head})" + (f": waiting for position {after + 1}" if follow else ""),
                       err=True)
        try:
            if follow:
                watch_for_changes(store)
            while True:
                try:
                    for event in store.read_all(position, types=type_):
                        position = event.position
                        if stream is None or event.stream == stream:
                            problem = decode_problem(event)
                            if problem is None:
                                out.write(line(event))
                            else:  # corrupt or unknown: reported, never fatal to a follower
                                out.flush()
                                typer.echo(f"tri24es: warning: skipped {problem}", err=True)
                    out.flush()
                    if not follow:
                        return
                    store.wait_for_change(position, timeout=1.0)
                    if output_gone():  # `events -f | head -1`: end now, not at the next event
                        return
                    outage.ok()
                except TransientStoreError as e:
                    if not follow:
                        raise
                    time.sleep(outage.failed(e))  # then on from the last event printed
        except KeyboardInterrupt:
            return
