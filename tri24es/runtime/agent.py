"""One attempt of one task: the agent process, its output, and how it ends.

The agent runs under its keeper (``runtime/shim.py``), in a session of its own: the keeper
ends the agent's whole process tree when the agent exits, when the worker stops the attempt,
when the worker dies (even by SIGKILL), and when the worker stops beating (after each lease
renewal) for longer than the guard, so a stalled worker's agent is gone before its lease runs
out. The agent gets the task text on stdin and never through a shell. A reader thread copies
its output (stdout and stderr, merged) line by line into the attempt's log and hands each
line to the worker, which parses spend from it while the agent still runs; a log that
cannot be opened (it is opened once the agent is up) or written (a full disk) is reported
once (``log_error``) and the output still reaches the worker.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from eventlog.threads import threads_without_signals
from tri24es.files import UnsafeFolder, open_private
from tri24es.procinfo import is_same_process, leftovers, start_time

#: Longest line handed over in one piece; a longer one arrives in several.
LINE_LIMIT = 1 << 20
#: Between SIGTERM and SIGKILL when the agent's process tree is stopped.
GRACE_SECONDS = 5.0
#: How long to wait for the last output once the agent's tree is gone (the keeper has ended
#: every process that could hold the pipe open: its end comes at once but for a backlog).
DRAIN_SECONDS = 30.0
#: On top of the keeper's own grace, before the worker kills the keeper itself.
KEEPER_SLACK = 2.0
#: The longest the worker gives way to a starting agent (see ``Keeper.spawned``).
SPAWN_WAIT = 0.1
#: The longest the worker then gives way to the agent's own start (see ``Keeper.settled``).
START_WAIT = 0.05
#: The keeper's first line on the outcome pipe, once the agent's process has started.
SPAWNED = "spawned"
SHIM = Path(__file__).with_name("shim.py")


@dataclass(frozen=True)
class Outcome:
    """How an attempt's process tree ended."""

    why: str  # exited | terminated | orphaned | lost | failed
    code: int | None  # the agent's exit code (negative: the signal that ended it)
    detail: str = ""  # for ``failed``: why the agent could not be started

    @property
    def lost(self) -> bool:
        """Ended by the keeper because the worker stopped beating (stalled past the guard)."""
        return self.why == "lost"


def parse_report(text: str) -> Outcome:
    """The keeper's report on its outcome pipe: ``spawned`` once the agent started, then
    the outcome line; none (the keeper was killed): ``killed``."""
    lines = [line for line in text.splitlines() if line.strip() and line.strip() != SPAWNED]
    return parse_outcome(lines[-1]) if lines else Outcome("killed", None)


def parse_outcome(line: str) -> Outcome:
    why, _, rest = line.strip().partition(" ")
    if why == "failed":
        return Outcome(why, None, rest)
    try:
        status = int(rest)
    except ValueError:
        return Outcome(why or "killed", None)
    return Outcome(why, None if status < 0 else os.waitstatus_to_exitcode(status))


