"""``tri24es config show``: every setting, its value, and where that value came from."""

from __future__ import annotations

import typer

from tri24es.cli.common import JsonOption, context_of, print_json

config_app = typer.Typer(
    help="The settings: command-line options, then the environment, then tri24es.toml in "
         "the project root, then the defaults.",
    no_args_is_help=True,
)


@config_app.command("show")
def show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print each setting, its environment variable, its value and where it was set
    (--option, env NAME, tri24es.toml or default).

    Example: tri24es config show
    """
    rows = context_of(ctx).settings.shown()
    if as_json:
        print_json({name: {"env": env, "value": value or None, "from": source}
                    for name, env, value, source in rows})
        return
    # as lines of TOML, to copy into tri24es.toml; where each value came from in a comment
    lines = [(f"{'# ' if name == 'root' or not value else ''}{name} = {_toml(value)}"
              if value else f"# {name} =",  # root: the folder of the file, never in it
              source if source.startswith("env") else f"{source}; env {env}")
             for name, env, value, source in rows]
    width = max(len(line) for line, _ in lines)
    for line, comment in lines:
        typer.echo(f"{line:<{width}}  # {comment}")


def _toml(value: str) -> str:
    """A value as TOML writes it: numbers bare, anything else a quoted string."""
    try:
        float(value)
    except ValueError:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value
