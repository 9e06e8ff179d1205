"""The ``tri24es`` command line: ``app.py`` holds the typer app; each command has its module.

``main`` is the console script. It lives here, in a module that imports nothing, so that a
Ctrl-C while the rest of the command line loads ends the process quietly (exit 130) instead
of printing a traceback from the middle of an import.
"""

import sys


def main() -> None:
    try:
        from tri24es.cli.app import run

        run()
    except KeyboardInterrupt:
        sys.exit(130)
