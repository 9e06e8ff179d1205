"""How events look on a terminal and as JSON lines."""

from __future__ import annotations

import orjson

from eventlog import RecordedEvent
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
