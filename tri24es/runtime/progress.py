"""Spend without progress: an attempt that keeps spending while nothing moves.

An agent stuck in a loop (retrying a failing call, re-reading the same files, thinking in
circles) can burn its whole budget before its timeout. :class:`ProgressWatch` follows one
attempt against a :class:`~tri24es.events.NoProgress` rule (``$X`` and ``N`` seconds) and
says when the attempt spent ``$X`` or more since its last sign of progress, ``N`` or more
seconds ago. Signs of progress:

- a new output line: not empty, not the same as the previous such line (a loop printing
  "retrying..." is not progress), and not a spend report (a line the usage parser read
  spend from is the meter ticking, not work: with Claude's ``stream-json`` an assistant
  message carries its usage, while the tool results that follow it are progress);
- a change in the attempt's workspace (``--repo``): its files (what ``git status`` lists,
  with each one's size and modification time) or its head commit. The workspace is looked
  at only when the rule would otherwise fire, so a busy repository costs one ``git
  status`` per period at most; a change found then counts as progress at that moment (a
  later stop than the change deserved, never an earlier one).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from tri24es.events import NoProgress, NoProgressEvidence

#: The longest last output line kept as evidence.
LAST_LINE_LIMIT = 500
#: The longest a look at the workspace may take (a hung git is no progress either).
GIT_SECONDS = 30.0


class ProgressWatch:
    """One attempt's progress, against ``rule``; ``workspace`` is its git worktree, if any."""

    def __init__(self, rule: NoProgress, workspace: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self.workspace = workspace
        self._clock = clock
        self._since = clock()
        self._spent_then = Decimal(0)
        self._last = b""
        self._print = self._fingerprint()

    def saw(self, line: bytes, *, spend_line: bool, spent: Decimal) -> None:
        """An output line of the agent; ``spent``: the attempt's spend so far."""
        text = line.strip()
        if not text or spend_line or text == self._last:
            return
        self._last = text
        self._progress(spent)

    def check(self, spent: Decimal, last_line: str) -> NoProgressEvidence | None:
        """The evidence, if the attempt (having spent ``spent`` so far) broke the rule."""
        idle = self._clock() - self._since
        burnt = spent - self._spent_then
        if idle < self.rule.after_s or burnt < self.rule.usd:
            return None
        seen = self._fingerprint()
        if seen != self._print:  # the files moved: progress, now
            self._print = seen
            self._progress(spent)
            return None
        line = last_line if len(last_line) <= LAST_LINE_LIMIT else \
            last_line[:LAST_LINE_LIMIT - 1] + "…"
        plain = Decimal(f"{burnt.normalize():f}")  # 0.3, not 0.3000000000 (nor 1E+2)
        return NoProgressEvidence(spent_usd=plain, seconds=round(idle, 3), last_line=line)

    def _progress(self, spent: Decimal) -> None:
        self._since = self._clock()
        self._spent_then = spent

    def _fingerprint(self) -> bytes | None:
        """The workspace's head, changed files and their sizes and times, as a digest; None
        without a workspace or when git cannot say."""
        if self.workspace is None:
            return None
        try:
            status = subprocess.run(
                ["git", "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"],
                cwd=self.workspace, capture_output=True, timeout=GIT_SECONDS, check=True,
                stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        digest = hashlib.sha256(status)
        for entry in status.split(b"\0"):
            path = _path_of(entry)
            if path is None:
                continue
            try:
                info = os.lstat(self.workspace / os.fsdecode(path))
            except OSError:
                continue
            digest.update(f"{info.st_size} {info.st_mtime_ns}".encode())
        return digest.digest()


def _path_of(entry: bytes) -> bytes | None:
    """The path of one ``git status --porcelain=v2 -z`` entry (None for headers)."""
    fields = {b"1": 8, b"2": 9, b"u": 10}.get(entry[:1])
    if fields is not None:
        parts = entry.split(b" ", fields)
        return parts[fields] if len(parts) > fields else None
    if entry[:2] in (b"? ", b"! "):
        return entry[2:]
    return None
