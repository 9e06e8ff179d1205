"""The ``tri24es`` command: thin commands that parse, call a service, and print.

Commands are found by their module, in one table (``COMMANDS``), and only the one being run is
imported and built: every invocation pays for its own command, not for thirty (``--help``
lists them from the table's summaries, importing none).

Every error a user can cause ends as one line on stderr and a non-zero exit (2 for usage
errors), never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from tri24es import __version__
from tri24es.cli import plain_params
from tri24es.cli.common import Context
from tri24es.errors import Tri24esError, UsageError

#: name -> (module, attribute: a command function or a sub-app, one-line summary). The
#: summaries are whole sentences that fit 80 columns (click would cut a docstring's first
#: sentence mid-word).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("tri24es.cli.init", "init", "Create the project folders and the store."),
    "events": ("tri24es.cli.events", "events", "Print (or follow) the event log."),
    "submit": ("tri24es.cli.tasks", "submit", "Submit a task to the queue."),
    "status": ("tri24es.cli.status", "status", "The fleet in numbers, now or as it was."),
    "tasks": ("tri24es.cli.tasks", "tasks_app", "List, show, cancel, retry, review tasks."),
    "workers": ("tri24es.cli.workers", "workers_app", "List workers; pause, resume, stop."),
    "workspaces": ("tri24es.cli.workspaces", "workspaces_app",
                   "List and prune the worktrees of attempts."),
    "spend": ("tri24es.cli.spend", "spend_app", "The spend: window, rate, today, limits."),
    "top": ("tri24es.cli.top", "top", "A live dashboard of the fleet."),
    "up": ("tri24es.cli.up", "up", "Run the fleet: watcher, workers, budget watchdog."),
    "worker": ("tri24es.cli.worker", "worker", "Run a worker: claim tasks, run their agents."),
    "queue-watcher": ("tri24es.cli.queue_watcher", "queue_watcher",
                      "Submit the task files put in tasks/queue/."),
    "budget-watchdog": ("tri24es.cli.budget_watchdog", "budget_watchdog",
                        "Enforce the budget: warn, pause, kill switch."),
    "audit": ("tri24es.cli.audit", "audit_app", "Export and verify the hash-chained log."),
    "replay": ("tri24es.cli.replay", "replay", "Rebuild or verify the views from the log."),
    "metrics": ("tri24es.cli.metrics", "metrics", "Serve Prometheus metrics over HTTP."),
    "migrate": ("tri24es.cli.migrate", "migrate", "Copy the store to another backend."),
    "serve": ("tri24es.cli.serve", "serve", "Serve the web dashboard and its JSON API."),
    "limits": ("tri24es.cli.limits", "limits_app",
               "Fleet-wide caps on running tasks by model, shard, type."),
    "schedule": ("tri24es.cli.schedule", "schedule_app", "Recurring tasks on a cron schedule."),
    "models": ("tri24es.cli.models", "models_app", "Pause and resume claims for a model."),
    "doctor": ("tri24es.cli.doctor", "doctor", "Check the store, processes and clock."),
    "config": ("tri24es.cli.config", "config_app", "The settings and where each comes from."),
}

#: The summaries of sub-commands, by path.
SUB_COMMANDS = {
    "tasks list": "List tasks in claim order.",
    "tasks show": "A task's row, attempts and history.",
    "tasks cancel": "Cancel a queued or running task.",
    "tasks retry": "Send a failed task back to the queue.",
    "tasks approve": "Approve a task waiting for review.",
    "tasks reject": "Send a task in review back, with feedback.",
    "tasks diff": "Print the diff of a task's result.",
    "tasks logs": "Print (or follow) an agent's output.",
    "workers list": "List workers: state, process, task.",
    "workers pause": "Ask a worker (or all) to pause.",
    "workers resume": "Ask a paused worker (or all) to resume.",
    "workers stop": "Ask a worker (or all) to stop.",
    "workspaces list": "List the worktrees under workspaces/.",
    "workspaces prune": "Remove the worktrees no attempt runs in.",
    "spend record": "Record spend by hand.",
    "spend import": "Record new lines of state/budget/spend.jsonl.",
    "audit export": "Stream the log with each event's hash.",
    "audit verify": "Check the hash chain of the store or an export.",
    "config show": "Each setting, its value and where it was set.",
}

GLOBAL_OPTIONS = ("--db", "--root", "--version")


def load(name: str) -> Any:
    """The command function or sub-app named ``name``."""
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), attribute)


def build(name: str) -> Any:
    """The click command of ``name``: plain help and errors (rich's boxes cost 40 ms of
    imports and turn a usage error into five lines), and whole-sentence summaries."""
    target = load(name)
    summary = COMMANDS[name][2]
    if isinstance(target, typer.Typer):
        target.rich_markup_mode = None
        for info in target.registered_commands:
            assert info.callback is not None
            sub = info.name or info.callback.__name__.replace("_", "-")
            info.short_help = info.short_help or SUB_COMMANDS.get(f"{name} {sub}")
        group = typer.main.get_group(target)
        group.name, group.short_help = name, summary
        for command in group.commands.values():
            _upper_metavars(command)
        return _upper_metavars(group)
    return _upper_metavars(typer.main.get_command_from_info(
        typer.models.CommandInfo(name=name, callback=target, short_help=summary),
        pretty_exceptions_short=True, rich_markup_mode=None))


def _upper_metavars(command: Any) -> Any:
    """``--window WINDOW`` and ``TASK_ID`` in help and errors, as argparse writes them, not
    typer's type names (``--window <str>``, ``{task_id}``)."""
    for param in command.params:
        if param.metavar is None and not getattr(param, "is_flag", False) and param.name:
            param.metavar = param.name.removesuffix("_").upper()
    return command