class Keeper:
    """A keeper process started ahead of its attempt (a *spare*): the interpreter is up and
    waiting when the task is claimed, so the agent starts at once. Raises OSError when it
    cannot be started."""

    def __init__(self, guard: float, grace: float = GRACE_SECONDS) -> None:
        beats_r, beats_w = os.pipe()
        outcome_r, outcome_w = os.pipe()
        order_r, order_w = os.pipe()
        self.grace = grace
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SHIM), "--beats", str(beats_r),
                 "--outcome", str(outcome_w), "--guard", repr(guard), "--grace", repr(grace),
                 "--order", str(order_r)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(beats_r, outcome_w, order_r),
            )
        except BaseException:
            for fd in (beats_r, beats_w, outcome_r, outcome_w, order_r, order_w):
                os.close(fd)
            raise
        for fd in (beats_r, outcome_w, order_r):
            os.close(fd)
        os.set_blocking(beats_w, False)
        self.beats, self.outcome_fd, self.order = beats_w, outcome_r, order_w
        self.pid = self.proc.pid  # it leads the attempt's session and group
        self.start_time = start_time(self.pid)
        # Readable once the keeper has exited, before it is reaped: until then its pid (and
        # so the group id) cannot be reused, and signalling the group is safe.
        self.pidfd = os.pidfd_open(self.pid)

    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]

    def start(self, argv: Sequence[str], env: dict[str, str], cwd: Path | None) -> None:
        """Start the attempt: the agent's command line, environment and folder."""
        order = orjson.dumps({"argv": list(argv), "env": env,
                              "cwd": None if cwd is None else str(cwd)}) + b"\n"
        try:
            os.write(self.order, order)  # one write: a pipe takes 64 KB at once
        finally:
            os.close(self.order)

    def spawned(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the keeper has started the agent's process, or
        failed to, or ended. The worker gives way meanwhile: on a busy machine its own next
        steps (its input, reader threads, the log, the next spare keeper) would take
        the CPU from the keeper being woken and the agent being started."""
        select.select([self.outcome_fd, self.pidfd], [], [], timeout)

    def settled(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the agent's first output, or its attempt's end:
        the worker's own next steps (the log's folder and file made, threads started) would
        take a core from an agent starting on a busy machine. Its input is written first."""
        assert self.proc.stdout is not None
        select.select([self.proc.stdout.fileno(), self.pidfd], [], [], timeout)

    def discard(self) -> None:
        """Let an unused spare go (it exits when its order pipe closes)."""
        with contextlib.suppress(OSError):
            os.close(self.order)
        self.proc.wait()
        for fd in (self.pidfd, self.beats, self.outcome_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Agent:
    """A running attempt: the keeper and, under it, the agent. A missing agent command is
    reported by ``outcome()`` as ``failed``.

    The keeper ends the attempt once no ``beat()`` came for its guard.
    """

    def __init__(
        self, keeper: Keeper, argv: Sequence[str], *, stdin: bytes, env: dict[str, str],
        log_path: Path, cwd: Path | None = None, root: Path | None = None,
    ) -> None:
        keeper.start(argv, env, cwd)
        keeper.spawned(SPAWN_WAIT)
        assert keeper.proc.stdin is not None
        rest = _offer(keeper.proc.stdin, stdin)  # an agent reading its input first has it
        # Then the agent has the machine to itself for its first steps (its first output,
        # its end, or START_WAIT): its output waits in the pipe meanwhile.
        keeper.settled(START_WAIT)
        # The log is opened once the agent is up: it is the worker's copy of the output (which
        # waits in the pipe meanwhile), not something the agent needs, and opening it (a new
        # folder per task, the private-folder checks) was a tenth of the way to the agent's
        # start. It holds what the agent prints (tokens too): never in someone else's folder.
        # If it cannot be opened, nothing is written anywhere, and the attempt is ended at
        # its first turn (``log_error``) like one whose log stops taking writes.
        log: IO[bytes] | None = None
        self.log_error: str | None = None  # why the log could not be written, if so
        self.refused: UnsafeFolder | None = None  # the log's place belongs to someone else
        try:
            log = open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, root,
                               buffering=0)
        except UnsafeFolder as e:
            self.refused, self.log_error = e, str(e)
        except OSError as e:
            self.log_error = f"cannot open the agent's log: {e.strerror or e}"
        self.keeper = keeper
        self.proc = keeper.proc
        self.grace = keeper.grace
        self._beats, self._outcome_fd = keeper.beats, keeper.outcome_fd
        self.pid = keeper.pid
        self.pgid = self.pid
        self.start_time = keeper.start_time
        self._pidfd = keeper.pidfd
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._outcome: Outcome | None = None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout, log),
                                        daemon=True, name=f"agent-{self.pid}-output")
        with threads_without_signals():  # SIGUSR1/SIGTERM must reach the worker's main thread
            if rest is not None:
                threading.Thread(target=_feed, args=(self.proc.stdin, rest), daemon=True,
                                 name=f"agent-{self.pid}-stdin").start()
            self._reader.start()

    def beat(self) -> None:
        """Tell the keeper the worker holds the lease still (after each renewal)."""
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._beats, b".")

    def read(self, timeout: float, limit: int | None = None) -> list[bytes]:
        """The output lines that arrived since the last call (at most ``limit``), waiting up
        to ``timeout`` seconds for the first one."""
        lines = []
        try:
            lines.append(self._lines.get(timeout=timeout) if timeout > 0 else
                         self._lines.get_nowait())
            while limit is None or len(lines) < limit:
                lines.append(self._lines.get_nowait())
        except queue.Empty:
            pass
        return lines

    def exited(self, timeout: float = 0) -> bool:
        """Whether the attempt has ended (waiting up to ``timeout``); it is not reaped."""
        if self._outcome is not None:
            return True
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def terminate(self) -> Outcome:
        """Stop the whole tree: the keeper sends SIGTERM, waits its grace, then SIGKILLs
        what is left; a keeper that does not end in time is killed with its group."""
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            self.exited(self.grace + KEEPER_SLACK)
        return self.outcome()

    def outcome(self) -> Outcome:
        """How the attempt ended: the keeper's report (after ending whatever is left of the
        attempt, the keeper included), once its output is collected."""
        if self._outcome is None:
            if not self.exited():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
            self.proc.wait()
            os.close(self._pidfd)
            os.close(self._beats)
            with open(self._outcome_fd, "rb") as report:
                self._outcome = parse_report(report.read().decode(errors="replace"))
            self._reader.join(DRAIN_SECONDS)
        return self._outcome

    def _read(self, stdout: IO[bytes], log: IO[bytes] | None) -> None:
        with stdout, log if log is not None else contextlib.nullcontext():
            while line := stdout.readline(LINE_LIMIT):
                if log is not None and self.log_error is None:
                    try:
                        log.write(line)
                    except OSError as e:  # e.g. the disk is full: the output still counts
                        self.log_error = f"cannot write the agent's log: {e.strerror or e}"
                self._lines.put(line)


