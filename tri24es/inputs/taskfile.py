"""Queue files: which names count, and how one file's bytes become a task (or a rejection).

Layout (kept from TRI-24): ``tasks/queue/<id>.md`` and ``tasks/queue/<PRIORITY>/<id>.md``
(the folder one of CRITICAL, HIGH, MEDIUM, LOW in any case; one level deep only).

- Task id: the file name without ``.md``; it must match ``SAFE_ID`` and hold no ``..``.
- Priority: a name prefix ``CRITICAL_``/``CRITICAL-`` (HIGH, MEDIUM, LOW alike; upper case,
  as in TRI-24) wins, then the folder, else MEDIUM: ``queue/LOW/CRITICAL-x.md`` is CRITICAL.
- Title: the first line starting ``# `` (without it), else the id.
- Field lines, outside fenced code blocks, the first of each key wins:
  ``key: value`` at the start of a line, the key in any case, the value trimmed; an empty
  value leaves the field unset. Keys: ``type`` (also ``## Type: value``), ``shard`` /
  ``lane``, ``model`` / ``assigned_model``, ``max_retries`` (an integer 0..100),
  ``max_budget_usd`` (a non-negative decimal such as ``2.50`` or ``$2.50``, at most 10 places)
  ``command`` (the agent command for this task, split like a shell does, never run by one:
  for workers without ``--exec``), ``agent`` (a preset: claude, codex, gemini), ``base``
  (the ref its branch starts from), ``review``, ``require_changes``, ``resume`` (true or
  false), ``retry_from`` (branch or base) and ``retry_backoff`` (``10s..5m``, ``30s`` or
  ``0``: see ``tri24es.scheduling.parse_backoff``) and ``not_before`` (an ISO-8601 time,
  or a delay such as ``10m`` from when the file is read) and ``after`` (the ids of tasks
  that must complete first, separated by commas or spaces) and ``no_progress`` (``$2 10m``:
  an attempt that spent $2 with no progress for 10 minutes fails; ``off``: no such rule,
  not even the fleet's; see ``tri24es.scheduling.parse_no_progress``).
- The body is the whole text, stored with the sha256 of the file's bytes.

Everything here but ``read_queue_file`` (and a relative ``not_before``, read against the
clock) is pure: names and bytes in, a verdict out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath

from tri24es.agents import AGENTS
from tri24es.inputs.queue_folder import Ignored as Ignored  # the names taken from here before
from tri24es.inputs.queue_folder import is_ignored_name as is_ignored_name
from tri24es.names import Priority, RetryFrom
from tri24es.scheduling import parse_backoff, parse_no_progress, parse_when
from tri24es.services import TaskSpec
from tri24es.timeutil import from_us, now_us

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_ID_LENGTH = 200
MAX_FIELD_LENGTH = 200
MAX_RETRIES_LIMIT = 100

#: Letters, digits, ``.``, ``_`` and ``-``; not starting with ``.`` or ``-``; at most 200.
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
PRIORITY_PREFIX = re.compile(r"^(CRITICAL|HIGH|MEDIUM|LOW)[_-]")
_FIELD_LINE = re.compile(
    r"^(?:(?P<key>type|shard|lane|model|assigned_model|max_retries|max_budget_usd|command|agent"
    r"|base|review|require_changes|resume|retry_from|retry_backoff|not_before|after"
    r"|no_progress)"
    r"|##[ \t]*(?P<heading>type))[ \t]*:(?P<value>.*)$",
    re.IGNORECASE,
)
_FIELD_NAMES = {
    "type": "type", "shard": "shard", "lane": "shard", "model": "model",
    "assigned_model": "model", "max_retries": "max_retries", "max_budget_usd": "max_budget_usd",
    "command": "command", "agent": "agent", "base": "base", "review": "review",
    "require_changes": "require_changes", "resume": "resume", "retry_from": "retry_from",
    "retry_backoff": "retry_backoff", "not_before": "not_before", "after": "after",
    "no_progress": "no_progress",
}
_YES, _NO = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_BUDGET = re.compile(r"\$?(\d{1,10})(?:\.(\d{1,10}))?")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


@dataclass(frozen=True)
class Location:
    """Where a queue file sits: its name gives the id, its folder a priority."""

    name: str  # the file name, e.g. "CRITICAL-fix.md"
    task_id: str  # the name without ".md" (not yet checked: see ``id_problem``)
    folder_priority: Priority | None


@dataclass(frozen=True)
class Rejection:
    task_id: str  # printable (control characters and undecodable bytes escaped)
    reason: str
    source: str | None = None


def printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes escaped (``\\n``, ``\\udcff``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def locate(relative: PurePosixPath) -> Location | Ignored:
    """Classify a path relative to ``tasks/queue``."""
    name = relative.name
    ignored = is_ignored_name(name)
    if ignored is not None:
        return ignored
    parts = relative.parts
    folder: Priority | None = None
    if len(parts) == 2 and parts[0].upper() in Priority.__members__:
        folder = Priority[parts[0].upper()]
    elif len(parts) != 1:
        return Ignored.NOT_A_QUEUE_FOLDER
    return Location(name=name, task_id=name[: -len(".md")], folder_priority=folder)


def id_problem(task_id: str) -> str | None:
    if SAFE_ID.fullmatch(task_id) and ".." not in task_id:
        return None
    if len(task_id) > MAX_ID_LENGTH:
        return f"task id is longer than {MAX_ID_LENGTH} characters"
    return (f"task id {printable(task_id)!r} is not safe: use letters, digits, '.', '_' and "
            "'-', not starting with '.' or '-', without '..'")


def priority_of(location: Location) -> Priority:
    prefix = PRIORITY_PREFIX.match(location.task_id)
    if prefix is not None:
        return Priority[prefix.group(1)]
    return location.folder_priority or Priority.MEDIUM


def _text_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _fields(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        m = _FIELD_LINE.match(line)
        if m is None:
            continue
        key = _FIELD_NAMES[(m.group("key") or m.group("heading")).lower()]
        found.setdefault(key, m.group("value").strip())
    return found


def field_values(text: str) -> dict[str, str]:
    """The field lines of a queue file's text as written (``lane`` under ``shard``...): what
    tells whether an edit changed a field whose value is read against the clock."""
    return _fields(_text_lines(text.removeprefix("\ufeff")))


def parse_max_retries(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > MAX_RETRIES_LIMIT:
        raise ValueError(f"bad max_retries {value!r}: an integer from 0 to {MAX_RETRIES_LIMIT}")
    return int(value)


def parse_budget(value: str) -> Decimal:
    m = _BUDGET.fullmatch(value)
    if m is None:
        raise ValueError(
            f"bad max_budget_usd {value!r}: a non-negative amount such as 2.50 or $2.50 "
            "(at most 10 digits before and 10 after the point)"
        )
    try:
        return Decimal(f"{m.group(1)}.{m.group(2) or '0'}")
    except InvalidOperation as e:  # unreachable given the pattern; kept as a guard
        raise ValueError(f"bad max_budget_usd {value!r}") from e


def parse_flag(key: str, text: str | None) -> bool:
    """A yes/no field line (``review: true``); absent means no."""
    if text is None:
        return False
    value = text.strip().lower()
    if value in _YES or value in _NO:
        return value in _YES
    raise ValueError(f"bad {key} {text!r}: expected true or false")


def parse_agent(text: str | None) -> str | None:

    if text is None:
        return None
    if text.strip().lower() not in AGENTS:
        raise ValueError(f"bad agent {text!r}: expected {'|'.join(AGENTS)}")
    return text.strip().lower()


def parse_retry_from(text: str) -> RetryFrom:
    try:
        return RetryFrom(text.strip().lower())
    except ValueError:
        raise ValueError(f"bad retry_from {text!r}: expected branch or base") from None


def parse_after(text: str) -> tuple[str, ...]:
    """``"build, lint"`` (commas or spaces) -> the ids of the tasks to wait for."""
    ids = tuple(dict.fromkeys(text.replace(",", " ").split()))
    for task_id in ids:
        problem = id_problem(task_id)
        if problem is not None:
            raise ValueError(f"bad after: {problem}")
    return ids


def parse_command(text: str | None) -> list[str] | None:
    """A task's own agent command, split as a shell would (it is never run by one)."""
    if text is None:
        return None
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"bad command {text!r}: {e}") from None
    return argv or None


