"""A provider's usage limit, recognised in an agent's output, and when it resets.

Subscription agents stop working when their provider's usage window is used up, and say so
in their output; running more tasks on that model before the reset only burns attempts.
The worker feeds every output line to :class:`UsageLimitDetector`; once it has recognised a
limit, the worker pauses the model until the reset (``ModelPaused``) and puts the task back
at no retry cost. The forms understood are the ones the CLIs really print (fixtures in
``tests/fixtures/usage_limits/``, each with its source):

- Claude Code: ``Claude AI usage limit reached|1755615600`` (epoch seconds, older versions);
  ``Claude usage limit reached. Your limit will reset at 5pm (Europe/Warsaw).``;
  ``You've hit your limit · resets 6:20pm (Europe/Berlin)`` (also ``session``/``weekly``
  limit, ``resets Apr 23 at 4pm (...)``, ``resets Feb 7, 11am (...)``);
  ``5-hour limit reached ∙ resets 5am``; in ``stream-json``/``json``, the same text as the
  ``result`` of a ``result`` line with ``"is_error": true``.
- Codex CLI: ``You've hit your usage limit. ... try again in 5 days 22 hours 11 minutes.``
  or ``... try again at Jul 5th, 2026 8:19 PM.`` (``exec --json``: an ``error`` line's
  ``message``, a ``turn.failed`` line's ``error.message``).
- Gemini CLI: ``Quota exceeded for quota metric '...'``, ``You exceeded your current
  quota``, ``You have exhausted your capacity on this model. Your quota will reset after
  12h34m16s.``, with a delay as ``Please retry in 47.4s.`` or ``Suggested retry after 60s.``
  (often on a later line of the same error: the next few lines are read for it).

Only errors count in JSON output: an assistant's message or a tool's output that merely
quotes such a text (an agent working on this very code, say) is not a limit. Plain-text
lines are matched anywhere in the line. A time without a zone is in ``zone`` (the machine's
by default); a time without a date is the next such time; a date without a year the next
such date. A limit whose reset cannot be read has ``until_us`` None: the worker pauses for
its default (``TRI24ES_USAGE_PAUSE``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path

import orjson

from tri24es.timeutil import from_us, now_us, to_us

log = logging.getLogger(__name__)

#: The longest message kept as the pause's reason.
TEXT_LIMIT = 300
#: Lines after a limit without a time that are still read for its time (Gemini prints the
#: retry delay a few lines below the quota message).
FOLLOW_LINES = 20
#: The furthest reset believed: a weekly window is the longest the providers use; a reset
#: further than this is a misread (or a broken message), taken as this far.
MAX_RESET_US = 31 * 86_400_000_000
#: Lines longer than this are not read as plain text (a limit message is short; a huge
#: line is a file's content or a tool's output).
MAX_PLAIN_CHARS = 4096

_LIMIT = re.compile(
    r"Claude AI usage limit reached"
    r"|Claude usage limit reached"
    r"|You(?:'|\u2019)ve hit your (?:(?:usage|session|weekly|daily|Opus|Sonnet) )?limit"
    r"|\b\d+[- ]hour limit reached"
    r"|\b(?:weekly|session|usage) limit reached"
    r"|Quota exceeded for (?:quota )?metric"
    r"|You exceeded your current quota"
    r"|You have exhausted your capacity on this model",
    re.IGNORECASE)

_EPOCH = re.compile(r"limit reached\|(\d{10,13})\b", re.IGNORECASE)
_UNITS = {"d": 86400, "day": 86400, "days": 86400, "h": 3600, "hr": 3600, "hrs": 3600,
          "hour": 3600, "hours": 3600, "m": 60, "min": 60, "mins": 60, "minute": 60,
          "minutes": 60, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
# "try again in 5 days 22 hours 11 minutes", "retry in 47.4s", "reset after 12h34m16s"
_DELAY = re.compile(
    r"(?:try again in|retry in|retry after|reset after|resets in)\s+"
    r"(?P<parts>(?:\d+(?:\.\d+)?\s*(?:days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])"
    r"(?![a-z])[\s,]*(?:and\s+)?)+)", re.IGNORECASE)
_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])(?![a-z])",
    re.IGNORECASE)
_MONTHS = {name: number for number, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
     ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
     ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")], start=1) for name in names}
# "resets 3pm", "reset at 9:30 AM", "resets Apr 23 at 4pm (America/Recife)",
# "try again at Jul 5th, 2026 8:19 PM", "resets Feb 7, 11am (Asia/Seoul)"
_AT = re.compile(
    r"(?:resets?|try again)\s+(?:at\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+"
    r"(?:(?P<year>\d{4}),?\s+)?(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?(?![\w:])"
    r"(?:\s*\((?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)\))?",
    re.IGNORECASE)


@dataclass(frozen=True)
class UsageLimit:
    """A usage limit an agent reported: its words, and when it resets (None: not said)."""

    text: str
    until_us: int | None


def local_zone() -> tzinfo:
    """The machine's time zone (as a zoneinfo zone when it can be read, so that a "3pm"
    tomorrow across a daylight-saving change is still 3pm)."""
    from zoneinfo import ZoneInfo

    try:
        with Path("/etc/localtime").open("rb") as f:
            return ZoneInfo.from_file(f)
    except (OSError, ValueError):
        zone = datetime.now().astimezone().tzinfo
        return zone if zone is not None else UTC


def _zone(name: str | None, default: tzinfo) -> tzinfo:
    if not name:
        return default
    if name.upper() in ("UTC", "GMT"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default  # a zone this machine does not know: the local one is the best guess


def reset_time(text: str, now: int, zone: tzinfo) -> int | None:
    """When the limit ``text`` describes resets, in µs, read against ``now`` (µs), at most
    :data:`MAX_RESET_US` ahead; None if the text gives no time."""
    until = _reset_time(text, now, zone)
    return None if until is None else min(until, now + MAX_RESET_US)


def _reset_time(text: str, now: int, zone: tzinfo) -> int | None:
    epoch = _EPOCH.search(text)
    if epoch:
        value = int(epoch.group(1))
        return value * 1000 if value >= 10**12 else value * 1_000_000  # ms or s
    delay = _DELAY.search(text)
    if delay:
        seconds = sum(float(number) * _UNITS[unit.lower()]
                      for number, unit in _PART.findall(delay.group("parts")))
        return now + round(min(seconds, MAX_RESET_US / 1e6) * 1_000_000)  # never inf
    for at in _AT.finditer(text):
        moment = _wall_time(at, now, _zone(at.group("zone"), zone))
        if moment is not None:
            return moment
    return None


def _wall_time(at: re.Match[str], now: int, zone: tzinfo) -> int | None:
    """The next time (after ``now``) the match names, in ``zone``."""
    hour, minute = int(at.group("hour")), int(at.group("minute") or 0)
    ampm = (at.group("ampm") or "").lower().replace(".", "")
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif at.group("minute") is None:
        return None  # a bare number ("resets 3") is not a time
    if hour > 23 or minute > 59:
        return None
    here = from_us(now).astimezone(zone)
    wall = time(hour, minute)
    month_name = at.group("month")
    if month_name is not None:
        month = _MONTHS.get(month_name.lower())
        if month is None:
            return None
        year = int(at.group("year") or here.year)
        try:
            moment = datetime.combine(date(year, month, int(at.group("day"))), wall, zone)
            if at.group("year") is None and to_us(moment) <= now - 86_400_000_000:
                moment = moment.replace(year=year + 1)  # "Jan 2" read on Dec 30
        except ValueError:
            return None
        return to_us(moment)
    moment = datetime.combine(here.date(), wall, zone)
    if to_us(moment) <= now:  # "resets 3pm" said at 4pm: tomorrow's
        moment = datetime.combine(here.date() + timedelta(days=1), wall, zone)
    return to_us(moment)


def error_texts(line: str) -> list[str]:
    """The texts of ``line`` that may report a limit: a plain line whole; of a JSON line,
    only its error fields (a Claude ``result`` with ``is_error``, a Codex ``error`` or
    ``turn.failed``, a Gemini ``result`` with status ``error`` or an ``error`` object); of a
    JSON array (Claude's ``--output-format json --verbose``), those of its objects."""
    stripped = line.strip()
    if not stripped.startswith(("{", "[")):
        return [stripped] if len(stripped) <= MAX_PLAIN_CHARS else []
    try:
        parsed = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        # A line cut short, or the first line of a pretty-printed document: "[{" opening
        # Gemini's error block, say. Only a short one is read as text.
        return [stripped] if len(stripped) <= 80 and not stripped.startswith("{") else []
    objects = parsed if isinstance(parsed, list) else [parsed]
    return [text for obj in objects if isinstance(obj, dict) for text in _errors_of(obj)]


def _errors_of(obj: dict[str, object]) -> list[str]:
    kind = obj.get("type")
    found: list[object] = []
    if kind == "result" and obj.get("is_error") is True:
        found += [obj.get("result"), obj.get("error")]
    if kind in ("error", "turn.failed") or (kind == "result" and obj.get("status") == "error") \
            or kind is None:
        found += [obj.get("message"), obj.get("error")]
    texts: list[str] = []
    for value in found:
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str):
            texts.append(value)
    return texts


