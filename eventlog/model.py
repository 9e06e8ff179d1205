"""Plain data of the event log: what a writer hands in and what a reader gets back.

The log is domain-free: payloads are opaque JSON bytes. Mapping them to typed events is the
job of the application's codec (``tri24es.events``).
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class ExpectedVersion(enum.Enum):
    """Optimistic-concurrency expectations other than an exact version number."""

    NO_STREAM = "no stream"  # the stream must not exist yet (same as 0)
    STREAM_EXISTS = "stream exists"  # the stream must have at least one event
    ANY = "any"  # no check

    def __str__(self) -> str:
        return self.value


NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS
ANY = ExpectedVersion.ANY

Expected = int | ExpectedVersion


def version_matches(expected: Expected, actual: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual == 0
    if expected is STREAM_EXISTS:
        return actual > 0
    return expected == actual


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``data`` and ``metadata`` are JSON bytes."""

    type: str
    data: bytes
    metadata: bytes = b"{}"
    event_id: str = field(default_factory=lambda: new_event_id())


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): a millisecond timestamp, then 74 random bits.

    Time-ordered ids land at the right edge of the event_id index, so a batch of new events
    dirties a few index pages instead of one random page each. (``random`` is reseeded in a
    forked child, and 74 bits per millisecond make a collision unthinkable.)
    """
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & _LOW62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LOW62 = (1 << 62) - 1


class RecordedEvent(NamedTuple):
    """An event as stored. A tuple, because reading a million of them must be cheap."""

    position: int
    stream: str
    version: int
    event_id: str
    type: str
    data: bytes
    metadata: bytes
    recorded_at: int  # microseconds since the Unix epoch, UTC
    hash: bytes


#: A row as ``EventStore.read_payload_pages`` gives it: (position, stream, version, event_id,
#: type, data, metadata, recorded_at), possibly followed by more fields (a RecordedEvent).
EventRow = tuple[Any, ...]

GENESIS_HASH = bytes(32)


def chain_hash(
    prev_hash: bytes,
    position: int,
    stream: str,
    version: int,
    event_id: str,
    type: str,
    data: bytes,
    metadata: bytes,
    recorded_at: int,
) -> bytes:
    """sha256 over the previous row's hash and this row's canonical bytes.

    Every variable-length field is length-prefixed, so no two different rows share bytes.
    """
    head = (
        f"{position}|{recorded_at}|{version}|{len(stream)}:{stream}|{event_id}|{len(type)}:{type}|"
    )
    h = hashlib.sha256(prev_hash)
    h.update(head.encode())
    h.update(b"%d:" % len(data))
    h.update(data)
    h.update(b"%d:" % len(metadata))
    h.update(metadata)
    return h.digest()


def rehash(prev_hash: bytes, event: RecordedEvent) -> bytes:
    return chain_hash(
        prev_hash,
        event.position,
        event.stream,
        event.version,
        event.event_id,
        event.type,
        event.data,
        event.metadata,
        event.recorded_at,
    )


def redact_url(url: str) -> str:
    """The URL without its password, for messages and output."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


#: The largest clock offset taken, either way: 100 years (a larger one put times out of the
#: range of a date or of a 64-bit integer). The CLI refuses a larger or malformed one (exit 2,
#: ``tri24es.config``); here, outside the CLI, it is ignored as a malformed one always was.
LARGEST_CLOCK_OFFSET_US = 36_500 * 86_400 * 1_000_000


def _clock_offset_us() -> int:
    try:
        offset = int(os.environ.get("TRI24ES_CLOCK_OFFSET_US") or 0)
    except ValueError:
        return 0
    return offset if abs(offset) <= LARGEST_CLOCK_OFFSET_US else 0


#: A test hook (the multi-process clock-fault tests): this process's wall clock is read as
#: ``TRI24ES_CLOCK_OFFSET_US`` microseconds ahead of (or, negative, behind) the real one.
#: Read once, at import; everything that stamps a time goes through ``system_clock_us``.
CLOCK_OFFSET_US = _clock_offset_us()


def system_clock_us() -> int:
    return time.time_ns() // 1000 + CLOCK_OFFSET_US


class Head(NamedTuple):
    """The last row of the log: where the next row's position, time and hash continue from."""

    position: int
    recorded_at: int
    hash: bytes


EMPTY_HEAD = Head(0, 0, GENESIS_HASH)


def stamp(
    head: Head, stream: str, version: int, events: list[NewEvent], now_us: int
) -> list[RecordedEvent]:
    """Give new events their positions, versions, times and chain hashes after ``head``.

    ``recorded_at`` never goes below the head's, even when the wall clock stepped back.
    """
    recorded_at = max(now_us, head.recorded_at)
    position, prev = head.position, head.hash
    out: list[RecordedEvent] = []
    for e in events:
        position += 1
        version += 1
        prev = chain_hash(
            prev, position, stream, version, e.event_id, e.type, e.data, e.metadata, recorded_at
        )
        out.append(
            RecordedEvent(
                position, stream, version, e.event_id, e.type, e.data, e.metadata, recorded_at, prev
            )
        )
    return out
