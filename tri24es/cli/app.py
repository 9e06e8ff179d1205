"""The ``tri24es`` command: thin commands that parse, call a service, and print.

Every error a user can cause ends as one line on stderr and a non-zero exit
(2 for usage errors), never a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from tri24es import __version__
from tri24es.cli.audit import audit_app
from tri24es.cli.budget_watchdog import budget_watchdog
from tri24es.cli.common import Context, check_event_types, watch_for_changes
from tri24es.cli.metrics import metrics
from tri24es.cli.migrate import migrate
from tri24es.cli.queue_watcher import queue_watcher
from tri24es.cli.replay import replay
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
    context_settings={"help_option_names": ["-h", "--help"]},
    # Plain help and errors: rich's boxes cost 40 ms of imports and turn a usage error into
    # five lines (each sub-app is set the same way below, where they are added).
    rich_markup_mode=None,
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
    from eventlog import redact_url
    from tri24es.paths import TASK_FOLDERS

    context: Context = ctx.obj
    s = context.settings
    paths = s.paths
    try:
        paths.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.tasks.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in TASK_FOLDERS:  # the owner's only, whatever the umask: task text is input
            (paths.tasks / folder).mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise Tri24esError(f"cannot create the project in {s.root}: {e.strerror}: "
                           f"{e.filename}") from e
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
    from eventlog import TransientStoreError
    from tri24es.cli.render import decode_problem, event_json_line, event_text_line
    from tri24es.runtime.resilience import Outage

    check_event_types(type_)
    context: Context = ctx.obj
    line = event_json_line if as_json else event_text_line
    position = after
    out = sys.stdout
    outage = Outage("events", lambda text: typer.echo(f"tri24es: {text}", err=True))
    with context.store(views=False) as store:
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
for group in app.registered_groups:
    assert group.typer_instance is not None
    group.typer_instance.rich_markup_mode = None

# The one-line summaries in the command lists, whole sentences that fit 80 columns (click
# would cut a docstring's first sentence mid-word).
SHORT_HELP = {
    "init": "Create the project folders and the store.",
    "events": "Print (or follow) the event log.",
    "submit": "Submit a task to the queue.",
    "status": "The fleet in numbers, now or as it was.",
    "replay": "Rebuild or verify the views from the log.",
    "worker": "Run a worker: claim tasks, run their agents.",
    "queue-watcher": "Submit the task files put in tasks/queue/.",
    "up": "Run the fleet: watcher, workers, budget watchdog.",
    "budget-watchdog": "Enforce the budget: warn, pause, kill switch.",
    "top": "A live dashboard of the fleet.",
    "metrics": "Serve Prometheus metrics over HTTP.",
    "migrate": "Copy the store to another backend.",
    "doctor": "Check the store, processes and clock.",
    "config": "Show the settings and where each comes from.",
    "tasks": "List, show, cancel, retry and review tasks.",
    "tasks list": "List tasks in claim order.",
    "tasks show": "A task's row, attempts and history.",
    "tasks cancel": "Cancel a queued or running task.",
    "tasks retry": "Send a failed task back to the queue.",
    "tasks approve": "Approve a task waiting for review.",
    "tasks reject": "Send a task in review back, with feedback.",
    "tasks diff": "Print the diff of a task's result.",
    "tasks logs": "Print (or follow) an agent's output.",
    "workers": "List workers; pause, resume or stop them.",
    "workers list": "List workers: state, process, task.",
    "workers pause": "Ask a worker (or all) to pause.",
    "workers resume": "Ask a paused worker (or all) to resume.",
    "workers stop": "Ask a worker (or all) to stop.",
    "workspaces": "List and prune the worktrees of attempts.",
    "workspaces list": "List the worktrees under workspaces/.",
    "workspaces prune": "Remove the worktrees no attempt runs in.",
    "spend": "The spend: window, rate, today, limits.",
    "spend record": "Record spend by hand.",
    "spend import": "Record new lines of state/budget/spend.jsonl.",
    "audit": "Export and verify the hash-chained log.",
    "audit export": "Stream the log with each event's hash.",
    "audit verify": "Check the hash chain of the store or an export.",
}


def _set_short_help(typer_app: typer.Typer, prefix: str = "") -> None:
    for command in typer_app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        command.short_help = command.short_help or SHORT_HELP.get(prefix + name)
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None
        assert group.name is not None
        group.short_help = group.short_help or SHORT_HELP.get(prefix + group.name)
        _set_short_help(group.typer_instance, f"{prefix}{group.name} ")


_set_short_help(app)


GLOBAL_OPTIONS = ("--db", "--root", "--version")


def run(args: list[str] | None = None) -> None:
    """Run the app, turning every error a user can cause into one line on stderr."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption

    from eventlog import EventLogError

    try:
        code = app(args=args, prog_name="tri24es", standalone_mode=False)
    except NoArgsIsHelpError as e:  # `tri24es` or `tri24es tasks` alone: the help
        e.show()
        sys.exit(2)
    except NoSuchOption as e:
        hint = ""
        if e.option_name in GLOBAL_OPTIONS:
            hint = f" (global options go before the command: tri24es {e.option_name} ... COMMAND)"
        fail(f"{e.format_message()}{hint}", 2)
    except ClickException as e:
        fail(e.format_message(), e.exit_code)
    except UsageError as e:
        fail(str(e), 2)
    except (Tri24esError, EventLogError) as e:
        fail(str(e), 1)
    except BrokenPipeError:
        # The reader went away (`tri24es events | head`): not an error of ours.
        sys.stderr.close()
        sys.exit(0)
    except OSError as e:  # the machine said no (permissions, a full disk): not a bug of ours
        fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (a message of several lines is joined), then exit."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    typer.echo(f"tri24es: error: {text}", err=True)
    sys.exit(code)


def main() -> None:
    """The console script (kept for callers of ``tri24es.cli.app:main``)."""
    from tri24es.cli import main as entry

    entry()
