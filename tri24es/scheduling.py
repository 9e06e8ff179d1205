"""Scheduling's pure helpers: retry backoffs, delays, cron slots, when a task may run, and
what similar tasks cost and took (estimates).

Text in, values out (``parse_backoff("10s..5m")``, ``parse_when("in 10m", now)``), and the
one draw of a retry's wait; the services decide with them, the CLI and queue files parse
with them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import TypeVar

from tri24es.budget import WindowTooLong, dollars, parse_window
from tri24es.events import NO_BACKOFF, NO_PROGRESS_OFF, Backoff, NoProgress
from tri24es.timeutil import from_us, to_us


def parse_duration(text: str) -> int:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"0"`` -> seconds (0 allowed, unlike a window)."""
    return 0 if text.strip() in ("0", "0s") else parse_window(text)


def parse_backoff(text: str) -> Backoff:
    """``"5s..10m"`` (base..cap), ``"30s"`` (base; the cap 64 times it) or ``"0"`` / ``"none"``
    (retry at once) -> a Backoff. Raises ValueError naming what is wrong."""
    value = text.strip().lower()
    if value in ("0", "none", "off"):
        return NO_BACKOFF
    base_text, dots, cap_text = value.partition("..")
    try:
        base = parse_duration(base_text)
        cap = parse_duration(cap_text) if dots else base * 64
    except ValueError:
        raise ValueError(f"bad retry backoff {text!r}: expected e.g. 5s..10m, 30s or 0") from None
    if cap < base:
        raise ValueError(f"bad retry backoff {text!r}: the cap is shorter than the base")
    return Backoff(base_s=base, cap_s=cap)


#: Dollars as people write them: ``2``, ``$2.50`` (at most 10 digits each side of the point).
_DOLLARS = re.compile(r"\$?\d{1,10}(?:\.\d{1,10})?")


def parse_no_progress(text: str) -> NoProgress:
    """``"$2 10m"`` (stop an attempt that spent $2 with no progress for 10 minutes; the
    ``$`` optional, the time as ``90s``, ``10m``, ``1h30m``) or ``"off"`` / ``"0"`` (no
    rule, not even the fleet's) -> a NoProgress. Raises ValueError naming what is wrong."""
    value = text.strip().lower()
    if value in ("0", "none", "off"):
        return NO_PROGRESS_OFF
    usd_text, _, after_text = value.replace(",", " ").partition(" ")
    problem = (f"bad no-progress rule {text!r}: expected dollars and a time, e.g. '$2 10m', "
               "or off")
    if _DOLLARS.fullmatch(usd_text) is None:
        raise ValueError(problem)
    try:
        after = parse_window(after_text.strip())
    except ValueError:
        raise ValueError(problem) from None
    usd = Decimal(usd_text.removeprefix("$"))
    return NoProgress(usd=usd, after_s=after)


def no_progress_text(rule: NoProgress) -> str:
    """A rule as ``parse_no_progress`` reads it: ``$2 600s`` or ``off``."""
    return "off" if rule.off else f"${rule.usd.normalize():f} {rule.after_s:g}s"


