"""The legacy spend file ``state/budget/spend.jsonl``, bridged into SpendRecorded events.

One JSON object per line, as the TRI-24 scripts wrote it::

    {"timestamp": "2026-11-24T10:00:00Z", "timestamp_epoch": 1795000000, "amount": 0.42,
     "model": "claude-sonnet-4-5", "task_id": "fix-login"}

Each line becomes one event whose id is derived from the line itself: a uuid5 of the sha256
of its bytes and how many identical lines came before it in the file. Re-reading the file
(after a restart, by another process, after the file was copied or rewritten with the same
lines) therefore records nothing twice: the store refuses a known event id. The byte offset
kept in memory only saves re-reading lines already bridged by this process.

Numbers are parsed exactly: the amount's JSON text becomes a Decimal, never a float.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventlog import EventStore
from tri24es.budget import (
    DEFAULT_MAX_RECORD_USD,
    LARGEST_RECORD_USD,
    BadAmount,
    over_cap,
    parse_amount,
)
from tri24es.errors import Tri24esError
from tri24es.files import open_without_waiting, read_regular
from tri24es.timeutil import from_us, now_us

if TYPE_CHECKING:
    from tri24es import events as ev
    from tri24es.services import Services

NAMESPACE = uuid.UUID("5f0c7a52-8f7e-4f53-9d0b-6d1f2b1f4c11")
#: How far ahead of this machine's clock a line's stamp may be and still count at its stamp.
CLOCK_SKEW = timedelta(seconds=60)


class SpendFileUnreadable(Tri24esError):
    """The spend file is there but cannot be read (a FIFO, a folder, no permission): its
    lines are not counted until it can be."""


def _unreadable(path: Path, e: OSError) -> SpendFileUnreadable:
    return SpendFileUnreadable(f"{path}: {e.strerror or e}: its spend is not counted until it "
                               "can be read")


class BadLine(ValueError):
    """A spend.jsonl line that cannot be bridged."""


def _reject_constant(name: str) -> Any:
    raise BadLine(f"{name} is not a number")


def line_event_id(line: bytes, occurrence: int, kind: str = "spend.jsonl") -> str:
    """The event id of the ``occurrence``-th (from 0) line with these bytes in the file
    (``kind`` "skipped": of the event that counts it as unreadable)."""
    digest = hashlib.sha256(line).hexdigest()
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{digest}:{occurrence}"))


def _occurred_at(obj: dict[str, Any]) -> datetime:
    epoch = obj.get("timestamp_epoch")
    if isinstance(epoch, int | Decimal) and not isinstance(epoch, bool):
        try:
            return datetime.fromtimestamp(float(epoch), UTC)
        except (OverflowError, OSError, ValueError):
            raise BadLine(f"timestamp_epoch {epoch} is out of range") from None
    stamp = obj.get("timestamp")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadLine(f"timestamp {stamp!r} is not an ISO-8601 time") from None
        return moment if moment.tzinfo is not None else moment.astimezone()  # local, as TRI-24
    raise BadLine("no timestamp_epoch or timestamp")


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if not (isinstance(value, str) and value):
        return None
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): no JSON holds it
        # kept as "?": the line's spend is recorded all the same, never dropped for its name
        return value.encode("utf-8", "replace").decode()
    return value


def parse_line(line: bytes, max_usd: Decimal = DEFAULT_MAX_RECORD_USD) -> ev.SpendRecorded:
    """One spend.jsonl line as an event. Raises BadLine saying what is wrong with it."""
    from tri24es import events as ev  # the catalog: not for `spend`, which only counts lines

    return ev.SpendRecorded(**read_line(line, max_usd))


def read_line(line: bytes, max_usd: Decimal = DEFAULT_MAX_RECORD_USD) -> dict[str, Any]:
    """The fields of the event one spend.jsonl line is. Raises BadLine saying what is wrong
    with it."""
    try:
        obj = json.loads(line, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise BadLine(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    if "amount" not in obj:
        raise BadLine("no amount")
    amount = obj["amount"]
    if not isinstance(amount, int | Decimal | str) or isinstance(amount, bool):
        raise BadLine(f"amount {amount!r} is not a number")
    try:  # a numeric string ("0.50") is read exactly, as a JSON number is
        amount = parse_amount(amount, LARGEST_RECORD_USD)
    except BadAmount as e:
        raise BadLine(str(e)) from None
    amount, flagged = over_cap(amount, max_usd)
    return {
        "amount": amount, "model": _text(obj, "model"), "task": _text(obj, "task_id"),
        "worker": _text(obj, "worker_id") or _text(obj, "worker"), "source": "spend.jsonl",
        "occurred_at": _occurred_at(obj), "flagged": flagged,
    }


def at_arrival(spend: ev.SpendRecorded, now: datetime, window_seconds: int) -> ev.SpendRecorded:
    """A line stamped outside the rate window (older, or later than a small clock skew)
    counts when it arrives, flagged: stamped yesterday or in 2099 it would count toward no
    limit at all."""
    stamped = spend.occurred_at
    if now - timedelta(seconds=window_seconds) <= stamped <= now + CLOCK_SKEW:
        return spend
    why = f"stamped {stamped.isoformat()}, outside the rate window: counted at arrival"
    return spend.model_copy(update={
        "occurred_at": now, "flagged": f"{spend.flagged}; {why}" if spend.flagged else why})


@dataclass
class BridgeResult:
    recorded: int = 0
    known: int = 0
    bad: int = 0


Bridged = tuple["ev.SpendRecorded | ev.SpendLinesSkipped", str]  # an event and its id


@dataclass
class SpendFileBridge:
    """Bridges one spend.jsonl into the log; keep one per process to read only new lines.
    A bad line is recorded too, as SpendLinesSkipped (once: its id comes from the line)."""

    path: Path
    max_usd: Decimal = DEFAULT_MAX_RECORD_USD
    report: Callable[[str], None] | None = print  # None: tell nothing, note nothing
    window_seconds: int = 300  # the rate window: lines stamped before it count at arrival
    clock: Callable[[], int] = now_us  # microseconds since the epoch
    _identity: tuple[int, int] | None = None  # (device, inode) of the file read so far
    _offset: int = 0
    _seen: Counter[bytes] = field(default_factory=Counter)
    _reported: set[str] | None = None  # bad lines told of, by any process (see _told)
    _stat: tuple[int, int, int] | None = None
    _lines: int = 0  # lines read up to the offset (for line numbers in reports)

    def changed(self) -> bool:
        """Whether the file looks different from when it was last bridged (cheap: a stat)."""
        return self._file_stat() != self._stat

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:  # (a folder on the way we may not enter): the same until it heals
            return -1, e.errno or 0, 0
        return st.st_ino, st.st_size, st.st_mtime_ns

    def bridge(self, services: Services) -> BridgeResult:
        """Record every line not recorded before; report each bad line once, skip it.
        SpendFileUnreadable if the file is there but cannot be read."""
        from tri24es import events as ev

        result = BridgeResult()
        before = (self._identity, self._offset, Counter(self._seen), self._stat, self._lines)
        batch = self._read_new(result)
        if batch:
            try:
                recorded = services.record_spend_many(batch)
            except BaseException:  # not recorded (e.g. the store is locked): read them again
                self._identity, self._offset, self._seen, self._stat, self._lines = before
                raise
            spends = sum(isinstance(event, ev.SpendRecorded) for event, _ in batch)
            result.recorded, result.known = recorded, spends - recorded
        return result

    def _read_new(self, result: BridgeResult) -> list[Bridged]:
        """The complete lines added since the last read, as events with their ids (bad ones
        counted in ``result`` and reported once)."""
        from tri24es import events as ev

        stat = self._file_stat()
        self._stat = stat
        if stat is None:
            return []
        try:
            with os.fdopen(open_without_waiting(self.path, os.O_RDONLY), "rb") as f:
                st = os.fstat(f.fileno())
                identity = (st.st_dev, st.st_ino)
                if identity != self._identity or st.st_size < self._offset:
                    self._identity, self._offset, self._seen = identity, 0, Counter()
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:  # gone since the stat
            return []
        except OSError as e:
            raise _unreadable(self.path, e) from None
        batch: list[Bridged] = []
        now = from_us(self.clock())
        consumed = 0
        line_number = self._line_count()
        for raw in data.splitlines(keepends=True):
            complete = raw.endswith((b"\n", b"\r"))
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                consumed += len(raw)
                line_number += 1
                continue
            try:
                event = parse_line(line, self.max_usd)
            except BadLine as e:
                if not complete:
                    break  # perhaps still being written: read it again next time
                self._report_once(line_number + 1, line, str(e))
                result.bad += 1
                skipped = ev.SpendLinesSkipped(
                    source="spend.jsonl", count=1, reason=f"line {line_number + 1}: {e}",
                    sample=line[:200].decode(errors="replace"))
                batch.append((skipped, line_event_id(line, self._seen[line], "skipped")))
            else:
                batch.append((at_arrival(event, now, self.window_seconds),
                              line_event_id(line, self._seen[line])))
            self._seen[line] += 1
            consumed += len(raw)
            line_number += 1
        self._offset += consumed
        self._lines = line_number
        return batch

    def _line_count(self) -> int:
        return self._lines if self._offset else 0

    @property
    def _told(self) -> Path:
        """Where the bad lines already reported are noted (``spend.jsonl.reported``): the
        watchdog, each restart and each ``spend import`` would otherwise tell them again."""
        return self.path.with_name(self.path.name + ".reported")

    def _report_once(self, number: int, line: bytes, why: str) -> None:
        if self.report is None:
            return
        if self._reported is None:
            try:
                self._reported = set(read_regular(self._told).decode(errors="replace").split())
            except OSError:  # none yet (or unreadable: then told again, which is harmless)
                self._reported = set()
        key = f"{number}:{hashlib.sha256(line).hexdigest()}"
        if key not in self._reported:
            self._reported.add(key)
            self.report(f"{self.path}:{number}: skipped: {why}")
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                with os.fdopen(open_without_waiting(self._told, flags), "ab") as told:
                    told.write(key.encode() + b"\n")
            except OSError:
                pass  # a read-only folder: reported again next time, nothing worse


def unrecorded_lines(path: Path, store: EventStore, max_usd: Decimal) -> int:
    """How many good lines of the spend file ``path`` are not in the log yet (read only).

    The lines are checked (``read_line``) and their ids derived as ``bridge`` does, without
    making their events: ``tri24es spend`` loads no event catalog for this.
    SpendFileUnreadable if it is there but cannot be read."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise _unreadable(path, e) from None
    seen: Counter[bytes] = Counter()
    ids = []
    for raw in data.splitlines():
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            read_line(line, max_usd)
        except BadLine:
            pass  # bad (or still being written): no spend to record
        else:
            ids.append(line_event_id(line, seen[line]))
        seen[line] += 1
    with store.snapshot() as tx:
        known = sum(len(tx.events_by_id(ids[i:i + 500])) for i in range(0, len(ids), 500))
    return len(ids) - known
