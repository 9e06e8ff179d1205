"""Budget arithmetic: limits, windows, amounts, and what a reading of the spend calls for.

Everything here is pure: no SQL (``projections/reads.py`` reads the spend into a
:class:`Reading`), no appends, no signals. The watchdog, ``spend``, ``top`` and ``metrics``
all compute the rate with :func:`rate_per_min`, so the numbers people see are the numbers
the watchdog acts on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from tri24es.errors import ConfigError
from tri24es.pricing import to_money
from tri24es.projections.tables.killswitch import KillSwitchView
from tri24es.timeutil import from_us, iso_time, to_us

if TYPE_CHECKING:
    from tri24es.config import Settings

#: The largest amount one spend record may carry unless BUDGET_MAX_SPEND_RECORD says otherwise.
DEFAULT_MAX_RECORD_USD = Decimal("1000")
CENT = Decimal("0.01")

_WINDOW = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86_400, 3_600, 60, 1)


#: The longest window or delay: 100 years. A longer one is a typo, and more than a time in
#: microseconds holds (a traceback where SQLite got it: ``spend --window 99999999999d``).
LONGEST_WINDOW_SECONDS = 36_500 * 86_400


class WindowTooLong(ValueError):
    """A window or delay longer than ``LONGEST_WINDOW_SECONDS``."""


class BadAmount(ValueError):
    """A spend amount that must not be recorded."""


def parse_window(text: str, longest: int | None = LONGEST_WINDOW_SECONDS) -> int:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` -> seconds (units in d, h, m, s order).

    Raises ValueError for anything else, including a zero window, and WindowTooLong for
    one over ``longest`` (``None``: no bound, for a caller that bounds it itself).
    """
    cleaned = text.strip().lower()
    match = _WINDOW.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(f"bad window {text!r}: expected e.g. 90s, 5m, 1h, 1h30m or 1d")
    if longest is not None and any(n is not None and len(n) > 12 for n in match.groups()):
        raise WindowTooLong(f"bad window {text!r}: it must be at most {window_text(longest)}")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
                  if n is not None)
    if seconds <= 0:
        raise ValueError(f"bad window {text!r}: it must be longer than 0 seconds")
    if longest is not None and seconds > longest:
        raise WindowTooLong(f"bad window {text!r}: it must be at most {window_text(longest)}")
    return seconds


#: The most one record can hold (Money: 20 digits, 10 after the point).
LARGEST_RECORD_USD = Decimal("9999999999.9999999999")


def over_cap(amount: Decimal, max_usd: Decimal) -> tuple[Decimal, str | None]:
    """A reported amount as it is recorded, and its flag: over the per-record cap it is
    recorded all the same (dropping it would let the spend that should stop the fleet
    through), flagged for a person to look at; beyond what a record holds, the most it holds."""
    if amount <= max_usd:
        return amount, None
    return min(amount, LARGEST_RECORD_USD), (
        f"${amount} in one report is over the per-record cap of ${max_usd}"
        " (BUDGET_MAX_SPEND_RECORD): recorded, check the agent")


