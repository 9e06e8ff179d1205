"""The ``tri24es`` command line: ``app.py`` holds the typer app; each command has its module.

``main`` is the console script. It lives here, in a module that imports nothing heavy, so
that a Ctrl-C while the rest of the command line loads ends the process quietly (exit 130)
instead of printing a traceback from the middle of an import.
"""

import contextlib
import os
import signal
import sys
from types import FrameType

_held: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold_interrupts() -> None:
    """Until ``release_interrupts``, a Ctrl-C is noted, not raised: raised inside an
    extension module's import (orjson's, say) it can crash the interpreter (SIGSEGV seen,
    one time in a few at the worst moment) before any handler of ours runs."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note)


def release_interrupts() -> None:
    """The command is loaded: Ctrl-C raises again, and one pressed meanwhile ends it now."""
    if signal.getsignal(signal.SIGINT) is _note:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _held:
        interrupted()


def interrupted() -> None:
    """Exit 130 at once, output flushed (what the command was doing has unwound already)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, KeyboardInterrupt):
            stream.flush()
    os._exit(130)


def standard_streams() -> None:
    """Started with descriptor 0, 1 or 2 closed (``tri24es events >&-``), /dev/null takes its
    place: else the next file opened gets the number (a log file, the witness file) and what
    is printed, or a child's output, lands in it; and Python's ``sys.stdout`` is None, which a
    write meets as an AttributeError. Printing to a closed output prints nothing, exit 0."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (the process's)


def main() -> None:
    standard_streams()
    hold_interrupts()
    try:
        from tri24es.cli.app import run

        run()  # its root callback releases the interrupts once the command is loaded
    except KeyboardInterrupt:
        interrupted()
    finally:
        release_interrupts()
