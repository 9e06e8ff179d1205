"""``tri24es queue-watcher``: bridge ``tasks/queue/**.md`` files into the log."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from tri24es.cli.common import JsonOption, context_of, say
from tri24es.errors import Tri24esError, UsageError

#: taskfile.DEFAULT_MAX_BYTES (a test keeps them equal), written here so that building the
#: command line does not import the task file module and the event catalog behind it.
DEFAULT_MAX_BYTES = 1024 * 1024

if TYPE_CHECKING:
    # Imported on use: only this command needs it, and every other one starts faster.
    from tri24es.runtime.queue_watcher import ScanReport


def _print_files(report: ScanReport, as_json: bool) -> None:
    for spec in report.submitted:
        if as_json:
            _json_line({"action": "submitted", "task_id": spec.task_id, "source": spec.source,
                        "priority": spec.priority.value, "title": spec.title})
        else:
            typer.echo(f"submitted {spec.task_id} ({spec.priority.value}) from {spec.source}")
    for r in report.rejected:
        if as_json:
            _json_line({"action": "rejected", "task_id": r.task_id, "source": r.source,
                        "reason": r.reason, "moved_to": r.moved_to, "recorded": r.recorded})
        else:
            typer.echo(f"rejected {r.source}: {r.reason} (moved to {r.moved_to})")
    for u in report.updated:
        if as_json:
            _json_line({"action": "updated", "task_id": u.task_id, "source": u.source,
                        "changed": list(u.fields)})
        else:
            typer.echo(f"updated {u.task_id} from {u.source} ({', '.join(u.fields)})")
    for e in report.edit_rejected:
        if as_json:
            _json_line({"action": "edit_rejected", "task_id": e.task_id, "source": e.source,
                        "reason": e.detail})
        else:
            typer.echo(f"rejected edit of {e.source}: {e.detail}")
    for c in report.changed:
        typer.echo(f"tri24es: warning: {c.source}: {c.detail}", err=True)
    for i in report.ignored:  # once each: a file meant as a task must not wait unnoticed
        if as_json:
            _json_line({"action": "ignored", "source": i.source, "reason": i.reason})
        else:
            typer.echo(f"ignored {i.source}: {i.reason}")
    sys.stdout.flush()


def _json_line(value: object) -> None:
    typer.echo(orjson.dumps(value).decode())


def queue_watcher(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Scan once, print a summary, exit.")] = False,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between safety rescans (env POLL_INTERVAL, "
                     "default 5)."),
    ] = None,
    max_bytes: Annotated[
        int,
        typer.Option("--max-task-bytes", envvar="TRI24ES_MAX_TASK_BYTES", min=1,
                     help="Larger task files are rejected."),
    ] = DEFAULT_MAX_BYTES,
    settle: Annotated[
        float | None,
        typer.Option("--settle", help="Seconds a file must stay unchanged before it is read "
                     "(env TRI24ES_QUEUE_SETTLE, default 2)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit task files from tasks/queue/ (and its CRITICAL/HIGH/MEDIUM/LOW folders).

    Idempotent by task id; bad files move to tasks/rejected/ with a .reason file; an edit
    of a file whose task is not yet claimed updates the task. Runs until SIGTERM or Ctrl-C
    unless --once.

    Example: tri24es queue-watcher --once
    """
    context = context_of(ctx)
    period = context.settings.poll_interval if interval is None else interval
    if not period > 0:
        raise UsageError(f"bad --interval {interval}: must be > 0")
    quiet = context.settings.queue_settle if settle is None else settle
    if not 0 <= quiet < float("inf"):
        raise UsageError(f"bad --settle {settle}: must be 0 or more seconds")
    queue_dir = context.settings.paths.queue
    if not queue_dir.is_dir():
        raise Tri24esError(f"no folder {queue_dir}: run `tri24es init` first")
    from tri24es.runtime.queue_watcher import QueueWatcher, serve

    with context.services(daemon=None if once else "queue watcher") as services:
        watcher = QueueWatcher(services, context.settings.paths, max_bytes=max_bytes,
                               settle=quiet)
        if not once:
            serve(watcher, period, lambda report: _print_files(report, as_json),
                  say)
            return
        report = watcher.scan_until_settled()
    _print_files(report, as_json)
    if as_json:
        _json_line({"summary": True, "submitted": len(report.submitted),
                    "known": len(report.known), "rejected": len(report.rejected),
                    "changed": len(report.changed), "updated": len(report.updated),
                    "edits_rejected": len(report.edit_rejected),
                    "still_changing": report.waiting,
                    "ignored": len(report.ignored)})
        return
    waiting = f", still changing {len(report.waiting)}" if report.waiting else ""
    ignored = f", ignored {len(report.ignored)}" if report.ignored else ""
    updated = f", updated {len(report.updated)}" if report.updated else ""
    refused = f", edits rejected {len(report.edit_rejected)}" if report.edit_rejected else ""
    typer.echo(f"submitted {len(report.submitted)}, already known {len(report.known)}, "
               f"rejected {len(report.rejected)}{updated}{refused}{waiting}{ignored}")
