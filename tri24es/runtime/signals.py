"""Signals for long-running processes: handlers that only record what arrived.

The handlers run in the main thread between two bytecodes, wherever it happens to be, so
they take no lock (not even a threading.Event's: the main thread may hold it already) and
touch nothing but a deque, whose append is atomic. The loop that owns the
inbox takes the signals out at its next turn; it waits in short slices, so that is soon.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Iterable, Iterator
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
