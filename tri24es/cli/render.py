"""How events look on a terminal and as JSON lines."""

from __future__ import annotations

import orjson

from eventlog import RecordedEvent
from tri24es.events import EventDecodeError, decode_event
from tri24es.timeutil import iso_time

TEXT_DATA_WIDTH = 120


def event_json(event: RecordedEvent) -> bytes:
    """One event as a JSON object; data and metadata are embedded as stored, not re-encoded."""
    return orjson.dumps(
        {
            "position": event.position,
            "stream": event.stream,
            "version": event.version,
            "type": event.type,
            "event_id": event.event_id,
            "data": orjson.Fragment(event.data),
            "metadata": orjson.Fragment(event.metadata),
            "recorded_at": iso_time(event.recorded_at),
        }
    )


def event_json_line(event: RecordedEvent) -> str:
    return event_json(event).decode() + "\n"


def event_text_line(event: RecordedEvent) -> str:
    data = event.data.decode(errors="replace")
    if len(data) > TEXT_DATA_WIDTH:
        data = data[: TEXT_DATA_WIDTH - 1] + "…"
    return (
        f"{event.position:>7}  {iso_time(event.recorded_at)}  "
        f"{event.stream} v{event.version}  {event.type}  {data}\n"
    )


def decode_problem(event: RecordedEvent) -> str | None:
    """Why ``event`` cannot be shown, as one printable line naming its position: its payload
    does not decode to a catalog event (corrupt, or a type this version does not know), or its
    metadata is not a JSON object. None if it can be shown."""
    try:
        decode_event(event)
    except EventDecodeError as e:
        return _printable(str(e))
    try:
        metadata = orjson.loads(event.metadata)
    except orjson.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        return _printable(f"event at position {event.position} ({event.type}): "
                          "corrupt metadata: not a JSON object")
    return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
