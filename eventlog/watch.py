"""Wake a waiting thread when given files in a directory change (inotify via watchdog)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from eventlog.threads import threads_without_signals

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

#: A re-check however quiet the files are, in case a change notice was missed
#: (e.g. a network file system without inotify). Not a busy poll: once a second.
SAFETY_RECHECK = 1.0
#: After a change notice whose commit is not visible yet: look again after these pauses.
SETTLE_RECHECKS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)


def _handler(names: set[str], changed: threading.Event) -> FileSystemEventHandler:
    # watchdog is imported on use: only followers need it, and every process that opens a
    # store (each CLI command) starts ~10 ms faster without it.
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            src = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
            if Path(src).name in names:
                changed.set()

    return _Handler()


class FileChangeWatcher:
    def __init__(self, directory: Path, names: set[str]) -> None:
        from watchdog.observers import Observer

        self._changed = threading.Event()
        with threads_without_signals():  # watchdog starts threads in all three
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.schedule(
                _handler(names, self._changed), str(directory), recursive=False
            )
            self._observer.start()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Return True as soon as ``condition()`` holds, False once ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        settle: Iterator[float] = iter(())
        while True:
            # Clear before checking: a change that lands after the check still wakes us.
            self._changed.clear()
            if condition():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            pause = next(settle, None)
            if pause is not None:
                # A file changed but the condition does not hold yet: SQLite writes the WAL
                # before the commit becomes visible (then syncs, then updates its index).
                # Look again shortly rather than wait for a notice that will not come.
                time.sleep(min(pause, remaining))
                continue
            if self._changed.wait(min(remaining, SAFETY_RECHECK)):
                settle = iter(SETTLE_RECHECKS)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
