"""Helper threads that never take a process's signals.

The kernel hands a process-wide signal (Ctrl-C, SIGTERM, SIGUSR1) to any thread that does
not block it. Landing in a helper thread, it runs the Python handler only when the main
thread next wakes from its wait (a follower waits up to a second). Threads started inside
``threads_without_signals`` inherit a mask that blocks every signal, so the main thread
gets them all: its wait is interrupted and the handler runs at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def threads_without_signals() -> Iterator[None]:
    """Block every signal in this thread for the block's duration: threads started in it
    inherit the mask and keep it (a signal that arrives meanwhile waits, and comes after)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