def parse_task_file(
    location: Location, data: bytes, *, source: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> TaskSpec | Rejection:
    """The task in one queue file, or why it cannot be one."""

    def reject(reason: str) -> Rejection:
        return Rejection(printable(location.task_id), reason, source)

    problem = id_problem(location.task_id)
    if problem is not None:
        return reject(problem)
    if len(data) > max_bytes:
        return reject(f"file is larger than {max_bytes} bytes")
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return reject(f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})")
    if "\x00" in body:
        return reject("contains NUL bytes (a binary file?)")
    if not body.strip():
        return reject("empty file")
    lines = _text_lines(body.removeprefix("\ufeff"))
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), "")
    fields = _fields(lines)
    for key in ("type", "shard", "model"):
        if len(fields.get(key, "")) > MAX_FIELD_LENGTH:
            return reject(f"{key} is longer than {MAX_FIELD_LENGTH} characters")
    try:
        retries = fields.get("max_retries") or None
        budget = fields.get("max_budget_usd") or None
        max_retries = 3 if retries is None else parse_max_retries(retries)
        max_budget = None if budget is None else parse_budget(budget)
        command = parse_command(fields.get("command") or None)
        agent = parse_agent(fields.get("agent") or None)
        flags = {key: parse_flag(key, fields.get(key) or None)
                 for key in ("review", "require_changes", "resume")}
        retry_from = parse_retry_from(fields.get("retry_from") or "branch")
        backoff = fields.get("retry_backoff") or None
        retry_backoff = None if backoff is None else parse_backoff(backoff)
        when = fields.get("not_before") or None
        not_before = None if when is None else from_us(parse_when(when, now_us()))
        after = parse_after(fields.get("after") or "")
        rule = fields.get("no_progress") or None
        no_progress = None if rule is None else parse_no_progress(rule)
    except ValueError as e:
        return reject(str(e))
    return TaskSpec(
        task_id=location.task_id,
        title=title or location.task_id,
        priority=priority_of(location),
        body=body,
        shard=fields.get("shard") or None,
        model=fields.get("model") or None,
        type=fields.get("type") or None,
        max_retries=max_retries,
        max_budget_usd=max_budget,
        command=command,
        source=source,
        body_sha256=hashlib.sha256(data).hexdigest(),
        agent=agent,
        base=fields.get("base") or None,
        retry_from=retry_from,
        retry_backoff=retry_backoff, not_before=not_before, after=after,
        no_progress=no_progress, review=flags["review"], require_changes=flags["require_changes"],
        resume=flags["resume"],
    )


class Unreadable(Exception):
    """A queue file that cannot be read as a task: the message is the rejection reason."""


def read_queue_file(path: Path, queue_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a queue file (at most ``max_bytes + 1``); raises ``Unreadable``.

    A symlink is followed only if it leads to a file inside ``queue_dir``; only regular
    files are opened (never a FIFO or a device, which could block or never end).
    """
    target = path
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(os.path.realpath(queue_dir)):
            raise Unreadable(f"symlink leading outside the queue folder ({printable(str(target))})")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Unreadable(f"unreadable: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if st.st_size > max_bytes:
            raise Unreadable(f"file is larger than {max_bytes} bytes")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise Unreadable(f"unreadable: {e.strerror}") from e
    finally:
        os.close(fd)
