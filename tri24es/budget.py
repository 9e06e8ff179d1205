"""Budget arithmetic: limits, windows, amounts, and what a reading of the spend calls for.

Everything here is pure or reads the projection tables: no appends, no signals. The
watchdog (``runtime/budget_watchdog.py``) and the ``spend`` / ``budget-watchdog`` commands
build on it, so the numbers people see are the numbers the watchdog acts on.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tri24es.config import Settings
from tri24es.errors import ConfigError
from tri24es.pricing import to_money
from tri24es.projections import SPEND, KillSwitchView, read_killswitch
from tri24es.projections.spend import from_units, to_units
from tri24es.projections.sql import Db
from tri24es.timeutil import from_us, to_us

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
    """Two decimals, as the original watchdog printed amounts."""
    return f"{amount.quantize(CENT):.2f}"


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
    def from_settings(cls, s: Settings, environ: Mapping[str, str] = os.environ) -> BudgetLimits:
        """The BUDGET_* settings, plus BUDGET_TIMEZONE and BUDGET_MAX_SPEND_RECORD."""
        max_record = environ.get("BUDGET_MAX_SPEND_RECORD")
        try:
            max_usd = DEFAULT_MAX_RECORD_USD if not max_record else Decimal(max_record)
        except InvalidOperation:
            max_usd = Decimal(-1)
        if not max_usd.is_finite() or max_usd <= 0:
            raise ConfigError(f"BUDGET_MAX_SPEND_RECORD={max_record!r}: not a positive amount")
        return cls(
            daily_limit=s.budget_daily_limit, rate_limit=s.budget_rate_limit,
            rate_warning=s.budget_rate_warning, daily_pause_pct=s.budget_daily_pause_pct,
            window_seconds=s.budget_window_size, check_interval=s.budget_check_interval,
            timezone=load_zone(environ.get("BUDGET_TIMEZONE")), max_record_usd=max_usd,
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


def read_budget(conn: Db, limits: BudgetLimits, now_us: int,
                window_seconds: int | None = None) -> Reading:
    """Window total and rate (the last ``window_seconds``, default the limits' window),
    today's total, and the kill switch: a handful of indexed lookups at any log size."""
    window = window_seconds or limits.window_seconds
    window_total = SPEND.window_total(conn, now_us - window * 1_000_000, now_us + 1)
    start, end = day_bounds(now_us, limits.zone())
    daily = SPEND.period_total(conn, start, end)
    return Reading(now_us, window, window_total, rate_per_min(window_total, window), daily,
                   read_killswitch(conn))


GROUP_COLUMNS = {"model": "model", "worker": "worker", "task": "task"}


def spend_by(conn: Db, by: str, since_us: int, until_us: int) -> dict[str, str]:
    """Spend in [since, until) grouped by model, worker or task (largest first)."""
    column = GROUP_COLUMNS[by]
    found = conn.execute(
        f"SELECT coalesce({column}, '-'), sum(amount_units) AS units FROM spend"
        " WHERE occurred_at >= ? AND occurred_at < ? GROUP BY 1 ORDER BY units DESC, 1",
        (since_us, until_us),
    )
    return {name: str(from_units(units)) for name, units in found}


def task_spend(conn: Db, task_id: str) -> Decimal:
    (units,) = conn.execute(
        "SELECT coalesce(sum(amount_units), 0) FROM spend WHERE task = ?", (task_id,)
    ).fetchone()
    return from_units(units)


def percent(part: Decimal, whole: Decimal) -> str:
    return f"{(part * 100 / whole).quantize(Decimal('0.1'))}%"


def reading_dict(reading: Reading, limits: BudgetLimits) -> dict[str, Any]:
    """The ``--json`` shape of ``tri24es spend`` (amounts as strings)."""
    ks = reading.killswitch
    return {
        "window_seconds": reading.window_seconds,
        "window_total_usd": str(reading.window_total),
        "rate_per_min_usd": str(to_units_str(reading.rate)),
        "daily_total_usd": str(reading.daily),
        "daily_limit_usd": str(limits.daily_limit),
        "rate_limit_usd": str(limits.rate_limit),
        "rate_warning_usd": str(limits.rate_warning),
        "daily_used_pct": percent(reading.daily, limits.daily_limit),
        "rate_used_pct": percent(reading.rate, limits.rate_limit),
        "level": str(reading.level(limits)),
        "kill_switch_active": ks.active,
        "kill_switch_reason": ks.reason,
    }


def to_units_str(amount: Decimal) -> Decimal:
    """``amount`` rounded to the 1e-10 dollars the spend table keeps (a rate can recur)."""
    return from_units(to_units(amount))
