"""One attempt of one task: the agent process, its output, and how it ends.

The agent runs in a session of its own (so in its own process group: whatever it starts is
signalled with it), gets the task text on stdin and never through a shell, and dies with
the worker (``PR_SET_PDEATHSIG``) even when the worker is SIGKILLed. A reader thread copies
its output (stdout and stderr, merged) line by line into the attempt's log and hands each
line to the worker, which parses spend from it while the agent still runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from eventlog.threads import threads_without_signals
from tri24es.runtime.signals import die_with_parent

#: Longest line handed over in one piece; a longer one arrives in several.
LINE_LIMIT = 1 << 20
#: Between SIGTERM and SIGKILL when the agent's process group is stopped.
GRACE_SECONDS = 5.0
#: How long to wait for the last output once the agent's group is gone.
DRAIN_SECONDS = 5.0

def private_dirs(path: Path) -> None:
    """Create the folder ``path`` and each missing parent 0700 (``mkdir(parents=True)`` would
    make the parents by the umask: 0777 under ``umask 0``)."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), its folder 0700."""
    private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as f:
        f.write(data)


class Agent:
    """A running agent process. Raises OSError when the command cannot be started.

    Spawn it from the thread that stays (the main thread): the parent-death signal follows
    the thread that forked the child, not the process.
    """

    def __init__(
        self, argv: Sequence[str], *, stdin: bytes, env: dict[str, str], log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        private_dirs(log_path.parent)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        log = open(log_fd, "ab", buffering=0)  # noqa: SIM115 - the reader thread closes it
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        except BaseException:
            log.close()
            raise
        self.pid = self.proc.pid
        self.pgid = self.pid  # a new session's leader leads its own process group
        # Readable once the agent has exited, before it is reaped: until then its pid (and
        # so its group id) cannot be reused, and signalling the group is safe.
        self._pidfd = os.pidfd_open(self.pid)
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.returncode: int | None = None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=_read, args=(self.proc.stdout, log, self._lines),
                                        daemon=True, name=f"agent-{self.pid}-output")
        with threads_without_signals():  # SIGUSR1/SIGTERM must reach the worker's main thread
            threading.Thread(target=_feed, args=(self.proc.stdin, stdin), daemon=True,
                             name=f"agent-{self.pid}-stdin").start()
            self._reader.start()

    def read(self, timeout: float) -> list[bytes]:
        """The output lines that arrived since the last call, waiting up to ``timeout``
        seconds for the first one."""
        lines = []
        try:
            lines.append(self._lines.get(timeout=timeout) if timeout > 0 else
                         self._lines.get_nowait())
            while True:
                lines.append(self._lines.get_nowait())
        except queue.Empty:
            return lines

    def exited(self, timeout: float = 0) -> bool:
        """Whether the agent has exited (waiting up to ``timeout``); it is not reaped."""
        if self.returncode is not None:
            return True
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def terminate(self, grace: float = GRACE_SECONDS) -> int:
        """Stop the whole group: SIGTERM, ``grace`` seconds, then SIGKILL. The exit code."""
        if not self.exited():
            self._signal_group(signal.SIGTERM)
            self.exited(grace)
        return self.reap()

    def reap(self) -> int:
        """End what is left of the group (the agent has exited, or is killed now), collect
        its exit code (negative: the signal that ended it) and the rest of its output."""
        if self.returncode is None:
            self._signal_group(signal.SIGKILL)
            self.returncode = self.proc.wait()
            os.close(self._pidfd)
            self._reader.join(DRAIN_SECONDS)
        return self.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)


def _feed(stdin: IO[bytes], data: bytes) -> None:
    # An agent that does not read its input (BrokenPipeError) is free not to.
    with contextlib.suppress(BrokenPipeError), stdin:
        stdin.write(data)


def _read(stdout: IO[bytes], log: IO[bytes], lines: queue.Queue[bytes]) -> None:
    with stdout, log:
        while line := stdout.readline(LINE_LIMIT):
            log.write(line)
            lines.put(line)
