"""Wake a waiting thread when given files in a directory change (inotify via watchdog)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from eventlog.store import Doorbell
from eventlog.threads import threads_without_signals

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

#: A re-check however quiet the files are, in case a change notice was missed
#: (e.g. a network file system without inotify). Not a busy poll: once a second.
SAFETY_RECHECK = 1.0
#: After a change notice whose commit is not visible yet: look again after these pauses.
SETTLE_RECHECKS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)


def _handler(names: set[str], changed: threading.Event,
             notice: Callable[[], None] | None) -> FileSystemEventHandler:
    # watchdog is imported on use: only followers need it, and every process that opens a
    # store (each CLI command) starts ~10 ms faster without it.
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            src = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
            if Path(src).name in names:
                changed.set()
                if notice is not None:
                    notice()

    return _Handler()


class _StopRace(logging.Filter):
    """watchdog (7.x) logs an error when its inotify thread reads once more after ``stop()``:
    a race inside it at shutdown, harmless (the thread then ends), whose line would only
    alarm whoever reads a worker's or the watchdog's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def quiet_stop_race() -> None:
    """Drop watchdog's shutdown-race error line (see ``_StopRace``); other lines pass."""
    logger = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _StopRace) for f in logger.filters):
        logger.addFilter(_StopRace())


class FileChangeWatcher:
    """Wakes ``wait_until`` when one of ``names`` in ``directory`` changes; ``names`` may be
    changed in place (under ``lock``) to watch other files of that folder."""

    def __init__(self, directory: Path, names: set[str],
                 notice: Callable[[], None] | None = None) -> None:
        from watchdog.observers import Observer

        quiet_stop_race()
        self.names = names
        self._changed = threading.Event()
        with threads_without_signals():  # watchdog starts threads in all three
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.schedule(
                _handler(names, self._changed, notice), str(directory), recursive=False
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


def bell_file(bell: str) -> str:
    """The file of a doorbell in the bells folder: a digest, whatever the bell's name holds."""
    return hashlib.sha256(bell.encode()).hexdigest()[:32]


#: A bell file is cut back to nothing once it holds this many rings (a change all the same).
BELL_FILE_LIMIT = 65536


def ring_files(directory: Path, bells: Iterable[str]) -> None:
    """Ring doorbells on a shared file system: one byte appended to each bell's file (an
    append is atomic, so no ring is lost between writers); followers watch the sizes."""
    if not bells:
        return
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    for bell in bells:
        try:
            fd = os.open(directory / bell_file(bell),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError:
            continue  # a missed ring costs a follower its wake-up, not data: it looks later
        try:
            if os.write(fd, b".") and os.fstat(fd).st_size > BELL_FILE_LIMIT:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)


#: inotify(7) event masks: a bell file written, made, replaced or removed.
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_BELL_EVENTS = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO
                | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF)


def inotify_fd(directory: Path) -> int | None:
    """A non-blocking inotify descriptor watching ``directory``'s files, readable when one
    changes; None where there is none (not Linux, no instances left)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(directory), _BELL_EVENTS) < 0:
        os.close(fd)
        return None
    return fd


class FileDoorbell(Doorbell):
    """A doorbell on bell files (see ``ring_files``): rings when one of them changes size.

    It waits on an inotify descriptor of its own, read by the follower's own ``select``: no
    watcher threads between the kernel's notice and the follower (watchdog's observer put
    two thread hand-overs, each waiting for the GIL, on the path from a submit's commit to
    a worker's claim). Where inotify cannot be had, watchdog's observer pokes it instead."""

    recheck = SAFETY_RECHECK  # a stat of a few files: cheap enough once a second

    def __init__(self, directory: Path, bells: Iterable[str]) -> None:
        super().__init__()
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        self._directory = directory
        self._paths: list[Path] = []
        self._watcher: FileChangeWatcher | None = None
        notices = inotify_fd(directory)
        if notices is not None:
            # Read and drained by Doorbell.wait like the poke pipe it replaces: any change
            # in the folder wakes the follower, which then compares its own bells' sizes.
            os.close(self._poke_r)
            self._poke_r = notices
        else:
            self._watcher = FileChangeWatcher(directory, set(), notice=self.poke)
        self.listen(bells)

    def listen(self, bells: Iterable[str]) -> None:
        self._paths = [self._directory / bell_file(bell) for bell in sorted(set(bells))]
        if self._watcher is not None:
            self._watcher.names.clear()
            self._watcher.names.update(path.name for path in self._paths)
        self._seen = self._state()

    def _state(self) -> tuple[tuple[int, int] | None, ...]:
        found: list[tuple[int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                found.append(None)
            else:
                found.append((st.st_ino, st.st_size))
        return tuple(found)

    def _rang(self) -> bool:
        state = self._state()
        if state == self._seen:
            return False
        self._seen = state
        return True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        super().close()
