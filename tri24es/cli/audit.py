"""``tri24es audit export|verify``: the hash-chained log as a file anyone can check."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import check_event_types, context_of, parse_point, progress_bar
from tri24es.errors import Tri24esError, UsageError

if TYPE_CHECKING:
    from eventlog import EventStore
    from tri24es.witness import Checkpoint, Witness

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
    from tri24es.files import private_fd

    # The export holds every task's text: 0600 whatever the umask, never through a link or
    # into someone else's file (the folder is the user's choice, e.g. /tmp).
    try:
        fd = private_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, folder=False)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    handle = (os.fdopen(fd, "wb") if binary
              else os.fdopen(fd, "w", newline="", encoding="utf-8"))
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
    context = context_of(ctx)
    with context.store(views=False) as store:
        checkpoint = None
        if format_ == "jsonl":  # signed first: the export reaches at least that far
            audit.stream_without_mmap(store)  # signing may read the whole log
            checkpoint = _checkpoint(context.settings.witness, store)
        selection = audit.selection_for(store, first, last, stream, type_)
        end = store.head() if selection.until is None else min(selection.until, store.head())
        total = max(end - selection.after, 0)
        with progress_bar("exporting", total, enabled=output is not None) as progress, \
                _output(output, binary=format_ == "jsonl") as out:
            rows = audit.select(store, selection, progress)
            if format_ == "jsonl":
                summary = audit.export_jsonl(rows, out, selection,  # type: ignore[arg-type]
                                             checkpoint.as_dict() if checkpoint else None)
            else:
                summary = audit.export_csv(rows, out)  # type: ignore[arg-type]
    if output is not None:
        typer.echo(f"exported {summary.count} events to {output}, head {summary.head_hash}",
                   err=True)


def _checkpoint(witness: Witness, store: EventStore) -> Checkpoint | None:
    """Sign the store's head for the witness (if it grew): the checkpoint to embed. A log
    that does not follow from the witness's last checkpoint is exported without one."""
    from tri24es.files import UnsafeFolder
    from tri24es.witness import WitnessError

    try:
        return witness.sign(store) or witness.last()
    except (WitnessError, UnsafeFolder) as e:
        typer.echo(f"tri24es: warning: {e}; exporting without a checkpoint", err=True)
        return None


class TamperEvidence(Tri24esError):
    """``audit verify`` found evidence that the store was tampered with."""


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="A JSONL export to check (default: the store itself)."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option("--public-key", help="The witness's public key (hex) to check an "
                                          "export's checkpoint with."),
    ] = None,
) -> None:
    """Check the store: its hash chain, the append-only guards, the kill switch and spend
    views against the log, and the log against the witness's signed checkpoints; or check
    an exported JSONL file (its chain and its checkpoint). Exit 1 naming what is wrong.

    Example: tri24es audit verify audit.jsonl
    """
    from tri24es import audit  # imported on use: every other command starts faster

    context = context_of(ctx)
    if file is None and public_key is not None:  # it was ignored: a check the user never got
        raise UsageError("--public-key goes with FILE, an export (the store is checked "
                         "against the witness's own key)")
    if file is None:
        from tri24es import evidence

        with context.store(views=False) as store, \
                progress_bar("verifying", store.head()) as progress:
            report = evidence.inspect(store, context.settings.witness, progress)
        if report.verified is not None:
            typer.echo(f"verified {report.verified.count} events, "
                       f"head {report.verified.head_hash}")
        for line in report.notes:
            typer.echo(line)
        for line in report.findings:
            typer.echo(f"found: {line}")
        if report.findings:
            more = len(report.findings) - 1
            raise TamperEvidence(report.findings[0] + (f" (and {more} more, above)"
                                                       if more else ""))
        return
    from tri24es.files import open_without_waiting

    trusted = _public_key(public_key) if public_key else context.settings.witness.public_key()
    try:
        # a FIFO or a device is refused, never waited on (nor read for ever: /dev/zero)
        with os.fdopen(open_without_waiting(file, os.O_RDONLY), "rb") as lines:
            head_line = lines.readline()
            if head_line and head_line[:1] not in b"{ \n":
                raise UsageError(f"{file} is not a JSONL export (CSV cannot be verified)")
            lines.seek(0)
            result = audit.verify_export(lines)
    except OSError as e:
        raise UsageError(f"cannot read {file}: {e.strerror}") from e
    typer.echo(f"verified {result.count} events, head {result.head_hash}")
    typer.echo(_embedded(head_line, trusted, result.hashes))


def _public_key(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError("bad --public-key: expected 64 hex digits (audit verify prints it)")
    return raw


def _embedded(first_line: bytes, trusted: bytes | None, seen: dict[int, bytes]) -> str:
    """What the export's checkpoint says, once its signature is checked."""
    import orjson

    from tri24es.witness import check_embedded, fingerprint

    try:
        obj = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or "checkpoint" not in obj:
        return "checkpoint: none (the export is not anchored to a witness)"
    checkpoint = check_embedded(obj["checkpoint"], trusted)
    key = ("your witness key" if trusted is not None
           else f"key {fingerprint(checkpoint.public_key)} (compare it with yours)")
    where = ("in the file, matching" if checkpoint.position in seen
             else "not in the file (a slice)")
    return f"checkpoint: position {checkpoint.position} signed by {key}: {where}"


@audit_app.command("checkpoint")
def checkpoint(ctx: typer.Context) -> None:
    """Sign the log's head for the witness (created on first use): one line appended to
    the witness file, once the events since the last checkpoint are checked to follow
    from it. The budget watchdog does this every TRI24ES_WITNESS_INTERVAL seconds.

    Example: tri24es audit checkpoint
    """
    from tri24es.witness import fingerprint

    context = context_of(ctx)
    witness = context.settings.witness
    with context.store(views=False) as store:
        signed = witness.sign(store)
    if signed is None:
        last = witness.last()
        where = f"position {last.position}" if last else "an empty log"
        typer.echo(f"the log has not grown since the last checkpoint ({where})")
        return
    typer.echo(f"signed position {signed.position}, head {signed.head_hash.hex()}, "
               f"key {fingerprint(signed.public_key)}, in {witness.file_path}")
