"""The pure helpers of scheduling: backoffs, delays, waits."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tri24es.events import NO_BACKOFF, Backoff
from tri24es.scheduling import (
    Estimate,
    check_cron,
    estimate,
    last_slot,
    next_slot,
    parse_backoff,
    parse_when,
    percentile,
    retry_wait_us,
    slot_task_id,
)
from tri24es.services import TaskSpec
from tri24es.services.dependencies import order_by_dependencies

NOW = 1_800_000_000_000_000
S = 1_000_000


@pytest.mark.parametrize(("text", "expected"), [
    ("5s..10m", Backoff(base_s=5, cap_s=600)),
    ("30s", Backoff(base_s=30, cap_s=30 * 64)),
    ("1m..1h30m", Backoff(base_s=60, cap_s=5400)),
    ("0", NO_BACKOFF),
    ("none", NO_BACKOFF),
    ("0..0", NO_BACKOFF),
])
def test_parse_backoff(text: str, expected: Backoff) -> None:
    assert parse_backoff(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("5", "expected e.g. 5s..10m"),
    ("10m..5s", "the cap is shorter than the base"),
    ("soon", "expected e.g."),
    ("-5s", "expected e.g."),
    ("", "expected e.g."),
])
def test_parse_backoff_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_backoff(text)


def test_the_wait_doubles_per_failure_within_half_and_all_of_the_step() -> None:
    backoff, rng = Backoff(base_s=10, cap_s=45), random.Random(1)
    for failures, step in [(1, 10), (2, 20), (3, 40), (4, 45), (30, 45), (500, 45)]:
        draws = [retry_wait_us(backoff, failures, rng) for _ in range(200)]
        assert all(step * S // 2 <= d <= step * S for d in draws)
        assert len(set(draws)) > 100  # jittered: tasks failing together come back apart
    assert retry_wait_us(NO_BACKOFF, 3, rng) == 0


JAN_15 = int(datetime(2027, 1, 15, 3, tzinfo=UTC).timestamp()) * S


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("10m", NOW + 600 * S),
    ("in 1h30m", NOW + 5400 * S),
    ("2027-01-15T03:00:00Z", JAN_15),
    ("2027-01-15T03:00", JAN_15),  # naive: UTC
    ("2027-01-15T04:00+01:00", JAN_15),
])
def test_parse_when(text: str, expected: int) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["tomorrow", "in soon", "10x", "", "2027-13-01"])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        parse_when(text, NOW)


def spec(task_id: str, *after: str) -> TaskSpec:
    return TaskSpec(task_id, task_id, after=after)


def test_order_by_dependencies_puts_dependencies_first() -> None:
    ordered, problems = order_by_dependencies(
        [spec("c", "b", "old"), spec("b", "a"), spec("a"), spec("d", "c")], {"old"}.__contains__)
    assert [s.task_id for s in ordered] == ["a", "b", "c", "d"]
    assert problems == {}


def test_order_by_dependencies_refuses_cycles_unknown_ids_and_what_depends_on_them() -> None:
    ordered, problems = order_by_dependencies(
        [spec("p", "q"), spec("q", "r"), spec("r", "p"), spec("self", "self"),
         spec("lost", "nowhere"), spec("after-lost", "lost"), spec("fine")],
        lambda _: False)
    assert [s.task_id for s in ordered] == ["fine"]
    assert problems == {
        "r": "dependency cycle p -> q -> r -> p",
        "q": "dependency 'r' is refused",
        "p": "dependency 'q' is refused",
        "self": "a task cannot wait for itself",
        "lost": "unknown dependency 'nowhere'",
        "after-lost": "dependency 'lost' is refused",
    }


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * S)


@pytest.mark.parametrize(("cron", "zone", "now", "last", "following"), [
    ("0 3 * * *", "UTC", "2026-12-01T03:00:00+00:00", "2026-12-01T03:00:00+00:00",
     "2026-12-02T03:00:00+00:00"),  # a slot at now counts as the last one
    ("0 3 * * *", "UTC", "2026-12-01T02:59:59+00:00", "2026-11-30T03:00:00+00:00",
     "2026-12-01T03:00:00+00:00"),
    ("0 3 * * *", "Europe/Paris", "2026-12-01T02:30:00+00:00", "2026-12-01T02:00:00+00:00",
     "2026-12-02T02:00:00+00:00"),  # 03:00 in Paris is 02:00 UTC in winter
    ("*/15 * * * *", "UTC", "2026-12-01T10:07:00+00:00", "2026-12-01T10:00:00+00:00",
     "2026-12-01T10:15:00+00:00"),
    ("@daily", "UTC", "2026-12-01T10:07:00+00:00", "2026-12-01T00:00:00+00:00",
     "2026-12-02T00:00:00+00:00"),
])
def test_slots(cron: str, zone: str, now: str, last: str, following: str) -> None:
    assert last_slot(cron, zone, at(now)) == at(last)
    assert next_slot(cron, zone, at(now)) == at(following)


def test_a_slots_task_id_names_the_schedule_and_the_utc_minute() -> None:
    assert slot_task_id("nightly", at("2026-12-01T04:00:00+01:00")) == "nightly-20261201T0300Z"


@pytest.mark.parametrize(("cron", "zone", "problem"), [
    ("0 25 * * *", "UTC", "bad cron expression '0 25 * * *'"),
    ("every night", "UTC", "bad cron expression"),
    ("0 3 * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("0 3 31 2 *", "UTC", "it names no date to come (such as 31 February)"),
    ("* * * * * *", "UTC", "expected 5 fields"),  # croniter's seconds: a slot is a minute
])
def test_check_cron_refuses(cron: str, zone: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_cron(cron, zone, at("2026-12-01T00:00:00+00:00"))


def test_a_cron_that_names_no_date_has_no_slot() -> None:
    assert last_slot("0 3 31 2 *", "UTC", at("2026-12-01T00:00:00+00:00")) is None
    assert next_slot("0 3 31 2 *", "UTC", at("2026-12-01T00:00:00+00:00")) is None


def test_an_estimate_needs_three_samples_and_takes_nearest_rank_percentiles() -> None:
    assert estimate([]) is None
    assert estimate([(Decimal(1), 10.0)] * 2) is None
    found = estimate([(Decimal(n), float(60 * n)) for n in (5, 1, 3, 2, 4, 10, 6, 7, 8, 9)])
    assert found == Estimate(10, Decimal(5), Decimal(9), 300.0, 540.0)
    assert str(found) == "cost p50 $5.00, p90 $9.00; time p50 5 min, p90 9 min (10 completed)"
    three = estimate([(Decimal("0.1"), 2.5), (Decimal("0.4"), 95.0), (Decimal("0.2"), 7200.0)])
    assert three == Estimate(3, Decimal("0.2"), Decimal("0.4"), 95.0, 7200.0)
    assert str(three) == ("cost p50 $0.20, p90 $0.40; time p50 1 min 35 s, p90 2 h "
                          "(3 completed)")
    assert percentile([1.0], 0.9) == 1.0


def test_a_delay_past_the_calendars_end_is_a_clear_error() -> None:
    from tri24es.scheduling import parse_when

    with pytest.raises(ValueError, match="too far ahead"):
        parse_when("99999999d", 0)
    assert parse_when("in 1h", 0) == 3_600_000_000
