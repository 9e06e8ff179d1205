"""The ``tri24es`` command: thin commands that parse, call a service, and print.

Every error a user can cause ends as one line on stderr and a non-zero exit
(2 for usage errors), never a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from eventlog import EventLogError, TransientStoreError, redact_url
from tri24es import __version__
from tri24es.cli.audit import audit_app
from tri24es.cli.budget_watchdog import budget_watchdog
from tri24es.cli.common import Context, watch_for_changes
from tri24es.cli.limits import limits_app
from tri24es.cli.metrics import metrics
from tri24es.cli.migrate import migrate
from tri24es.cli.models import models_app
from tri24es.cli.queue_watcher import queue_watcher
from tri24es.cli.replay import replay
from tri24es.cli.schedule import schedule_app
from tri24es.cli.spend import spend_app
from tri24es.cli.status import status
from tri24es.cli.tasks import submit, tasks_app
from tri24es.cli.top import top
from tri24es.cli.up import up
from tri24es.cli.worker import worker
from tri24es.cli.workers import workers_app
from tri24es.cli.workspaces import workspaces_app
from tri24es.errors import Tri24esError, UsageError

# Start-up time: the command modules import the domain (pydantic models, services, views)
# and anything heavy (rich, prometheus-client, watchdog, the runtime) inside the commands
# that use them, so `--version`, `--help` and each command load only what they need.

app = typer.Typer(
    name="tri24es",
    help="An event-sourced control plane for fleets of autonomous AI coding agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tri24es {__version__}")
        raise typer.Exit


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="TRI24ES_DB",
            help="Store URL or path (sqlite:///PATH or PATH). Default: state/tri24es.db in --root.",
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", envvar="TRI24ES_ROOT", help="Project folder holding state/ and tasks/."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """An event-sourced control plane for fleets of autonomous AI coding agents."""
    from tri24es.config import load_settings

    ctx.obj = Context(load_settings(db=db, root=root))


@app.command()
def init(ctx: typer.Context) -> None:
    """Create state/, tasks/{queue,running,completed,failed,rejected}/ and the store.

    Example: tri24es --root ~/fleet init
    """
    from tri24es.paths import TASK_FOLDERS

    context: Context = ctx.obj
    s = context.settings
    paths = s.paths
    paths.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.tasks.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in TASK_FOLDERS:  # the owner's only, whatever the umask: task text is input
        (paths.tasks / folder).mkdir(mode=0o700, exist_ok=True)
    with context.store(create=True) as store:
        head = store.head()
    typer.echo(f"initialised {s.root}")
    typer.echo(f"  store:  {redact_url(s.db_url)} ({head} events)")
    typer.echo(f"  tasks:  {paths.tasks}/{{{','.join(TASK_FOLDERS)}}}/")


@app.command()
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
    from tri24es.cli.render import decode_problem, event_json_line, event_text_line
    from tri24es.runtime.resilience import Outage

    context: Context = ctx.obj
    line = event_json_line if as_json else event_text_line
    position = after
    out = sys.stdout
    outage = Outage("events", lambda text: typer.echo(f"tri24es: {text}", err=True))
    with context.store(views=False) as store:
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
                    outage.ok()
                except TransientStoreError as e:
                    if not follow:
                        raise
                    time.sleep(outage.failed(e))  # then on from the last event printed
        except KeyboardInterrupt:
            return


app.command()(submit)
app.add_typer(tasks_app, name="tasks")
app.add_typer(workers_app, name="workers")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(limits_app, name="limits")
app.add_typer(schedule_app, name="schedule")
app.add_typer(models_app, name="models")
app.command()(status)
app.command()(replay)
app.command()(worker)
app.command("queue-watcher")(queue_watcher)
app.command()(up)
app.add_typer(spend_app, name="spend")
app.command("budget-watchdog")(budget_watchdog)
app.add_typer(audit_app, name="audit")
app.command()(top)
app.command()(metrics)
app.command()(migrate)


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one clear line."""
    try:
        app()
    except UsageError as e:
        typer.echo(f"tri24es: error: {e}", err=True)
        sys.exit(2)
    except (Tri24esError, EventLogError) as e:
        typer.echo(f"tri24es: error: {e}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        # The reader went away (`tri24es events | head`): not an error of ours.
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
