"""What every ``tri24es`` command shares: the resolved options, the one way to open the
store (``Context.store``, ``reading``, ``services``), option parsing, and printing.

Commands open the store only through the context: it is opened, its views created and caught
up once, and closed whatever happens."""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from tri24es.errors import UsageError

if TYPE_CHECKING:  # imported on use: `--version` and `--help` need none of them
    from eventlog import EventStore
    from tri24es.config import Settings
    from tri24es.machines import TaskState
    from tri24es.names import Priority
    from tri24es.projections.sql import Db
    from tri24es.services import Services

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class Context:
    """What the global options resolve to, handed to every command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _open(self, *, create: bool = False) -> EventStore:
        from eventlog import StoreUnavailable, open_store, redact_url, sqlite_path

        s = self.settings
        path = sqlite_path(s.db_url)
        if path is not None and not create and not Path(path).exists():
            raise StoreUnavailable(f"no store at {path}: run `tri24es init` first")
        store = open_store(
            s.db_url, busy_timeout=s.busy_timeout, synchronous=s.sqlite_synchronous
        )
        if store.guards_restored is not None:  # evidence: said once, and kept in the log
            where = path or redact_url(s.db_url)
            typer.echo(f"tri24es: warning: {store.guards_restored.describe(where)}", err=True)
        return store

    @contextmanager
    def store(self, *, create: bool = False, views: bool = True,
              daemon: str | None = None) -> Iterator[EventStore]:
        """The store, open for the block: its views created and caught up first (unless
        ``views=False``: the log alone, e.g. for an export or a replay), closed after.

        ``daemon`` names a long-running process: it rides out a transient fault while it
        opens the store (a PostgreSQL session ended, a server still starting, a lock held
        past the busy timeout), saying so once, as it does once running, instead of exiting
        on it. A fault that cannot heal still ends it with one line."""
        if daemon is None:
            store = self._opened(create, views)
        else:
            from tri24es.runtime.resilience import Outage, ride_out

            outage = Outage(daemon, say)
            store = ride_out(lambda: self._opened(create, views), outage)
        try:
            yield store
        finally:
            store.close()

    def _opened(self, create: bool, views: bool) -> EventStore:
        store = self._open(create=create)
        try:
            if views:
                from tri24es.projections import up_to_date

                if not up_to_date(store):  # else no fold and no event catalog is loaded
                    if getattr(store, "read_only", False):
                        from eventlog import StoreUnavailable

                        raise StoreUnavailable(
                            "the views of this read-only store are behind its log (made by "
                            "another version of tri24es, or changed by hand): run a command "
                            "on a writable copy once, which rebuilds them")
                    from tri24es.projections.upkeep import install

                    install(store)
        except BaseException:
            store.close()
            raise
        return store

    @property
    def actor(self) -> str:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no login name in the environment or passwd
            user = "unknown"
        return f"cli:{user}"

    @contextmanager
    def services(self, actor: str | None = None, daemon: str | None = None,
                 **options: Any) -> Iterator[Services]:
        """The commands on the store, acting as ``actor`` (default: the user at the CLI);
        ``daemon``: as for ``store``."""
        from tri24es.services import Services

        with self.store(daemon=daemon) as store:
            options.setdefault("retry_backoff", self.settings.retry_backoff_policy())
            yield Services(store, actor=actor or self.actor, trace_id=self.settings.trace_id,
                           **options)

    @contextmanager
    def reading(self) -> Iterator[tuple[EventStore, Db]]:
        """The store and a connection inside one read transaction: a consistent snapshot of
        the views."""
        from tri24es.projections import connection_of

        with self.store() as store, store.snapshot() as tx:
            yield store, connection_of(tx)


def say(line: str) -> None:
    """A notice on stderr, after the program's name (an outage and its end, say)."""
    typer.echo(f"tri24es: {line}", err=True)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean TaskClaimed?)"`` when ``value`` is close to one of ``choices``, else
    the choices themselves, for the end of an error message."""
    import difflib

    options = list(choices)
    folded = {c.lower(): c for c in options}
    close = difflib.get_close_matches(value.lower(), folded, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {folded[close[0]]}?)"
    return f": expected one of {', '.join(options)}"


def parse_choice(text: str, choices: Iterable[str], what: str) -> str:
    """``text`` if it is one of ``choices`` (any case), else a usage error that suggests the
    closest."""
    options = list(choices)
    for choice in options:
        if choice.lower() == text.strip().lower():
            return choice
    raise UsageError(f"bad {what} {text!r}{did_you_mean(text.strip(), options)}")


def parse_priority(text: str) -> Priority:
    """``"high"`` -> ``Priority.HIGH``; anything else is a usage error naming the choices."""
    from tri24es.names import Priority

    return Priority(parse_choice(text, (p.value for p in Priority), "priority"))


def parse_task_state(text: str) -> TaskState:
    from tri24es.machines import TaskState

    return TaskState(parse_choice(text, (s.value for s in TaskState), "state"))


def check_event_types(types: list[str] | None) -> None:
    """Every name in ``types`` is an event type of the catalog: a typo would otherwise select
    nothing, silently."""
    if not types:
        return
    from tri24es.events import CATALOG

    for name in types:
        if name not in CATALOG:
            raise UsageError(f"unknown event type {name!r}{did_you_mean(name, sorted(CATALOG))}")


def parse_point(text: str, option: str) -> int | datetime:
    """A log position or an ISO-8601 time given to ``option``."""
    from tri24es.timeutil import parse_point as parse

    try:
        return parse(text)
    except ValueError as e:
        raise UsageError(f"bad {option} {e}") from None


def check_exec(text: str | None) -> str | None:
    """``--exec`` of ``worker`` and ``up``, checked before any task is claimed: an empty one
    made a worker that claimed tasks and failed each for want of a command, and bad quoting
    failed them one by one too."""
    from tri24es.inputs.taskfile import parse_command

    if text is None:
        return None
    try:
        argv = parse_command(text)
    except ValueError as e:
        raise UsageError(f"bad --exec: {e}") from None
    if argv is None:
        raise UsageError("--exec must not be empty (without it, workers take only the tasks "
                         "that carry their own command)")
    return text


def context_of(ctx: typer.Context) -> Context:
    context: Context = ctx.find_root().obj
    return context


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (rich, when installed, else a counter), advanced by the
    callable it yields; none unless stderr is a terminal, so that scripts see only results."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    if importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            job = bar.add_task(label, total=total)
            yield lambda n: bar.advance(job, n)
        return
    done = [0]

    def count(n: int) -> None:
        done[0] += n
        print(f"\r{label}: {done[0]}/{total} events", end="", file=sys.stderr, flush=True)

    yield count
    print(file=sys.stderr)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]],
                squeeze: str | None = None) -> None:
    """Rows under a header, in columns that fit the terminal (80 columns when piped): a value
    too long for its column ends in an ellipsis. ``squeeze`` names the column that gives up
    its room first (a title), so that ids keep theirs. Cells are text, never markup.

    Widths are rich's cell widths (a CJK character takes two columns); the rest is a join.
    rich's ``Table`` did the same for the cost of importing its console, a third of the
    start-up of ``tasks list``."""
    from rich.cells import cell_len, set_cell_size

    cells = [[_one_line("-" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([cell_len(h), *(cell_len(c) for c in column)])
              for h, column in zip(headers, zip(*cells, strict=True) if cells else
                                   [()] * len(headers), strict=True)]
    # too wide: the squeezed column gives up its room first, then the widest ones in turn
    excess = sum(widths) + 2 * (len(widths) - 1) - terminal_width()
    if excess > 0 and squeeze in headers:
        i = headers.index(squeeze)
        cut = min(excess, max(widths[i] - 12, 0))
        widths[i] -= cut
        excess -= cut
    # then the widest in turn: to 8 columns at most, and on a narrower terminal below that,
    # so that no row is wider than the terminal (a wider one wraps and breaks the columns)
    while excess > 0 and max(widths) > 1:
        i = widths.index(max(widths))
        widths[i] -= 1
        excess -= 1

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            set_cell_size(v, w) if cell_len(v) <= w else set_cell_size(v, w - 1) + "…"
            for v, w in zip(values, widths, strict=True)).rstrip()

    bold = _on_a_terminal() and os.environ.get("TERM") != "dumb"
    header = line(headers)
    # one write, as rich's console made: line by line, a reader that has what it wants and
    # goes (`tasks list | head -3`) made the next line a broken pipe, which click exits 1 for
    typer.echo("\n".join([f"\x1b[1m{header}\x1b[0m" if bold else header,
                          *(line(row) for row in cells)]))


#: What a terminal would act on rather than show: C0 and C1 controls (an ESC, or U+009B, the
#: one-character CSI, starts an escape sequence), DEL, the line and paragraph separators, and
#: the bidirectional overrides and isolates (they reorder the rest of the row).
_CONTROL = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
                          *range(0x202A, 0x202F), *range(0x2066, 0x206A)], " ")


#: The same characters as escapes (``\u202e``), valid in a JSON string, for output that must
#: stay exact (JSON, a log line) yet never be obeyed by the terminal; newlines kept.
_ESCAPED = {c: f"\\u{c:04x}" for c in _CONTROL}
_ESCAPED_BUT_NEWLINES = {c: e for c, e in _ESCAPED.items() if c != 0x0A}


def shown(text: str, *, newlines: bool = True) -> str:
    """``text`` with what a terminal would act on (an escape sequence, a bidirectional
    override) written as a ``\\uXXXX`` escape: shown, never obeyed. Newlines are kept
    unless ``newlines`` is False (a line that must stay one)."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPED_BUT_NEWLINES if newlines else _ESCAPED)