#: In the environment of every process of an attempt: found by it even when its keeper is gone
#: and it left the attempt's session.
ATTEMPT_KEY = "TRI24ES_ATTEMPT_KEY"


def end_leftovers(keeper: int, started: int, key: str | None,
                  grace: float = GRACE_SECONDS) -> bool:
    """End what is left on this host of an earlier attempt whose keeper was ``keeper``,
    started at ``started``: the keeper itself (asked to end its tree), then every process
    still in its session or carrying its key, started since. A recycled pid is never
    signalled. Whether anything was left."""
    tag = None if key is None else f"{ATTEMPT_KEY}={key}".encode()
    found = is_same_process(keeper, started) or bool(leftovers(keeper, started, tag))
    if is_same_process(keeper, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper, signal.SIGTERM)
        try:
            pidfd = os.pidfd_open(keeper)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            select.select([pidfd], [], [], grace + KEEPER_SLACK)
            os.close(pidfd)
    left = leftovers(keeper, started, tag)
    for _ in range(100):  # each sweep catches what forked during the last
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        left = leftovers(keeper, started, tag)
    return found


def _offer(stdin: IO[bytes], data: bytes) -> bytes | None:
    """Write what the pipe takes of ``data`` now, without waiting; closed once it is all
    written. What is left for ``_feed`` (None: nothing)."""
    fd = stdin.fileno()
    written = 0
    try:
        os.set_blocking(fd, False)
        while written < len(data):
            written += os.write(fd, data[written:written + 65536])
    except BlockingIOError:  # the pipe is full: the agent reads the rest later
        os.set_blocking(fd, True)
        return data[written:]
    except BrokenPipeError:  # an agent that does not read its input is free not to
        pass
    with contextlib.suppress(BrokenPipeError):
        stdin.close()
    return None


def _feed(stdin: IO[bytes], data: bytes) -> None:
    # An agent that does not read its input (BrokenPipeError) is free not to.
    with contextlib.suppress(BrokenPipeError), stdin:
        stdin.write(data)
