"""Resetting the kill switch against the watchdog's own evaluations, on a real SQLite store
with a clock the test controls: a reset is refused while the breach holds, ``--force`` and
``--allow-today`` say how to go on, and the watchdog never turns the switch on again at spend
from before the reset."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.test_budget_watchdog import LIMITS, SECOND, Setup
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.paths import ProjectPaths
from tri24es.projections.upkeep import verify
from tri24es.runtime.budget_watchdog import reset
from tri24es.services import ResetRefused, Services


class Operator:
    """Resets as ``budget-watchdog --reset`` does, with the watchdog's limits and clock."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.services = Services(setup.store, actor="operator", clock=setup.clock)

    def reset(self, *, force: bool = False, allow: str | None = None,
              limits: BudgetLimits | None = None) -> bool:
        done = reset(self.services, ProjectPaths(self.setup.root),
                     limits or self.setup.watchdog.limits, by="operator", reason="reviewed",
                     fresh_window=force, allow_today=None if allow is None else Decimal(allow))
        return done.was_active


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def trip(setup: Setup, *amounts: str) -> None:
    for n, amount in enumerate(amounts):
        setup.spend(amount, seconds_ago=30 - 10 * n)
    assert setup.watchdog.evaluate().activated


def test_a_rate_breach_refuses_the_reset_until_the_window_clears_or_force(
        setup: Setup) -> None:
    operator = Operator(setup)
    trip(setup, "2.75", "2.75", "2.75")  # $8.25 in 300 s: $1.65/min
    with pytest.raises(ResetRefused) as refused:
        operator.reset()
    check = refused.value.check
    assert (check.rate_holds, check.daily_holds) == (True, False)
    # Without the two oldest ($5.50), $2.75 < $5: once the second left the window.
    assert check.rate_clears_at == setup.clock.now - 20 * SECOND + 300 * SECOND + 1
    assert "it clears at 12:04:41 UTC (in 4 min 41 s)" in str(refused.value)
    assert setup.events(ev.KillSwitchReset) == []
    assert ProjectPaths(setup.root).kill_switch_file.exists()  # nothing moved either

    assert check.rate_clears_at is not None
    setup.clock.now = check.rate_clears_at - 1  # a microsecond early: still refused
    with pytest.raises(ResetRefused):
        operator.reset()
    setup.clock.now = check.rate_clears_at  # the window cleared: a plain reset is enough
    assert operator.reset()
    assert not setup.watchdog.evaluate().exceeded
    assert not ProjectPaths(setup.root).kill_switch_file.exists()
    assert len(setup.events(ev.KillSwitchActivated)) == 1


def test_a_forced_reset_starts_a_fresh_rate_window_and_new_spend_counts_from_it(
        setup: Setup) -> None:
    operator = Operator(setup)
    trip(setup, "2.75", "2.75", "2.75")
    assert operator.reset(force=True)
    [done] = setup.events(ev.KillSwitchReset)
    assert done.rate_window_start is not None
    for _ in range(3):  # the same spend, looked at again and again: no flap
        result = setup.watchdog.evaluate()
        assert not result.exceeded
        assert result.reading.rate == 0
    setup.clock.now += 10 * SECOND
    setup.spend("4.99")  # after the reset: counts, just under $1/min over 300 s
    assert not setup.watchdog.evaluate().exceeded
    setup.spend("0.01")
    assert setup.watchdog.evaluate().activated  # new spend trips it, as it should
    assert verify(setup.store) == []  # the fold of the log gives the same views


