"""Process identity: a pid alone can be reused, a pid plus its start time (and host) cannot.

Linux only (``/proc``); the start time is in clock ticks since boot, as the kernel keeps it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

PROC = Path("/proc")
_START_TIME = 22  # field number in /proc/<pid>/stat (proc(5)), counting from 1
_STATE = 3


def parse_stat(raw: str) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` line; field n is at index n - 1.

    The second field, ``(comm)``, may itself hold spaces and parentheses, so it ends at
    the *last* ``)``.
    """
    head, sep, rest = raw.rpartition(")")
    pid_field, opened, comm = head.partition(" (")
    fields = [pid_field, comm, *rest.split()]
    if not sep or not opened or len(fields) < _START_TIME:
        raise ValueError(f"not a /proc/<pid>/stat line: {raw[:80]!r}")
    return fields


def _stat_fields(pid: int) -> list[str]:
    """Raises ProcessLookupError when there is no such process."""
    if pid <= 0:
        raise ProcessLookupError(f"no process {pid}")
    try:
        raw = (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(f"no process {pid}") from None
    return parse_stat(raw)


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot. Raises ProcessLookupError."""
    return int(_stat_fields(pid)[_START_TIME - 1])


def is_same_process(pid: int, started: int) -> bool:
    """Whether ``pid`` is running and is the process that started at ``started`` (a zombie,
    dead but not yet reaped, does not count)."""
    try:
        fields = _stat_fields(pid)
    except ProcessLookupError:
        return False
    return fields[_STATE - 1] != "Z" and int(fields[_START_TIME - 1]) == started


#: Overrides the host name as this machine's identity (the one place that reads it).
HOST_ID_ENV = "TRI24ES_HOST_ID"


def host_id() -> str:
    """This machine's identity, as recorded with every worker and event and compared before
    signalling a process: ``TRI24ES_HOST_ID`` if set (trimmed, not empty), else the host
    name. Set it where host names are not unique (containers, cloned VMs)."""
    return os.environ.get(HOST_ID_ENV, "").strip() or socket.gethostname()


_SESSION = 6


def leftovers(session: int, started_after: int, tag: bytes | None = None) -> list[int]:
    """Live processes that started at or after ``started_after`` (clock ticks since boot) and
    are in session ``session`` or carry ``tag`` (e.g. ``b"NAME=value"``) in their
    environment: what is left of a process tree whose leader is gone, including processes
    that left its session. The start time rules out processes older than the tree (a later
    session reusing the id, a recycled pid)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except (ProcessLookupError, ValueError, OSError):
            continue
        if fields[_STATE - 1] == "Z" or int(fields[_START_TIME - 1]) < started_after:
            continue
        if int(fields[_SESSION - 1]) == session or (tag is not None and _carries(entry, tag)):
            found.append(int(entry.name))
    return found


def _carries(entry: Path, tag: bytes) -> bool:
    try:
        return tag in (entry / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
