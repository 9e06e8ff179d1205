"""Usage limits recognised in agents' real output (tests/fixtures/usage_limits/README.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tri24es.inputs.usage_limits import UsageLimit, UsageLimitDetector, reset_time
from tri24es.timeutil import to_us

FIXTURES = Path(__file__).parent.parent / "fixtures" / "usage_limits"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def detect(name: str, now: datetime = NOW, zone: str = "UTC") -> UsageLimit | None:
    detector = UsageLimitDetector(clock=lambda: to_us(now), zone=ZoneInfo(zone))
    for line in (FIXTURES / name).read_bytes().splitlines(keepends=True):
        detector.feed(line)
    return detector.found


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


@pytest.mark.parametrize(("name", "until"), [
    ("claude_epoch.txt", 1755615600 * 1_000_000),
    ("claude_reset_at.txt", at("2026-11-30T09:00-06:00")),  # 6am in Chicago: today's 9am
    ("claude_hit_limit.txt", at("2026-11-30T18:20+01:00")),
    ("claude_session_limit.txt", at("2026-12-01T15:50+09:00")),  # 9pm in Tokyo: tomorrow's
    ("claude_five_hour.txt", at("2026-12-01T05:00Z")),  # no zone: the machine's (UTC here)
    ("claude_five_hour_no_time.txt", None),
    ("claude_reset_at_no_zone.txt", at("2026-12-01T00:00Z")),  # 12am: midnight
    ("claude_stream_result.jsonl", 1755615600 * 1_000_000),
    ("codex_try_again_in.txt", to_us(NOW + timedelta(days=5, hours=22, minutes=11))),
    ("codex_try_again_at_time.txt", at("2026-11-30T15:45Z")),
    ("codex_exec.jsonl", to_us(NOW + timedelta(hours=2, minutes=3))),
    ("gemini_quota_metric.txt", None),  # no time given: the worker's default pause
    ("gemini_suggested_retry.txt", to_us(NOW + timedelta(seconds=60))),
    ("gemini_retry_in.txt", to_us(NOW) + 47_434_392),
    ("gemini_capacity.txt", to_us(NOW + timedelta(hours=12, minutes=34, seconds=16))),
    ("gemini_stream_error.jsonl", to_us(NOW + timedelta(hours=2))),
])
def test_each_real_form_is_recognised_with_its_reset_time(name: str, until: int | None) -> None:
    found = detect(name)
    assert found is not None, name
    assert found.until_us == until
    assert found.text
    assert len(found.text) <= 300


@pytest.mark.parametrize(("name", "now", "until"), [
    # read on the day each was reported
    ("claude_hit_limit_date.txt", "2026-04-22T13:39Z", "2026-04-23T16:00-03:00"),
    ("claude_hit_limit_comma_date.txt", "2026-02-04T09:00Z", "2026-02-07T11:00+09:00"),
])
def test_a_date_without_a_year_is_the_next_such_date(name: str, now: str, until: str) -> None:
    found = detect(name, now=datetime.fromisoformat(now))
    assert found is not None
    assert found.until_us == at(until)


def test_a_date_past_this_year_is_next_years() -> None:
    now = to_us(datetime(2026, 12, 30, 12, tzinfo=UTC))
    assert reset_time("resets Jan 2 at 4pm (UTC)", now, UTC) == at("2027-01-02T16:00Z")


def test_a_date_with_its_year_is_taken_as_it_is() -> None:
    found = detect("codex_try_again_at_date.txt", now=datetime(2026, 6, 5, 12, tzinfo=UTC))
    assert found is not None
    assert found.until_us == at("2026-07-05T20:19Z")


def test_a_time_without_a_zone_is_in_the_given_zone_and_the_next_such_time() -> None:
    early = datetime(2026, 11, 30, 8, tzinfo=UTC)  # 3am in New York: today's 5am
    found = detect("claude_five_hour.txt", now=early, zone="America/New_York")
    assert found is not None
    assert found.until_us == at("2026-11-30T05:00-05:00")
    found = detect("claude_five_hour.txt", zone="America/New_York")  # 7am: tomorrow's 5am
    assert found is not None
    assert found.until_us == at("2026-12-01T05:00-05:00")


def test_the_next_day_keeps_its_wall_time_across_a_daylight_saving_change() -> None:
    # 2026-03-08 is the US change: 3pm on the 8th is 19:00Z, not 20:00Z as on the 7th
    now = to_us(datetime(2026, 3, 7, 22, tzinfo=UTC))  # 5pm EST on the 7th
    assert reset_time("resets 3pm", now, ZoneInfo("America/New_York")) == at(
        "2026-03-08T15:00-04:00")


@pytest.mark.parametrize("line", [
    "API Error: Rate limit reached",  # a per-minute rate limit, not a usage window
    '{"type":"assistant","message":{"content":[{"type":"text","text":"Claude AI usage limit '
    'reached|1735689600"}]}}',  # an agent quoting the text is no limit
    '{"type":"user","message":{"content":[{"type":"tool_result","content":"You\'ve hit your '
    'usage limit. Try again in 2 hours."}]}}',
    '{"type":"result","subtype":"success","is_error":false,"result":"I handled the case '
    '\\"Claude usage limit reached\\" in the parser."}',
    '{"type":"item.completed","item":{"type":"agent_message","text":"Quota exceeded for '
    'quota metric handled"}}',
    "the limit of the loop is 3 and the quota is fine",
    "",
])
def test_what_only_looks_like_a_limit_is_not_one(line: str) -> None:
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    detector.feed(line)
    assert detector.found is None


def test_only_the_first_limit_counts_and_a_time_may_follow_within_a_few_lines() -> None:
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    detector.feed(b"You exceeded your current quota, please check your plan and billing details.")
    assert detector.found is not None
    assert detector.found.until_us is None
    detector.feed(b"  (some other line)")
    detector.feed(b"Please retry in 30s.")
    assert detector.found.until_us == to_us(NOW) + 30_000_000
    detector.feed(b"Claude AI usage limit reached|1755615600")  # the first limit stays
    assert detector.found.until_us == to_us(NOW) + 30_000_000


def test_bytes_that_are_not_utf8_or_json_do_not_raise() -> None:
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    for line in (b"\xff\xfe limit", b'{"type": "result", "is_error": true', b"{limit}",
                 b'["limit"]', b'{"type":"error","message":42}', b"resets 99pm limit"):
        detector.feed(line)
    assert detector.found is None


def test_claudes_verbose_json_array_is_read_by_its_result() -> None:
    # `claude -p --output-format json --verbose`: one line, an array of every message
    result = ('{"type":"result","subtype":"success","is_error":true,'
              '"result":"Claude AI usage limit reached|1755615600"}')
    quoting = ('{"type":"assistant","message":{"content":[{"type":"text","text":'
               '"Claude AI usage limit reached|1"}]}}')
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    detector.feed(f"[{quoting}, {quoting}]")
    assert detector.found is None
    detector.feed(f"[{quoting}, {result}]")
    assert detector.found is not None
    assert detector.found.until_us == 1755615600 * 1_000_000


@settings(max_examples=300)
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.sampled_from(["You've hit your limit · resets ", "Claude AI usage limit reached|",
                     "try again in ", "resets 13:99pm (Mars/Base)", "retry in 1e400s",
                     "Quota exceeded for quota metric", '{"type":"error","message":',
                     "resets Feb 30, 11am", "try again at 0:00 am"])), max_size=8))
def test_any_output_never_raises(parts: list[str | bytes]) -> None:
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    line = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    detector.feed(line)
    detector.feed(line.decode(errors="replace"))
    if detector.found is not None:
        assert detector.found.until_us is None or detector.found.until_us > 0


@pytest.mark.parametrize("text", [
    "You've hit your usage limit. Try again in " + "9" * 400 + " days.",
    "Claude AI usage limit reached|9999999999999",
    "You've hit your usage limit. Try again at Jan 1, 9999 11:59 PM.",
])
def test_an_absurd_reset_is_taken_as_the_longest_believable(text: str) -> None:
    detector = UsageLimitDetector(clock=lambda: to_us(NOW), zone=UTC)
    detector.feed(text)
    assert detector.found is not None
    assert detector.found.until_us == to_us(NOW + timedelta(days=31))
