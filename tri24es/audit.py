"""Export and verification of the hash-chained log (DESIGN.md §2).

An export is one JSON object per event, in position order, each with its own ``hash`` and
the ``prev_hash`` it was chained from, then one summary line with the count and the head
hash. Anyone holding the file can recompute every hash with ``eventlog.model.chain_hash``.

What a verification proves:

- the store, or an unfiltered export from position 1: every row follows from its
  predecessor back to the genesis hash, with no position missing, out of order or changed;
- a ``--since``/``--until`` slice: the same for the rows in the file; the first row's
  ``prev_hash`` is taken as given (compare it, or the head hash, with the store to tie the
  slice to the log);
- a ``--stream``/``--type`` export: each row is consistent with its own ``prev_hash``, and
  rows at consecutive positions link up; a row whose content *and* hash were rewritten cannot
  be told apart from the file alone (compare its hash with the store's).
"""

from __future__ import annotations

import base64
import csv
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import IO, Any

import orjson

from eventlog import CorruptLog, EventStore, RecordedEvent, check_chain, position_at
from eventlog.model import GENESIS_HASH, chain_hash
from tri24es.errors import Tri24esError, UsageError
from tri24es.timeutil import from_us, to_us

FIELDS = ("position", "stream", "version", "type", "event_id", "data", "metadata",
          "recorded_at", "hash", "prev_hash")


