"""Times as the log keeps them: integer microseconds since the Unix epoch, UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventlog.model import system_clock_us

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_ONE_US = timedelta(microseconds=1)


# pydantic gives a UTC time its own tzinfo, one object shared by all: subtracting an epoch
# with that very tzinfo skips two utcoffset() calls, half the cost of to_us in a replay. Set
# by the event catalog when it loads (``use_pydantic_utc``): a read command loads no pydantic.
_PYDANTIC_EPOCH: datetime = EPOCH


def use_pydantic_utc() -> None:
    from pydantic_core import SchemaValidator, core_schema

    global _PYDANTIC_EPOCH
    _PYDANTIC_EPOCH = SchemaValidator(core_schema.datetime_schema()).validate_python(
        "1970-01-01T00:00:00Z")


def to_us(moment: datetime) -> int:
    epoch = _PYDANTIC_EPOCH if moment.tzinfo is _PYDANTIC_EPOCH.tzinfo else EPOCH
    return (moment - epoch) // _ONE_US


def from_us(microseconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds)


def now_us() -> int:
    """The wall clock (skewed by ``TRI24ES_CLOCK_OFFSET_US`` in clock-fault tests)."""
    return system_clock_us()


def iso_time(microseconds: int) -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2026-11-24T11:05:19.123456Z``."""
    return from_us(microseconds).isoformat().replace("+00:00", "Z")


#: The largest log position (SQLite's and PostgreSQL's bigint): a larger one was a traceback
#: where the store was asked for it (``audit export --since 99999999999999999999``).
LARGEST_POSITION = 2**63 - 1


def parse_point(text: str) -> int | datetime:
    """A point in the log: a position (``"42"``) or an ISO-8601 time (naive means UTC).
    Raises ValueError for anything else."""
    value = text.strip()
    if value.isascii() and value.isdigit():  # not "²": int() refuses what isdigit() takes
        if len(value.lstrip("0")) > 19 or int(value) > LARGEST_POSITION:
            shown = repr(text) if len(text) <= 40 else repr(text[:30]) + "…"
            raise ValueError(f"{shown}: a log position is at most {LARGEST_POSITION}")
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: expected a log position or an ISO-8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