def parse_amount(value: str | Decimal | int, max_usd: Decimal = DEFAULT_MAX_RECORD_USD) -> Decimal:
    """A spend amount in dollars, exact (finer than 1e-10 dollars: rounded up). Raises
    BadAmount when it is negative, NaN, infinite, not a number or more than ``max_usd``
    (a person typing it: refused, the sources read by machine flag it with ``over_cap``)."""
    if isinstance(value, bool):
        raise BadAmount(f"amount {value!r} is not a number")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise BadAmount(f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise BadAmount(f"amount {value!r} is not a finite number")
    if amount < 0:
        raise BadAmount(f"amount {value!r} is negative")
    if amount > max_usd:
        raise BadAmount(f"amount {value!r} is more than the ${max_usd} allowed per record "
                        "(BUDGET_MAX_SPEND_RECORD)")
    if amount.as_tuple().exponent < -10:  # type: ignore[operator]
        return to_money(amount)  # finer than the log keeps: rounded up, never under-counted
    return amount


def usd(amount: Decimal) -> str:
    """Two decimals, as the original watchdog printed amounts (its status lines keep them)."""
    return f"{amount.quantize(CENT):.2f}"


def dollars(amount: Decimal) -> str:
    """Money for people, one format everywhere: ``$0.20``, ``$1,234.50``; an amount under a
    cent keeps two significant digits (``$0.0042``), so that it does not read as nothing."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if 0 < amount < CENT:
        small = amount.quantize(Decimal(1).scaleb(amount.adjusted() - 1))
        if small < CENT:
            return f"{sign}${small:f}"
    return f"{sign}${amount.quantize(CENT):,.2f}"


def window_text(seconds: int) -> str:
    """``2592000`` -> ``"30d"``, ``5400`` -> ``"1h30m"``: a window as ``--window`` takes it."""
    parts = []
    for unit, size in zip("dhms", _UNIT_SECONDS, strict=True):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def machine_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def load_zone(name: str | None) -> tzinfo:
    if not name:
        return machine_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"BUDGET_TIMEZONE={name!r}: not a known time zone") from None


@dataclass(frozen=True)
class BudgetLimits:
    daily_limit: Decimal = Decimal("75.00")
    rate_limit: Decimal = Decimal("1.00")  # USD per minute
    rate_warning: Decimal = Decimal("0.50")
    daily_pause_pct: Decimal = Decimal("0.90")
    window_seconds: int = 300
    check_interval: float = 30.0
    timezone: tzinfo | None = None  # None: the machine's local zone
    max_record_usd: Decimal = DEFAULT_MAX_RECORD_USD
    default_reservation: Decimal = Decimal(0)  # a claim's, for a task without a budget

    @classmethod
    def from_settings(cls, s: Settings) -> BudgetLimits:
        """The BUDGET_* settings."""
        return cls(
            daily_limit=s.budget_daily_limit, rate_limit=s.budget_rate_limit,
            rate_warning=s.budget_rate_warning, daily_pause_pct=s.budget_daily_pause_pct,
            window_seconds=s.budget_window_size, check_interval=s.budget_check_interval,
            timezone=load_zone(s.budget_timezone), max_record_usd=s.budget_max_spend_record,
            default_reservation=s.budget_default_reservation,
        )

    def zone(self) -> tzinfo:
        return self.timezone if self.timezone is not None else machine_zone()


def enforced_limits(switch: KillSwitchView, own: BudgetLimits) -> tuple[BudgetLimits, str | None]:
    """The limits the last budget watchdog started with (``own`` for the settings it does
    not record) and who that is; ``own`` and None if no watchdog recorded any."""
    if switch.watchdog is None:
        return own, None
    started = orjson.loads(switch.watchdog)
    try:
        zone = load_zone(started["timezone"]) if started["timezone"] else own.timezone
    except ConfigError:  # a zone this machine does not know: its own
        zone = own.timezone
    limits = replace(own, rate_limit=Decimal(started["rate_limit"]),
                     daily_limit=Decimal(started["daily_limit"]),
                     window_seconds=started["window_seconds"], timezone=zone)
    return limits, (f"the budget watchdog pid {started['pid']} on {started['host']}, started "
                    f"{iso_time(started['at'])[:19]}Z")


def day_bounds(now_us: int, zone: tzinfo) -> tuple[int, int]:
    """[start, end) of the calendar day holding ``now_us`` in ``zone``, in microseconds
    (23 or 25 hours long on the days clocks change)."""
    local = from_us(now_us).astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    following = midnight + timedelta(days=1)
    next_midnight = datetime(following.year, following.month, following.day, tzinfo=zone)
    return to_us(midnight), to_us(next_midnight)


def rate_per_min(window_total: Decimal, window_seconds: int) -> Decimal:
    """Dollars per minute: the window's total / (window / 60)."""
    return window_total * 60 / window_seconds


def window_start(now_us: int, window_seconds: int, switch: KillSwitchView) -> int:
    """Where the rate window ending at ``now_us`` starts: ``window_seconds`` back, or just
    after the last forced reset if that is later (spend up to it no longer counts toward the
    rate). The rate is still the window's total over the whole window length."""
    start = now_us - window_seconds * 1_000_000
    return start if switch.rate_since is None else max(start, switch.rate_since + 1)


def allowance_at(switch: KillSwitchView, now_us: int) -> Decimal:
    """Dollars allowed over the daily limit at ``now_us`` (``--reset --allow-today``)."""
    if (switch.allowance is None or switch.allowance_start is None
            or switch.allowance_end is None
            or not switch.allowance_start <= now_us < switch.allowance_end):
        return Decimal(0)
    return Decimal(switch.allowance)


@dataclass(frozen=True)
class TodayBudget:
    """Today's limit against what is spent today and what running attempts still hold of
    it (their reservations less what they spent since their claim): what claims reserve
    from."""

    limit: Decimal  # today's limit: the daily limit plus today's allowance
    spent: Decimal
    reserved: Decimal

    @property
    def left(self) -> Decimal:
        return self.limit - self.spent - self.reserved

    def covers(self, reservation: Decimal) -> bool:
        """Whether a claim reserving ``reservation`` may go ahead (nothing always may)."""
        return reservation <= 0 or reservation <= self.left

    def why_not(self, reservation: Decimal, count: int = 1) -> str:
        """Why tasks reserving ``reservation`` (the least of them, for ``count`` > 1) wait."""
        left = dollars(max(self.left, Decimal(0)))
        if count == 1:
            return f"today's budget left {left} cannot cover its reservation {dollars(reservation)}"
        return (f"today's budget left {left} cannot cover their reservations "
                f"({dollars(reservation)} or more)")


def rate_clears_at(spends: Sequence[tuple[int, Decimal]], window_seconds: int,
                   rate_limit: Decimal) -> int | None:
    """When the rate falls below ``rate_limit`` if nothing more is spent: ``spends`` are the
    window's (occurred_at, amount), oldest first; each leaves the window ``window_seconds``
    after it occurred. None if the rate is below the limit already."""
    ceiling = rate_limit * window_seconds / 60  # the window total that makes the limit
    total = sum((amount for _, amount in spends), Decimal(0))
    for occurred_at, amount in spends:
        if total < ceiling:
            break
        total -= amount
        if total < ceiling:
            return occurred_at + window_seconds * 1_000_000 + 1
    return None


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"  # rate at or over the warning
    PAUSE = "pause"  # today's spend at or over the pause share of the daily limit
    EXCEEDED = "exceeded"  # a limit is reached: the kill switch


@dataclass(frozen=True)
class Reading:
    """The spend as of ``now_us`` and the kill switch, read in one snapshot."""

    now_us: int
    window_seconds: int
    window_total: Decimal
    rate: Decimal
    daily: Decimal
    killswitch: KillSwitchView
    allowance: Decimal = Decimal(0)  # allowed over the daily limit today (resets)
    reset_at: int | None = None  # a forced reset the window starts after, while it is recent

    def daily_limit(self, limits: BudgetLimits) -> Decimal:
        """Today's limit: the configured one plus today's allowance."""
        return limits.daily_limit + self.allowance

    def kill_reason(self, limits: BudgetLimits) -> str | None:
        """Why the kill switch must go on (a limit is reached: ``>=``), or None."""
        if self.rate >= limits.rate_limit:
            return (f"Rate limit exceeded: ${usd(self.rate)}/min >= "
                    f"${usd(limits.rate_limit)}/min")
        if self.daily >= self.daily_limit(limits):
            allowed = f" (${usd(self.allowance)} allowed today)" if self.allowance else ""
            return (f"Daily limit exceeded: ${usd(self.daily)} >= "
                    f"${usd(self.daily_limit(limits))}{allowed}")
        return None

    def should_pause(self, limits: BudgetLimits) -> bool:
        return self.daily >= self.daily_limit(limits) * limits.daily_pause_pct

    def should_warn(self, limits: BudgetLimits) -> bool:
        return self.rate >= limits.rate_warning

    def level(self, limits: BudgetLimits) -> Level:
        if self.killswitch.active or self.kill_reason(limits) is not None:
            return Level.EXCEEDED
        if self.should_pause(limits):
            return Level.PAUSE
        return Level.WARNING if self.should_warn(limits) else Level.OK


@dataclass(frozen=True)
class ResetCheck:
    """Would a breach still hold after a reset of the kill switch, with these options? A
    reset that leaves one would be undone by the watchdog's next look at the same spend."""

    reading: Reading
    limits: BudgetLimits
    fresh_window: bool  # --force
    allow_today: Decimal  # --allow-today (0 if not given)
    rate_clears_at: int | None  # when the rate falls below the limit if nothing more is spent
    day_ends_at: int  # the next midnight in the budget's zone
    whose: str | None = None  # whose limits these are, if a watchdog recorded them

    @property
    def rate_holds(self) -> bool:
        return not self.fresh_window and self.reading.rate >= self.limits.rate_limit

    @property
    def daily_limit_after(self) -> Decimal:
        return self.reading.daily_limit(self.limits) + self.allow_today

    @property
    def daily_holds(self) -> bool:
        return self.reading.daily >= self.daily_limit_after

    @property
    def ok(self) -> bool:
        return not (self.rate_holds or self.daily_holds)

    def explain(self) -> list[str]:
        """What still holds, when it clears, and what to do next: one sentence a line."""
        r, limits, zone = self.reading, self.limits, self.limits.zone()
        lines = [] if self.whose is None else [
            f"limits: those of {self.whose}: ${usd(limits.rate_limit)}/min over "
            f"{limits.window_seconds} s, ${usd(limits.daily_limit)} a day"]
        if self.rate_holds:
            clears = ("" if self.rate_clears_at is None else
                      f"; it clears at {_clock(self.rate_clears_at, zone)} "
                      f"(in {_span(self.rate_clears_at - r.now_us)}) if nothing more is spent")
            lines.append(f"the rate still holds: ${usd(r.rate)}/min >= "
                         f"${usd(limits.rate_limit)}/min over the last {r.window_seconds} s"
                         f"{clears}")
        lines.append(f"today's total: ${usd(r.daily)} of ${usd(self.daily_limit_after)}"
                     + (f" (${usd(r.allowance + self.allow_today)} allowed today)"
                        if r.allowance + self.allow_today else "")
                     + f"; the day ends at {_clock(self.day_ends_at, zone)}")
        if self.rate_holds:
            lines.append("next: wait until the rate window clears and reset again, or reset "
                         "with --force to start a fresh rate window now (spend before the "
                         "reset no longer counts toward the rate)")
        if self.daily_holds:
            more = r.daily - r.daily_limit(limits)
            lines.append(f"next: restart the watchdog with BUDGET_DAILY_LIMIT above "
                         f"${usd(r.daily)}, or reset with --allow-today USD (more than "
                         f"${usd(more)}) to allow that much over the limit for the rest of "
                         "today")
        return lines


def _clock(at_us: int, zone: tzinfo) -> str:
    """The time of day, to the second after ``at_us`` (when it is true)."""
    second = -(-at_us // 1_000_000) * 1_000_000
    return from_us(second).astimezone(zone).strftime("%H:%M:%S %Z")


def _span(us: int) -> str:
    seconds = max(-(-us // 1_000_000), 0)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def check_reset(reading: Reading, limits: BudgetLimits,
                window: Sequence[tuple[int, Decimal]], *, fresh_window: bool = False,
                allow_today: Decimal = Decimal(0), whose: str | None = None) -> ResetCheck:
    """``window``: the rate window's spend as (occurred_at, amount), oldest first;
    ``whose``: whose limits ``limits`` are (see ``enforced_limits``)."""
    _, day_end = day_bounds(reading.now_us, limits.zone())
    return ResetCheck(reading, limits, fresh_window, allow_today,
                      rate_clears_at(window, reading.window_seconds, limits.rate_limit),
                      day_end, whose)


def killswitch_banner(switch: KillSwitchView) -> str | None:
    """What every live screen (``top``, ``up``) shows first while the kill switch is on:
    why, since when, and how it ends."""
    if not switch.active:
        return None
    since = "" if switch.changed_at is None else f" (since {iso_time(switch.changed_at)[11:19]}Z)"
    return (f"KILL SWITCH: {switch.reason}{since}; workers stay stopped until "
            "`tri24es budget-watchdog --reset`")


def percent(part: Decimal, whole: Decimal) -> str:
    return f"{(part * 100 / whole).quantize(Decimal('0.1'))}%"