def iso_us(microseconds: int) -> str:
    """ISO-8601 UTC with all six digits of microseconds (``…T11:05:19.000000Z``)."""
    return from_us(microseconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Selection:
    """Which events to export: positions ``after < p <= until``, then stream and types."""

    after: int = 0
    until: int | None = None
    stream: str | None = None
    types: frozenset[str] | None = None

    @property
    def filtered(self) -> bool:
        return self.stream is not None or self.types is not None


@dataclass
class ExportSummary:
    count: int = 0
    first_position: int | None = None
    last_position: int | None = None
    head_hash: str | None = None

    def as_dict(self, selection: Selection) -> dict[str, Any]:
        return {"summary": {
            "count": self.count, "first_position": self.first_position,
            "last_position": self.last_position, "head_hash": self.head_hash,
            "filtered": selection.filtered,
        }}


def stream_without_mmap(store: EventStore) -> None:
    """Read the SQLite file with plain reads rather than through the store's memory map:
    mapped pages count in the resident set, so a full scan would grow it by the whole file
    (up to the map's size, 256 MB) while the export itself holds one page of events."""
    with store.snapshot() as tx:
        conn = tx.connection
        if isinstance(conn, sqlite3.Connection):
            conn.execute("PRAGMA mmap_size = 0")


def hash_at(store: EventStore, position: int) -> bytes:
    """The hash of the event at ``position`` (the genesis hash at 0 or past the head)."""
    if position <= 0:
        return GENESIS_HASH
    page = store.read_page(position - 1, 1)
    return page[0].hash if page else GENESIS_HASH


def select(
    store: EventStore, selection: Selection, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[RecordedEvent, bytes]]:
    """The selected events with the hash each was chained from, read a page at a time.

    Filters are applied here rather than in SQL: the previous row's hash is always at hand.
    """
    stream_without_mmap(store)
    prev = hash_at(store, selection.after)
    stream, types = selection.stream, selection.types
    for page in store.read_pages(selection.after, until_position=selection.until):
        for event in page:
            if (stream is None or event.stream == stream) and (
                types is None or event.type in types
            ):
                yield event, prev
            prev = event.hash
        if progress is not None:
            progress(len(page))


def _payload(raw: bytes, key: str, row: dict[str, Any], encoded: list[str]) -> None:
    """Embed JSON as JSON when it round-trips to the same bytes; else base64 (marked)."""
    try:
        if orjson.dumps(orjson.loads(raw)) == raw:
            row[key] = orjson.Fragment(raw)
            return
    except orjson.JSONDecodeError:
        pass
    row[key] = base64.b64encode(raw).decode()
    encoded.append(key)


def jsonl_row(event: RecordedEvent, prev: bytes) -> bytes:
    row: dict[str, Any] = {
        "position": event.position, "stream": event.stream, "version": event.version,
        "type": event.type, "event_id": event.event_id,
    }
    encoded: list[str] = []
    _payload(event.data, "data", row, encoded)
    _payload(event.metadata, "metadata", row, encoded)
    row["recorded_at"] = iso_us(event.recorded_at)
    row["hash"] = event.hash.hex()
    row["prev_hash"] = prev.hex()
    if encoded:
        row["base64"] = encoded
    return orjson.dumps(row) + b"\n"


def export_jsonl(rows: Iterable[tuple[RecordedEvent, bytes]], out: IO[bytes],
                 selection: Selection, checkpoint: dict[str, Any] | None = None
                 ) -> ExportSummary:
    """The rows, then the summary; first, when given, the witness's signed checkpoint of
    the log (``{"checkpoint": {...}}``, see tri24es.witness)."""
    if checkpoint is not None:
        out.write(orjson.dumps({"checkpoint": checkpoint}) + b"\n")
    summary = ExportSummary()
    last: RecordedEvent | None = None
    for event, prev in rows:
        out.write(jsonl_row(event, prev))
        if last is None:
            summary.first_position = event.position
        last = event
        summary.count += 1
    if last is not None:
        summary.last_position, summary.head_hash = last.position, last.hash.hex()
    out.write(orjson.dumps(summary.as_dict(selection)) + b"\n")
    return summary


def export_csv(rows: Iterable[tuple[RecordedEvent, bytes]], out: IO[str]) -> ExportSummary:
    """A header and one row per event; data and metadata as their JSON text."""
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    summary = ExportSummary()
    for event, prev in rows:
        writer.writerow((
            event.position, event.stream, event.version, event.type, event.event_id,
            event.data.decode(errors="replace"), event.metadata.decode(errors="replace"),
            iso_us(event.recorded_at), event.hash.hex(), prev.hex(),
        ))
        if summary.first_position is None:
            summary.first_position = event.position
        summary.count += 1
        summary.last_position, summary.head_hash = event.position, event.hash.hex()
    return summary


# --- positions from times ---------------------------------------------------------------


def selection_for(store: EventStore, since: int | datetime | None, until: int | datetime | None,
                  stream: str | None, types: Iterable[str] | None) -> Selection:
    """``since`` and ``until`` are inclusive: a position, or a time (events recorded at or
    after since, at or before until)."""
    after = 0
    if since is not None:
        after = (position_at(store, to_us(since) - 1) if isinstance(since, datetime)
                 else max(since - 1, 0))
    last: int | None = None
    if until is not None:
        last = position_at(store, to_us(until)) if isinstance(until, datetime) else until
    if last is not None and last < after:
        raise UsageError(f"--until {until} is before --since {since}")
    wanted = frozenset(types) if types else None
    return Selection(after, last, stream, wanted)


class ChainBroken(Tri24esError):
    """The hash chain does not verify."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    position: int
    kind: str  # changed | missing | reordered | truncated | malformed
    detail: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.kind} ({self.detail})"


@dataclass(frozen=True)
class Verified:
    count: int
    head_hash: str
    #: What the pass over the store also gathered: the hashes at the positions asked for,
    #: and the events of the types asked for (evidence of tampering; see tri24es.evidence).
    hashes: dict[int, bytes] = field(default_factory=dict, compare=False)
    noted: list[RecordedEvent] = field(default_factory=list, compare=False)


def verify_store(store: EventStore, progress: Callable[[int], None] | None = None, *,
                 hashes_at: Collection[int] = (), noting: Collection[str] = ()) -> Verified:
    """The whole log, from the genesis hash; ChainBroken at the first bad position. In the
    same pass, the hashes at ``hashes_at`` and the events of the types in ``noting``."""
    stream_without_mmap(store)
    pages: Iterable[list[RecordedEvent]] = store.read_pages()
    if progress is not None:
        pages = _counted(pages, progress)
    hashes: dict[int, bytes] = {}
    noted: list[RecordedEvent] = []
    events: Iterable[RecordedEvent] = chain.from_iterable(pages)
    if hashes_at or noting:
        events = _gathering(events, set(hashes_at), set(noting), hashes, noted)
    try:
        count, head = check_chain(events)
    except CorruptLog as e:
        detail = e.problem.removeprefix(e.kind).strip().removeprefix("(").removesuffix(")")
        raise ChainBroken(Problem(e.position, e.kind, detail)) from None
    return Verified(count, head.hex(), hashes, noted)


def _gathering(events: Iterable[RecordedEvent], positions: set[int], types: set[str],
               hashes: dict[int, bytes], noted: list[RecordedEvent]) -> Iterator[RecordedEvent]:
    for event in events:
        if event.position in positions:
            hashes[event.position] = event.hash
        if event.type in types:
            noted.append(event)
        yield event


def _counted(pages: Iterable[list[RecordedEvent]],
             progress: Callable[[int], None]) -> Iterator[list[RecordedEvent]]:
    for page in pages:
        yield page
        progress(len(page))


# --- verifying an export ----------------------------------------------------------------


class _FileChecker:
    """Checks an export line by line, keeping only the previous row: constant memory.

    Problems are kept in the order they are found; gaps in positions are set aside until
    the summary says whether the export was filtered (a filtered export has gaps).
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.gaps: list[tuple[int, int, Problem]] = []  # (first, last) missing positions
        self.count = 0
        self.max_seen = 0
        self.prev: tuple[int, bytes] | None = None  # the previous row's position and hash
        self.summary: dict[str, Any] | None = None
        self.unparsed: int | None = None  # the line number of a line that is not JSON
        self.checkpoint: tuple[int, bytes] | None = None  # the witness's (position, hash)
        self.checkpoint_seen = False

    def line(self, number: int, text: bytes) -> None:
        if not text.strip():
            return
        after = self.prev[0] if self.prev else 0
        if self.unparsed is not None:
            self._found(after + 1, "malformed", f"line {self.unparsed} is not JSON")
            self.unparsed = None
        if self.summary is not None:
            self._found(after + 1, "malformed", f"line {number} follows the summary line")
            return
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.unparsed = number
            return
        if isinstance(obj, dict) and "summary" in obj and isinstance(obj["summary"], dict):
            self.summary = obj["summary"]
            return
        if isinstance(obj, dict) and "checkpoint" in obj:
            if self.count or self.checkpoint is not None:
                self._found(after + 1, "malformed", f"line {number}: a checkpoint after line 1")
                return
            try:
                self.checkpoint = (int(obj["checkpoint"]["position"]),
                                   bytes.fromhex(obj["checkpoint"]["head_hash"]))
            except (KeyError, TypeError, ValueError) as e:
                self._found(after + 1, "malformed", f"line {number}: {e!r}")
            return
        try:
            self.row(*_fields(obj))
        except (KeyError, TypeError, ValueError) as e:
            self._found(after + 1, "malformed", f"line {number}: {e!r}")

    def row(self, position: int, prev_hash: bytes, hash_: bytes, *fields: Any) -> None:
        self.count += 1
        if position <= self.max_seen:
            problem = Problem(position, "reordered", f"found after position {self.max_seen}")
            covering = [g for g in self.gaps if g[0] <= position <= g[1]]
            self.gaps = [g for g in self.gaps if g not in covering]
            self._found(position, problem.kind, problem.detail)
        elif position > self.max_seen + 1 and self.count > 1:
            first = self.max_seen + 1
            self.gaps.append((first, position - 1, Problem(
                first, "missing", f"positions jump from {self.max_seen} to {position}")))
        if position == 1 and prev_hash != GENESIS_HASH:
            self._found(position, "changed", "the first event is not chained from genesis")
        if chain_hash(prev_hash, position, *fields) != hash_:
            self._found(position, "changed", "its hash does not match its contents")
        if self.prev is not None and position == self.prev[0] + 1 and prev_hash != self.prev[1]:
            self._found(self.prev[0], "changed",
                        f"its hash is not the prev_hash of position {position}")
        if self.checkpoint is not None and position == self.checkpoint[0]:
            self.checkpoint_seen = True
            if hash_ != self.checkpoint[1]:
                self._found(position, "changed", "its hash is not the one the witness signed")
        self.max_seen = max(self.max_seen, position)
        self.prev = (position, hash_)

    def _found(self, position: int, kind: str, detail: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(Problem(position, kind, detail))

    def result(self) -> Verified:
        last = self.prev[0] if self.prev else 0
        end: list[Problem] = []
        if self.unparsed is not None:
            end.append(Problem(last + 1, "truncated", f"the last line ({self.unparsed}) is cut"))
        summary = self.summary
        if summary is None:
            end.append(Problem(last + 1, "truncated", f"no summary line after position {last}"))
        else:
            if summary.get("count") != self.count:
                kind = "truncated" if self.count < int(summary.get("count") or 0) else "changed"
                end.append(Problem(last + 1, kind, f"the summary counts {summary.get('count')} "
                                   f"events, the file holds {self.count}"))
            elif self.prev is not None and summary.get("head_hash") != self.prev[1].hex():
                end.append(Problem(last, "changed", "the summary's head hash is not the last "
                                   "row's hash"))
        filtered = summary is None or bool(summary.get("filtered"))
        found = self.problems + ([] if filtered else [g[2] for g in self.gaps]) + end
        if found:
            raise ChainBroken(min(found, key=lambda p: p.position))
        seen = dict([self.checkpoint]) if self.checkpoint and self.checkpoint_seen else {}
        return Verified(self.count, self.prev[1].hex() if self.prev else GENESIS_HASH.hex(),
                        seen)


def _payload_bytes(obj: dict[str, Any], key: str) -> bytes:
    value = obj[key]
    if key in obj.get("base64", ()):
        return base64.b64decode(value, validate=True)
    return orjson.dumps(value)


def _fields(obj: dict[str, Any]) -> tuple[Any, ...]:
    """A row as ``(position, prev_hash, hash, <chain_hash fields after position>)``."""
    recorded = datetime.fromisoformat(obj["recorded_at"].replace("Z", "+00:00"))
    return (
        int(obj["position"]), bytes.fromhex(obj["prev_hash"]), bytes.fromhex(obj["hash"]),
        str(obj["stream"]), int(obj["version"]), str(obj["event_id"]), str(obj["type"]),
        _payload_bytes(obj, "data"), _payload_bytes(obj, "metadata"), to_us(recorded),
    )


def verify_export(lines: Iterable[bytes]) -> Verified:
    """An exported JSONL file; ChainBroken naming the first bad position."""
    checker = _FileChecker()
    for number, text in enumerate(lines, 1):
        checker.line(number, text)
    return checker.result()
