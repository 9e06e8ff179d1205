"""Pure budget helpers: windows, amounts, day bounds, kill reasons, spend.jsonl lines."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tri24es.budget import (
    BadAmount,
    BudgetLimits,
    Level,
    Reading,
    TodayBudget,
    allowance_at,
    check_reset,
    day_bounds,
    dollars,
    parse_amount,
    parse_window,
    rate_clears_at,
    rate_per_min,
    usd,
    window_start,
    window_text,
)
from tri24es.config import load_settings
from tri24es.errors import ConfigError
from tri24es.inputs.spendfile import BadLine, at_arrival, line_event_id, parse_line
from tri24es.projections.tables.killswitch import KillSwitchView
from tri24es.timeutil import to_us


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1d", 86_400),
    ("1d2h3m4s", 93_784), (" 10M ", 600), ("2h0m", 7200), ("36500d", 36_500 * 86_400),
])
def test_parse_window(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected e.g. 90s"), ("5", "expected e.g. 90s"), ("5x", "expected e.g. 90s"),
    ("m5", "expected e.g. 90s"), ("30m1h", "expected e.g. 90s"), ("-5m", "expected e.g. 90s"),
    ("1.5h", "expected e.g. 90s"), ("0s", "longer than 0"), ("0h0m", "longer than 0"),
    # more than 100 years: more microseconds than SQLite holds once added to now
    ("36501d", "at most 36500d"), ("99999999999d", "at most 36500d"),
    ("876001h", "at most 36500d"), ("9" * 5000 + "s", "at most 36500d"),
])
def test_parse_window_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


@pytest.mark.parametrize(("given", "expected"), [
    ("0.42", Decimal("0.42")), ("0", Decimal(0)), ("1000", Decimal(1000)),
    ("0.0000000001", Decimal("1e-10")), (Decimal("9.0"), Decimal("9.0")), (3, Decimal(3)),
    ("0.12345678901", Decimal("0.1234567891")),  # finer than the log keeps: rounded up
])
def test_parse_amount(given: str | Decimal | int, expected: Decimal) -> None:
    assert parse_amount(given) == expected


@pytest.mark.parametrize(("given", "message"), [
    ("-0.01", "is negative"), ("NaN", "not a finite number"), ("inf", "not a finite number"),
    ("abc", "not a number"), ("", "not a number"), ("1000.01", r"more than the \$1000"),
])
def test_parse_amount_rejects(given: str, message: str) -> None:
    with pytest.raises(BadAmount, match=message):
        parse_amount(given)


def test_parse_amount_custom_maximum() -> None:
    assert parse_amount("5", Decimal(5)) == 5
    with pytest.raises(BadAmount, match=r"\$5 allowed"):
        parse_amount("5.01", Decimal(5))


def test_day_bounds_in_a_zone_and_across_a_clock_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    noon = to_us(datetime(2026, 3, 29, 12, tzinfo=paris))  # clocks went forward at 02:00
    start, end = day_bounds(noon, paris)
    assert start == to_us(datetime(2026, 3, 28, 23, tzinfo=UTC))
    assert end - start == 23 * 3600 * 1_000_000
    late = to_us(datetime(2026, 11, 24, 23, 30, tzinfo=UTC))  # already the 25th in Paris
    assert day_bounds(late, paris)[0] == to_us(datetime(2026, 11, 24, 23, tzinfo=UTC))


def reading(rate: str, daily: str, active: bool = False) -> Reading:
    return Reading(0, 300, Decimal(rate) * 5, Decimal(rate), Decimal(daily),
                   KillSwitchView(active=active))


LIMITS = BudgetLimits(daily_limit=Decimal("75.00"), rate_limit=Decimal("1.00"),
                      rate_warning=Decimal("0.50"), daily_pause_pct=Decimal("0.90"))


@pytest.mark.parametrize(("rate", "daily", "reason", "level"), [
    ("0.4999999999", "0", None, Level.OK),
    ("0.50", "0", None, Level.WARNING),
    ("0.9999999999", "0", None, Level.WARNING),
    ("1.00", "0", "Rate limit exceeded: $1.00/min >= $1.00/min", Level.EXCEEDED),
    ("0", "67.4999999999", None, Level.OK),
    ("0", "67.50", None, Level.PAUSE),
    ("0", "74.9999999999", None, Level.PAUSE),
    ("0", "75.00", "Daily limit exceeded: $75.00 >= $75.00", Level.EXCEEDED),
    ("2.345", "80", "Rate limit exceeded: $2.34/min >= $1.00/min", Level.EXCEEDED),
])
def test_thresholds_at_their_boundaries(rate: str, daily: str, reason: str | None,
                                        level: Level) -> None:
    r = reading(rate, daily)
    assert r.kill_reason(LIMITS) == reason
    assert r.level(LIMITS) == level


def test_an_active_switch_is_exceeded_whatever_the_spend() -> None:
    assert reading("0", "0", active=True).level(LIMITS) == Level.EXCEEDED


def test_an_allowance_raises_todays_limit_and_pause_threshold() -> None:
    r = Reading(0, 300, Decimal(0), Decimal(0), Decimal("80"), KillSwitchView(),
                allowance=Decimal("10"))
    assert r.daily_limit(LIMITS) == Decimal("85")
    assert r.kill_reason(LIMITS) is None
    assert r.level(LIMITS) == Level.PAUSE  # 80 >= 90% of 85
    over = Reading(0, 300, Decimal(0), Decimal(0), Decimal("85"), KillSwitchView(),
                   allowance=Decimal("10"))
    assert over.kill_reason(LIMITS) == ("Daily limit exceeded: $85.00 >= $85.00 "
                                        "($10.00 allowed today)")


def test_the_rate_window_starts_at_a_forced_reset_and_an_allowance_holds_for_its_day() -> None:
    assert window_start(400 * S, 300, KillSwitchView()) == 100 * S
    assert window_start(400 * S, 300, KillSwitchView(rate_since=250 * S)) == 250 * S + 1
    assert window_start(400 * S, 300, KillSwitchView(rate_since=50 * S)) == 100 * S
    switch = KillSwitchView(allowance="7.5", allowance_start=100 * S, allowance_end=200 * S)
    assert [allowance_at(switch, t * S) for t in (99, 100, 199, 200)] == [
        0, Decimal("7.5"), Decimal("7.5"), 0]
    assert allowance_at(KillSwitchView(), 150 * S) == 0


S = 1_000_000


def test_when_the_rate_clears() -> None:
    # $1/min over 300 s: the window must hold less than $5.
    spends = [(10 * S, Decimal("2.75")), (20 * S, Decimal("2.75")), (30 * S, Decimal("2.75"))]
    # $8.25 now; without the first $5.50 left, $2.75 < $5: after the second one leaves.
    assert rate_clears_at(spends, 300, Decimal(1)) == 320 * S + 1
    assert rate_clears_at(spends, 300, Decimal("0.5")) == 330 * S + 1  # under $2.50: all gone
    assert rate_clears_at(spends, 300, Decimal(2)) is None  # $8.25 < $10: clear now
    assert rate_clears_at(spends[:1], 300, Decimal(1)) is None  # $2.75 < $5: clear now
    same_time = [(10 * S, Decimal(3)), (10 * S, Decimal(3))]
    assert rate_clears_at(same_time, 300, Decimal(1)) == 310 * S + 1
    assert rate_clears_at([], 300, Decimal(1)) is None


def test_a_reset_is_refused_while_a_breach_holds_unless_told_how_to_go_on() -> None:
    utc = BudgetLimits(daily_limit=Decimal("5"), rate_limit=Decimal("1"), timezone=UTC)
    now = to_us(datetime(2026, 11, 30, 19, 0, 30, tzinfo=UTC))
    window = [(now - 20 * S, Decimal("2.75")), (now - 10 * S, Decimal("2.75")),
              (now, Decimal("2.75"))]
    r = Reading(now, 300, Decimal("8.25"), Decimal("1.65"), Decimal("8.25"), KillSwitchView())
    plain = check_reset(r, utc, window)
    assert (plain.ok, plain.rate_holds, plain.daily_holds) == (False, True, True)
    assert plain.rate_clears_at == now - 10 * S + 300 * S + 1
    assert plain.explain() == [
        "the rate still holds: $1.65/min >= $1.00/min over the last 300 s; it clears at "
        "19:05:21 UTC (in 4 min 51 s) if nothing more is spent",
        "today's total: $8.25 of $5.00; the day ends at 00:00:00 UTC",
        "next: wait until the rate window clears and reset again, or reset with --force to "
        "start a fresh rate window now (spend before the reset no longer counts toward the "
        "rate)",
        "next: restart the watchdog with BUDGET_DAILY_LIMIT above $8.25, or reset with "
        "--allow-today USD (more than $3.25) to allow that much over the limit for the rest "
        "of today",
    ]
    forced = check_reset(r, utc, window, fresh_window=True)
    assert (forced.ok, forced.rate_holds, forced.daily_holds) == (False, False, True)
    short = check_reset(r, utc, window, fresh_window=True, allow_today=Decimal("3.25"))
    assert not short.ok  # $8.25 >= $5 + $3.25
    assert "today's total: $8.25 of $8.25 ($3.25 allowed today)" in short.explain()[0]
    enough = check_reset(r, utc, window, fresh_window=True, allow_today=Decimal("3.26"))
    assert enough.ok
    raised = BudgetLimits(daily_limit=Decimal("20"), rate_limit=Decimal("1"), timezone=UTC)
    assert check_reset(r, raised, window, fresh_window=True).ok


def test_rate_and_money_format() -> None:
    assert rate_per_min(Decimal(5), 300) == Decimal(1)
    assert rate_per_min(Decimal("1.5"), 90) == Decimal(1)
    assert usd(Decimal("0.005")) == "0.00"  # half-even, like printf in the original
    assert usd(Decimal(75)) == "75.00"


def test_spend_line_is_parsed_exactly_with_white_space() -> None:
    line = (b'{"timestamp": "2026-11-24T10:00:00Z", "timestamp_epoch": 1795000000, '
            b'"amount": 0.1000000001, "model": "m", "task_id": "t"}')
    event = parse_line(line)
    assert event.amount == Decimal("0.1000000001")
    assert event.occurred_at == datetime.fromtimestamp(1795000000, UTC)
    assert (event.model, event.task, event.source) == ("m", "t", "spend.jsonl")
    assert parse_line(b'{"amount":9.0,"timestamp":"2026-11-24T10:00:00+00:00"}').amount == 9


def test_a_spend_line_over_the_cap_or_as_a_string_is_recorded_exactly() -> None:
    over = parse_line(b'{"amount": 1e9, "timestamp_epoch": 1795000000}')
    assert over.amount == Decimal("1e9")
    assert over.flagged is not None
    assert "over the per-record cap of $1000" in over.flagged
    assert parse_line(b'{"amount": "0.50", "timestamp_epoch": 1795000000}').amount == Decimal(
        "0.50")


@pytest.mark.parametrize("stamp", [0, 4_070_908_800, 1795000000 - 86_400])  # 1970, 2099, a day
def test_a_spend_line_stamped_outside_the_window_counts_at_arrival_flagged(stamp: int) -> None:
    now = datetime.fromtimestamp(1795000000, UTC)
    moved = at_arrival(parse_line(b'{"amount": 1, "timestamp_epoch": %d}' % stamp), now, 300)
    assert moved.occurred_at == now
    assert moved.flagged is not None
    assert "counted at arrival" in moved.flagged
    kept = parse_line(b'{"amount": 1, "timestamp_epoch": 1794999990}')
    assert at_arrival(kept, now, 300) == kept  # inside the window: as stamped


@pytest.mark.parametrize(("line", "message"), [
    (b"not json", "not JSON"), (b"[1]", "not a JSON object"), (b'{"timestamp_epoch": 1}',
                                                               "no amount"),
    (b'{"amount": "lots", "timestamp_epoch": 1}', "not a number"),
    (b'{"amount": true, "timestamp_epoch": 1}', "not a number"),
    (b'{"amount": -1, "timestamp_epoch": 1}', "negative"),
    (b'{"amount": NaN, "timestamp_epoch": 1}', "not a number"),
    (b'{"amount": 1e11, "timestamp_epoch": 1}', "more than"),  # more than a record holds
    (b'{"amount": 1}', "no timestamp"), (b'{"amount": 1, "timestamp": "yesterday"}', "ISO"),
])
def test_bad_spend_lines(line: bytes, message: str) -> None:
    with pytest.raises(BadLine, match=message):
        parse_line(line)


def test_line_ids_are_deterministic_and_count_repeats() -> None:
    line = b'{"amount": 1, "timestamp_epoch": 1}'
    assert line_event_id(line, 0) == line_event_id(line, 0)
    assert line_event_id(line, 0) != line_event_id(line, 1)
    assert line_event_id(line, 0) != line_event_id(line + b" ", 0)


@pytest.mark.parametrize(("amount", "shown"), [
    ("0", "$0.00"), ("0.2", "$0.20"), ("0.2000", "$0.20"), ("0.294211", "$0.29"),
    ("1E+2", "$100.00"), ("8E+1", "$80.00"), ("1234.5", "$1,234.50"),
    ("0.0042", "$0.0042"), ("0.004199", "$0.0042"), ("0.000123456", "$0.00012"),
    ("0.0099999", "$0.01"), ("-3.5", "-$3.50"),
])
def test_dollars_for_people(amount: str, shown: str) -> None:
    assert dollars(Decimal(amount)) == shown


@pytest.mark.parametrize("text", ["30d", "1h30m", "5m", "90s", "1d2h3m4s"])
def test_window_text_reads_back_as_the_window(text: str) -> None:
    seconds = parse_window(text)
    assert window_text(seconds) == (text if text != "90s" else "1m30s")
    assert parse_window(window_text(seconds)) == seconds


def test_todays_budget_covers_a_reservation_it_has_left_and_always_nothing() -> None:
    today = TodayBudget(limit=Decimal(2), spent=Decimal("1.20"), reserved=Decimal("0.40"))
    assert today.left == Decimal("0.40")
    assert today.covers(Decimal("0.40"))
    assert not today.covers(Decimal("0.41"))
    assert today.why_not(Decimal(1)) == (
        "today's budget left $0.40 cannot cover its reservation $1.00")
    assert today.why_not(Decimal("0.5"), 3) == (
        "today's budget left $0.40 cannot cover their reservations ($0.50 or more)")
    overdrawn = TodayBudget(limit=Decimal(2), spent=Decimal(3), reserved=Decimal(0))
    assert overdrawn.covers(Decimal(0))
    assert not overdrawn.covers(Decimal("0.01"))
    assert overdrawn.why_not(Decimal(1)).startswith("today's budget left $0.00 cannot")


def test_the_default_reservation_is_a_setting_like_the_other_budget_ones(tmp_path: Path) -> None:
    (tmp_path / "tri24es.toml").write_text("budget_default_reservation = 0.5\n")
    settings = load_settings({}, root=tmp_path)
    assert BudgetLimits.from_settings(settings).default_reservation == Decimal("0.5")
    assert str(settings.sources["budget_default_reservation"]) == "tri24es.toml"
    assert load_settings({"BUDGET_DEFAULT_RESERVATION": "0"},
                         root=tmp_path).budget_default_reservation == 0
    assert BudgetLimits.from_settings(load_settings({}, root=tmp_path / "none")
                                      ).default_reservation == 0
    with pytest.raises(ConfigError, match="BUDGET_DEFAULT_RESERVATION='lots'"):
        load_settings({"BUDGET_DEFAULT_RESERVATION": "lots"}, root=tmp_path)
