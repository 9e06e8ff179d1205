"""``tri24es audit export|verify``: the hash-chained log as a file anyone can check."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated

import typer

from tri24es.cli.common import check_event_types, context_of, parse_point, progress_bar
from tri24es.errors import UsageError

audit_app = typer.Typer(
    help="Export the log with its hash chain, and verify the store or an export.",
    no_args_is_help=True,
)

FORMATS = ("jsonl", "csv")


@contextmanager
def _output(path: Path | None, binary: bool) -> Iterator[IO[bytes] | IO[str]]:
    if path is None:
        out: IO[bytes] | IO[str] = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
        return
    try:
        handle = path.open("wb") if binary else path.open("w", newline="", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    with handle:
        yield handle


@audit_app.command("export")
def export(
    ctx: typer.Context,
    format_: Annotated[
        str, typer.Option("--format", help="jsonl (verifiable, with a summary line) or csv.")
    ] = "jsonl",
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this position or ISO time (inclusive)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Up to this position or ISO time (inclusive)."),
    ] = None,
    stream: Annotated[str | None, typer.Option("--stream", help="Only this stream.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type (repeatable).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Stream the log, oldest first, with each event's hash and the hash it chains from.

    Example: tri24es audit export --since 2026-11-24T00:00:00Z -o audit.jsonl
    """
    if format_ not in FORMATS:
        raise UsageError(f"bad --format {format_!r}: expected jsonl or csv")
    check_event_types(type_)
    from tri24es import audit  # imported on use: every other command starts faster

    first = None if since is None else parse_point(since, "--since")
    last = None if until is None else parse_point(until, "--until")
    with context_of(ctx).store(views=False) as store:
        selection = audit.selection_for(store, first, last, stream, type_)
        end = store.head() if selection.until is None else min(selection.until, store.head())
        total = max(end - selection.after, 0)
        with progress_bar("exporting", total, enabled=output is not None) as progress, \
                _output(output, binary=format_ == "jsonl") as out:
            rows = audit.select(store, selection, progress)
            if format_ == "jsonl":
                summary = audit.export_jsonl(rows, out, selection)  # type: ignore[arg-type]
            else:
                summary = audit.export_csv(rows, out)  # type: ignore[arg-type]
    if output is not None:
        typer.echo(f"exported {summary.count} events to {output}, head {summary.head_hash}",
                   err=True)


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="A JSONL export to check (default: the store itself)."),
    ] = None,
) -> None:
    """Check the hash chain of the store, or of an exported JSONL file; exit 1 naming the
    first bad position (changed, missing, reordered, truncated).

    Example: tri24es audit verify audit.jsonl
    """
    from tri24es import audit  # imported on use: every other command starts faster

    if file is None:
        with context_of(ctx).store(views=False) as store:
            result = audit.verify_store(store)
    else:
        try:
            with file.open("rb") as lines:
                first = lines.read(1)
                if first and first not in b"{ \n":
                    raise UsageError(f"{file} is not a JSONL export (CSV cannot be verified)")
                lines.seek(0)
                result = audit.verify_export(lines)
        except OSError as e:
            raise UsageError(f"cannot read {file}: {e.strerror}") from e
    typer.echo(f"verified {result.count} events, head {result.head_hash}")