def test_a_daily_breach_needs_an_allowance_or_a_raised_limit(setup: Setup) -> None:
    operator = Operator(setup)
    setup.spend("80.00", seconds_ago=3600)  # outside the rate window
    assert setup.watchdog.evaluate().activated
    with pytest.raises(ResetRefused, match=r"today's total: \$80.00 of \$75.00"):
        operator.reset()
    with pytest.raises(ResetRefused, match=r"--allow-today USD \(more than \$5.00\)"):
        operator.reset(force=True)  # the rate is not what holds
    with pytest.raises(ResetRefused, match=r"\$80.00 of \$80.00 \(\$5.00 allowed today\)"):
        operator.reset(allow="5")
    assert operator.reset(allow="20")
    [done] = setup.events(ev.KillSwitchReset)
    assert (done.allow_today, done.rate_window_start) == (Decimal(20), None)
    result = setup.watchdog.evaluate()
    assert (result.exceeded, result.reading.allowance) == (False, Decimal(20))
    setup.spend("5.00", seconds_ago=600)  # outside the rate window, as all of it here
    assert not setup.watchdog.read().should_pause(LIMITS)  # $85 < 90% of $95
    setup.spend("0.50", seconds_ago=600)
    assert setup.watchdog.read().should_pause(LIMITS)
    setup.spend("9.50", seconds_ago=600)
    assert setup.watchdog.evaluate().activated  # new spend trips it at today's limit
    second = setup.events(ev.KillSwitchActivated)[-1]
    assert second.reason == "Daily limit exceeded: $95.00 >= $95.00 ($20.00 allowed today)"
    assert second.daily_limit == Decimal(95)
    setup.clock.now += 12 * 3600 * SECOND  # midnight: the allowance was for yesterday
    assert setup.watchdog.read().allowance == 0
    assert verify(setup.store) == []


def test_a_raised_limit_lets_the_reset_through(setup: Setup) -> None:
    setup.spend("80.00", seconds_ago=3600)
    assert setup.watchdog.evaluate().activated
    raised = BudgetLimits(daily_limit=Decimal(100), timezone=LIMITS.timezone)
    assert Operator(setup).reset(limits=raised)
    setup.watchdog.limits = raised  # the watchdog restarted with it
    assert not setup.watchdog.evaluate().exceeded


def test_a_reset_of_a_switch_that_is_off_records_nothing(setup: Setup) -> None:
    assert not Operator(setup).reset(force=True, allow="5")
    assert setup.events(ev.KillSwitchReset) == []


def test_spend_written_to_spend_jsonl_before_the_reset_is_judged_by_it(setup: Setup) -> None:
    setup.spend("75.00", seconds_ago=3600)
    assert setup.watchdog.evaluate().activated
    path = ProjectPaths(setup.root).spend_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{"timestamp_epoch": {setup.clock.now // SECOND - 60}, '
                    '"amount": 4}\n')  # $0.80/min over 300 s: under the rate limit
    with pytest.raises(ResetRefused, match=r"today's total: \$79.00 of \$79.00"):
        Operator(setup).reset(allow="4")
    assert [e.amount for e in setup.events(ev.SpendRecorded)] == [Decimal(75), Decimal(4)]


def test_a_reset_is_checked_against_the_limits_the_watchdog_started_with(
        setup: Setup) -> None:
    """The shell that resets may lack the watchdog's settings (here: the defaults, $75 a
    day): the limits the watchdog recorded at its start are the ones that would trip it."""
    def started(daily: str, pid: int) -> ev.BudgetWatchdogStarted:
        return ev.BudgetWatchdogStarted(rate_limit=Decimal(1), daily_limit=Decimal(daily),
                                        window_seconds=300, timezone="UTC", host="h", pid=pid)

    setup.services.record_watchdog_start(started("5", 41))
    setup.spend("8.00", seconds_ago=3600)
    setup.watchdog.limits = BudgetLimits(daily_limit=Decimal(5), timezone=LIMITS.timezone)
    assert setup.watchdog.evaluate().activated
    shell = BudgetLimits(timezone=LIMITS.timezone)  # $75 a day
    with pytest.raises(ResetRefused) as refused:
        Operator(setup).reset(limits=shell)
    lines = refused.value.check.explain()
    assert lines[0].startswith("limits: those of the budget watchdog pid 41 on h, started ")
    assert lines[0].endswith(": $1.00/min over 300 s, $5.00 a day")
    assert lines[1].startswith("today's total: $8.00 of $5.00")
    setup.services.record_watchdog_start(started("20", 42))  # restarted with a raised limit
    assert Operator(setup).reset(limits=shell)
    assert verify(setup.store) == []