class LazyGroup(TyperGroup):
    """The root command: sub-commands from ``COMMANDS``, each imported when it is run."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        if cmd_name not in COMMANDS:
            if ctx.resilient_parsing:  # completing a word: nothing to say
                return None
            from typer._click.exceptions import UsageError as BadCommand

            from tri24es.cli.common import did_you_mean

            raise BadCommand(f"no command {cmd_name!r}{did_you_mean(cmd_name, COMMANDS)}", ctx)
        if cmd_name not in self.commands:
            self.commands[cmd_name] = build(cmd_name)
        return self.commands[cmd_name]

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            # click exits 1 for a broken pipe before run() could see it: passed on as another
            # error, it ends there, as exit 0 when it was our output's reader that went
            raise PipeBroken(e) from e

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


class PipeBroken(Exception):
    """A BrokenPipeError, out of click's reach (it exits 1 for one)."""


plain_params.install()
app = typer.Typer(
    name="tri24es",
    cls=LazyGroup,
    help="An event-sourced control plane for fleets of autonomous AI coding agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
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
            "--db", metavar="URL|PATH",
            help="Store URL or path (sqlite:///PATH or PATH; env TRI24ES_DB). Default: "
                 "state/tri24es.db in --root.",
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", metavar="DIR",
            help="Project folder holding state/, tasks/ and tri24es.toml (env TRI24ES_ROOT). "
                 "Default: the current folder.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """An event-sourced control plane for fleets of autonomous AI coding agents.

    TRI-24 is the team's earlier fleet of shell scripts; tri24es keeps its settings' names.
    """
    from tri24es.cli import release_interrupts

    release_interrupts()  # the command is imported: Ctrl-C may raise again
    from tri24es.config import load_settings

    ctx.obj = Context(load_settings(db=db, root=root))


def run(args: list[str] | None = None) -> None:
    """Run the app, turning every error a user can cause into one line on stderr."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption

    args = list(sys.argv[1:] if args is None else args)
    try:
        while True:
            try:
                code = app(args=args, prog_name="tri24es", standalone_mode=False)
                break
            except NoSuchOption as e:
                # A global option given after the command (`tri24es status --db x.db`),
                # which the command has none of its own by that name: taken as if given
                # before it. Click parses before it runs anything, so nothing ran twice.
                hoisted = hoist(args, e.option_name) if e.option_name in GLOBAL_OPTIONS else None
                if hoisted is None:
                    raise
                args = hoisted
    except NoArgsIsHelpError as e:  # `tri24es` or `tri24es tasks` alone: the help
        e.show()
        sys.exit(2)
    except NoSuchOption as e:
        fail(e.format_message(), 2)
    except ClickException as e:
        fail(e.format_message(), e.exit_code)
    except UsageError as e:
        fail(str(e), 2)
    except Tri24esError as e:
        fail(str(e), 1)
    except (BrokenPipeError, PipeBroken) as e:
        broken = e.args[0] if isinstance(e, PipeBroken) else e
        from tri24es.cli.common import output_gone

        if not output_gone():  # a pipe of our own (to a child, say): an error like any other
            fail(f"{broken.strerror or broken}", 1)
        # The reader went away (`tri24es events | head`): not an error of ours. What is left
        # in the buffers goes to /dev/null, or its flush at exit would fail again (exit 120).
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        sys.exit(0)
    except OSError as e:  # the machine said no (permissions, a full disk): not a bug of ours
        fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)
    except Exception as e:
        from eventlog import EventLogError  # on this path only: `--help` needs no store

        if isinstance(e, EventLogError):
            fail(str(e), 1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def hoist(args: list[str], option: str) -> list[str] | None:
    """``args`` with the first ``option`` (and its value) given after the command moved to
    just before the command (after any given there: the later one still wins), or None if
    there is none to move."""
    def span(arg: str) -> int:  # the words of a global option: itself, and its value
        return 1 if "=" in arg or arg == "--version" else 2

    start = 0
    while start < len(args) and args[start].split("=", 1)[0] in GLOBAL_OPTIONS:  # before it
        start += span(args[start])
    for i in range(start + 1, len(args)):
        if args[i] == "--":
            return None
        if args[i].split("=", 1)[0] == option:
            end = i + span(args[i])
            if end > len(args):
                return [option]  # click says the value is missing
            return [*args[:start], *args[i:end], *args[start:i], *args[end:]]
    return None


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (a message of several lines is joined), then exit."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    typer.echo(f"tri24es: error: {text}", err=True)
    sys.exit(code)


def main() -> None:
    """The console script (kept for callers of ``tri24es.cli.app:main``)."""
    from tri24es.cli import main as entry

    entry()