def _one_line(text: str) -> str:
    """A cell stays on its row and is shown, never obeyed: a newline or another control
    character is a space."""
    return text.translate(_CONTROL) if not text.isprintable() else text


def terminal_width() -> int:
    """``COLUMNS`` if set, else the terminal's width, else 80 (piped), as rich decides it."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isascii() and columns.isdigit() and int(columns) > 0:  # else as if unset
        return max(int(columns), 20)
    if _on_a_terminal():
        return shutil.get_terminal_size((80, 24)).columns
    return 80


def _on_a_terminal() -> bool:
    """Is the output a terminal? No output at all (started with stdout closed, ``>&-``: Python
    makes ``sys.stdout`` None) is none: click's echo then prints nothing, as rich did."""
    return sys.stdout is not None and sys.stdout.isatty()


def output_gone() -> bool:
    """Has the reader of our output (stdout or stderr) gone (``tri24es events -f | head -1``,
    head done)? A pipe whose reader closed polls as an error for its writer; a follower asks
    between waits, so that it ends then and not at its next event, which may be hours away."""
    import select

    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def print_json(value: Any) -> None:
    typer.echo(shown(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()))


def watch_for_changes(store: EventStore) -> None:
    """Set up the store's change notices (an import that builds classes, a thread) now, before
    a follower's first output. A Ctrl-C landing inside that import would escape as a
    RuntimeError, or, caught as KeyboardInterrupt, still make CPython 3.11 exit by SIGINT: it
    marks an interrupt raised in code built by ``exec`` (dataclasses) as unhandled."""
    store.wait_for_change(store.head(), timeout=0)
