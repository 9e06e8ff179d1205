"""``tri24es workers``: the worker table, and requests to pause, resume or stop workers.

The commands append request events; the workers act on them (and the signals that reach
local processes directly come with the worker runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import Context, JsonOption, context_of, print_json, print_table
from tri24es.errors import UsageError

if TYPE_CHECKING:  # the domain is imported on use: `--help` needs none of it
    from tri24es.services import Services

workers_app = typer.Typer(
    help="List workers; ask them to pause, resume or stop.", no_args_is_help=True
)


WorkerId = Annotated[str | None, typer.Argument(help="The worker's id (or --all).")]
AllOption = Annotated[bool, typer.Option("--all", help="Every live worker.")]

Request = Callable[["Services", str, str], bool]


@workers_app.command("list")
def list_workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List registered workers with their state, process and current task.

    Example: tri24es workers list --json
    """
    from tri24es.cli.render import worker_dict
    from tri24es.projections import reads

    with context_of(ctx).reading() as (_, conn):
        rows = reads.workers(conn)
    if as_json:
        print_json([worker_dict(row) for row in rows])
        return
    print_table(
        ("WORKER", "STATE", "PID", "HOST", "TASK", "REQUESTED"),
        ((row.worker_id, row.state, row.pid, row.host, row.current_task,
          ",".join(name for name, on in (("pause", row.pause_requested),
                                         ("stop", row.stop_requested)) if on) or None)
         for row in rows),
        squeeze="HOST")


def _targets(context: Context, worker_id: str | None, all_: bool) -> list[str]:
    if all_ == (worker_id is not None):
        raise UsageError("give a worker id or --all (not both)")
    if worker_id is not None:
        return [worker_id]
    from tri24es.machines import ACTIVE_WORKER_STATES
    from tri24es.projections import reads

    with context.reading() as (_, conn):
        return [w.worker_id for w in reads.workers(conn) if w.state in ACTIVE_WORKER_STATES]


def _request(
    ctx: typer.Context, action: str, worker_id: str | None, all_: bool, as_json: bool,
    request: Request,
) -> None:
    context = context_of(ctx)
    targets = _targets(context, worker_id, all_)
    results = []
    with context.services() as services:
        for target in targets:
            results.append({"worker_id": target, "changed": request(services, target,
                                                                    context.actor)})
    if as_json:
        print_json({"action": action, "workers": results})
        return
    if not results:
        typer.echo("no live workers")
    for r in results:
        done = "requested" if r["changed"] else "already requested (nothing to do)"
        typer.echo(f"{r['worker_id']}: {action} {done}")


@workers_app.command("pause")
def pause(
    ctx: typer.Context, worker_id: WorkerId = None, all_: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a worker (or every live worker) to pause after its current operation.

    Example: tri24es workers pause worker-4242-1764000000
    """
    _request(ctx, "pause", worker_id, all_, as_json,
             lambda s, w, by: s.request_pause(w, by=by))


@workers_app.command("resume")
def resume(
    ctx: typer.Context, worker_id: WorkerId = None, all_: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a paused worker (or every live worker) to resume claiming.

    Example: tri24es workers resume --all
    """
    _request(ctx, "resume", worker_id, all_, as_json,
             lambda s, w, by: s.request_resume(w, by=by))


@workers_app.command("stop")
def stop(
    ctx: typer.Context, worker_id: WorkerId = None, all_: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a worker (or every live worker) to stop; its running task goes back to the queue.

    Example: tri24es workers stop --all
    """
    _request(ctx, "stop", worker_id, all_, as_json,
             lambda s, w, by: s.request_stop(w, by=by))
