"""Signals for long-running processes: handlers that only record what arrived.

The handlers run in the main thread between two bytecodes, wherever it happens to be, so
they take no lock (not even a threading.Event's: the main thread may hold it already) and
touch nothing but a deque, whose append is atomic. The loop that owns the
inbox takes the signals out at its next turn; it waits in short slices, so that is soon.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

#: What the worker listens to: pause, resume, stop now (exit 0), interrupt (exit 1).
WORKER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class SignalInbox:
    """The signals received and not yet handled, oldest first."""

    def __init__(self) -> None:
        self._received: deque[signal.Signals] = deque()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signal.Signals(signum))

    def take(self) -> list[signal.Signals]:
        """Every signal received since the last call."""
        taken = []
        while self._received:
            taken.append(self._received.popleft())
        return taken

    def __bool__(self) -> bool:
        return bool(self._received)


@contextmanager
def received_signals(signums: Iterable[signal.Signals] = WORKER_SIGNALS) -> Iterator[SignalInbox]:
    """Install handlers that put ``signums`` into an inbox; restore the previous handlers on
    exit (also when the body raises). Main thread only, as ``signal.signal`` requires."""
    inbox = SignalInbox()
    previous: dict[signal.Signals, signal._HANDLER] = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, inbox._handler)
        yield inbox
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Wakeup:
    """A pipe to wait on in ``select``: a signal writes to it (``signal_wakeup``) and so may
    another thread (``poke``), so the waiting loop wakes at once."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is due anyway
            os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write_fd)


@contextmanager
def signal_wakeup() -> Iterator[Wakeup]:
    """A :class:`Wakeup` the interpreter writes to when a signal arrives
    (``signal.set_wakeup_fd``), for the duration of the block. Main thread only."""
    wake = Wakeup()
    previous = signal.set_wakeup_fd(wake._write_fd, warn_on_full_buffer=False)
    try:
        yield wake
    finally:
        signal.set_wakeup_fd(previous)
        wake.close()


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(signum: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` (it runs in the child between fork and exec) asking the kernel to send
    the child ``signum`` when the thread that forked it ends (``PR_SET_PDEATHSIG``). The libc
    function is looked up before the fork: after a fork in a threaded process, the child
    should call no more than it must."""
    prctl = _LIBC.prctl if _LIBC is not None else None
    number, parent = int(signum), os.getpid()

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os.kill(os.getpid(), number)

    return preexec