class UsageLimitDetector:
    """Fed every output line of one attempt; ``found`` is the first limit it reported.

    Never raises: a line it cannot read is no limit.
    """

    def __init__(self, clock: Callable[[], int] = now_us, zone: tzinfo | None = None) -> None:
        self._clock = clock
        self._zone = zone
        self.found: UsageLimit | None = None
        self._follow = 0  # lines still read for the time of a limit that gave none
        self._cut = False  # the last piece fed was a long line's first part (cut by the reader)

    @property
    def zone(self) -> tzinfo:
        if self._zone is None:
            self._zone = local_zone()
        return self._zone

    def feed(self, line: str | bytes) -> None:
        try:
            self._feed(line)
        except Exception:  # a parser bug must never stop the worker's output pump
            log.exception("usage-limit detector failed on an output line; it was skipped")

    def _feed(self, line: str | bytes) -> None:
        ended = line.endswith(b"\n") if isinstance(line, bytes) else line.endswith("\n")
        continued, self._cut = self._cut, len(line) > MAX_PLAIN_CHARS and not ended
        if continued:
            return  # the rest of a long line (a JSON document's, say): no line of its own
        if self.found is not None and self._follow <= 0:
            return
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        if self.found is None and not _maybe(text):
            return  # the common case, cheaply: no limit word in the line
        for message in error_texts(text):
            if self.found is None:
                match = _LIMIT.search(message)
                if match is None:
                    continue
                said = message[match.start():].strip()
                until = reset_time(said, self._clock(), self.zone)
                self.found = UsageLimit(said[:TEXT_LIMIT], until)
                self._follow = 0 if until is not None else FOLLOW_LINES
                return
            until = reset_time(message, self._clock(), self.zone)  # a later line's delay
            if until is not None:
                self.found = UsageLimit(self.found.text, until)
                self._follow = 0
                return
        self._follow -= 1


def _maybe(text: str) -> bool:
    lowered = text.lower()
    return "limit" in lowered or "quota" in lowered or "capacity" in lowered
