"""Budget arithmetic: limits, windows, amounts, and what a reading of the spend calls for.

Everything here is pure: no SQL (``projections/reads.py`` reads the spend into a
:class:`Reading`), no appends, no signals. The watchdog, ``spend``, ``top`` and ``metrics``
all compute the rate with :func:`rate_per_min`, so the numbers people see are the numbers
the watchdog acts on.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tri24es.errors import ConfigError
from tri24es.pricing import to_money
from tri24es.projections.killswitch import KillSwitchView
from tri24es.timeutil import from_us, to_us

if TYPE_CHECKING:
    from tri24es.config import Settings

#: The largest amount one spend record may carry unless BUDGET_MAX_SPEND_RECORD says otherwise.
DEFAULT_MAX_RECORD_USD = Decimal("1000")
CENT = Decimal("0.01")

_WINDOW = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86_400, 3_600, 60, 1)


class BadAmount(ValueError):
    """A spend amount that must not be recorded."""


def parse_window(text: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` -> seconds (units in d, h, m, s order).

    Raises ValueError for anything else, including a zero window.
    """
    cleaned = text.strip().lower()
    match = _WINDOW.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(f"bad window {text!r}: expected e.g. 90s, 5m, 1h, 1h30m or 1d")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
                  if n is not None)
    if seconds <= 0:
        raise ValueError(f"bad window {text!r}: it must be longer than 0 seconds")
    return seconds


def parse_amount(value: str | Decimal | int, max_usd: Decimal = DEFAULT_MAX_RECORD_USD) -> Decimal:
    """A spend amount in dollars, exact (finer than 1e-10 dollars: rounded up). Raises
    BadAmount when it is negative, NaN, infinite, not a number or more than ``max_usd``."""
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

    @classmethod
    def from_settings(cls, s: Settings) -> BudgetLimits:
        """The BUDGET_* settings."""
        return cls(
            daily_limit=s.budget_daily_limit, rate_limit=s.budget_rate_limit,
            rate_warning=s.budget_rate_warning, daily_pause_pct=s.budget_daily_pause_pct,
            window_seconds=s.budget_window_size, check_interval=s.budget_check_interval,
            timezone=load_zone(s.budget_timezone), max_record_usd=s.budget_max_spend_record,
        )

    @property
    def pause_at(self) -> Decimal:
        return self.daily_limit * self.daily_pause_pct

    def zone(self) -> tzinfo:
        return self.timezone if self.timezone is not None else machine_zone()


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

    def kill_reason(self, limits: BudgetLimits) -> str | None:
        """Why the kill switch must go on (a limit is reached: ``>=``), or None."""
        if self.rate >= limits.rate_limit:
            return (f"Rate limit exceeded: ${usd(self.rate)}/min >= "
                    f"${usd(limits.rate_limit)}/min")
        if self.daily >= limits.daily_limit:
            return f"Daily limit exceeded: ${usd(self.daily)} >= ${usd(limits.daily_limit)}"
        return None

    def should_pause(self, limits: BudgetLimits) -> bool:
        return self.daily >= limits.pause_at

    def should_warn(self, limits: BudgetLimits) -> bool:
        return self.rate >= limits.rate_warning

    def level(self, limits: BudgetLimits) -> Level:
        if self.killswitch.active or self.kill_reason(limits) is not None:
            return Level.EXCEEDED
        if self.should_pause(limits):
            return Level.PAUSE
        return Level.WARNING if self.should_warn(limits) else Level.OK


def percent(part: Decimal, whole: Decimal) -> str:
    return f"{(part * 100 / whole).quantize(Decimal('0.1'))}%"