def retry_wait_us(backoff: Backoff, failures: int, rng: random.Random) -> int:
    """How long to wait after the ``failures``-th failure in a row: between half the step and
    the whole step ("equal jitter": never sooner than half, never all at once)."""
    step = backoff.step_us(failures)
    return step - rng.randrange(step // 2 + 1) if step > 0 else 0


def parse_when(text: str, now_us: int) -> int:
    """A time a task may not run before, as microseconds: an ISO-8601 time (naive means UTC),
    ``in 10m`` / ``10m`` (from ``now_us``) or ``now``. Raises ValueError."""
    value = text.strip()
    if value.lower() == "now":
        return now_us
    relative = value.lower().removeprefix("in ").strip()
    if relative and relative[0].isdigit() and relative[-1] in "smhd":
        try:
            moment_us = now_us + parse_window(relative) * 1_000_000
        except WindowTooLong:
            raise ValueError(f"bad time {text!r}: too far ahead") from None
        except ValueError:
            pass
        else:
            try:
                from_us(moment_us)  # a delay past the calendar's end (9999) is a mistake
            except (OverflowError, ValueError):
                raise ValueError(f"bad time {text!r}: too far ahead") from None
            return moment_us
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected an ISO-8601 time (e.g. 2026-12-01T03:00Z), "
            "a delay such as 10m or 'in 1h30m', or now") from None
    return to_us(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


# --- recurring tasks -------------------------------------------------------------------

#: A schedule's name: a task id's characters, short enough to leave room for the slot.
MAX_SCHEDULE_NAME = 100


def check_cron(expression: str, timezone: str, now_us: int) -> None:
    """Raises ValueError unless ``expression`` is a cron expression (5 fields, or @daily and
    the like) that names a time to come, and ``timezone`` a zone name."""
    from croniter import croniter

    # croniter also takes 6 and 7 fields (seconds, years): a slot is a minute here
    five = len(expression.split()) == 5 or expression.strip().startswith("@")
    if not five or not croniter.is_valid(expression):
        raise ValueError(f"bad cron expression {expression!r}: expected 5 fields such as "
                         "'0 3 * * *' (minute hour day month weekday) or @daily")
    _zone(timezone)
    if next_slot(expression, timezone, now_us) is None:
        raise ValueError(f"bad cron expression {expression!r}: it names no date to come "
                         "(such as 31 February)")


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: expected e.g. UTC or Europe/Paris") from None


def last_slot(expression: str, timezone: str, now_us: int) -> int | None:
    """The latest time at or before ``now_us`` that the cron expression names, in µs; None
    if it names none (31 February: refused by ``check_cron``, but a schedule in the log may
    have been added before it was)."""
    from croniter import CroniterBadDateError, croniter

    moment = from_us(now_us + 1).astimezone(_zone(timezone))  # +1: a slot at now counts
    try:
        return to_us(croniter(expression, moment).get_prev(datetime))
    except CroniterBadDateError:
        return None


def next_slot(expression: str, timezone: str, now_us: int) -> int | None:
    """The first time after ``now_us`` that the cron expression names, in µs; None if it
    names none (see ``last_slot``)."""
    from croniter import CroniterBadDateError, croniter

    moment = from_us(now_us).astimezone(_zone(timezone))
    try:
        return to_us(croniter(expression, moment).get_next(datetime))
    except CroniterBadDateError:
        return None


def slot_task_id(name: str, slot_us: int) -> str:
    """The id of a schedule's task for one slot: the same for every scheduler, so a slot is
    submitted once however many fire it (``nightly-20261201T0300Z``)."""
    return f"{name}-{from_us(slot_us).strftime('%Y%m%dT%H%MZ')}"


N = TypeVar("N", float, Decimal)

#: An estimate needs this many completed attempts of the kind: fewer would be noise.
MIN_SAMPLES = 3


@dataclass(frozen=True)
class Estimate:
    """What similar tasks (same type and model) cost and took: p50/p90 of the successful
    attempts of the latest completed ones."""

    samples: int
    cost_p50: Decimal
    cost_p90: Decimal
    seconds_p50: float
    seconds_p90: float

    def __str__(self) -> str:
        return (f"cost p50 {dollars(self.cost_p50)}, p90 {dollars(self.cost_p90)}; time p50 "
                f"{_span(self.seconds_p50)}, p90 {_span(self.seconds_p90)} "
                f"({self.samples} completed)")


def percentile(values: Sequence[N], share: float) -> N:
    """The nearest-rank percentile of sorted ``values`` (``share`` 0.5 for p50): one of the
    values, never an interpolation between two."""
    return values[max(math.ceil(share * len(values)) - 1, 0)]


def estimate(samples: list[tuple[Decimal, float]]) -> Estimate | None:
    """An estimate from (cost, seconds) of completed attempts; None under ``MIN_SAMPLES``."""
    if len(samples) < MIN_SAMPLES:
        return None
    costs = sorted(cost for cost, _ in samples)
    times = sorted(seconds for _, seconds in samples)
    return Estimate(len(samples), percentile(costs, 0.5), percentile(costs, 0.9),
                    percentile(times, 0.5), percentile(times, 0.9))


def _span(seconds: float) -> str:
    """``42 s``, ``3 min 12 s``, ``2 h 5 min``: a duration for people."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
