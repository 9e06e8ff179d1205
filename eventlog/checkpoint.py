"""WAL checkpoints off the commit path.

SQLite's own autocheckpoint runs inside the COMMIT that fills the WAL past its threshold:
that one commit copies thousands of pages back into the database and syncs twice, and on
average it costs every append about 15%. Here a commit only nudges a thread, which runs
PASSIVE checkpoints on its own connection: they never block a writer or a reader, and SQLite
releases the GIL while it copies, so the copy runs on another core.

A checkpoint that overlaps commits never catches up with the WAL's end, and SQLite starts
the WAL over only once one has. So when the thread finds the WAL past ``OVERDUE_FRAMES``, the
next commit checkpoints inline, between two of its own transactions, as SQLite's
autocheckpoint would: by then the thread has copied most frames, and the next commit
starts the WAL over. (A RESTART checkpoint from the thread would do it too, but it stops
every writer for as long as any reader holds an old snapshot.)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from eventlog.threads import threads_without_signals

#: Commits gather this long before a checkpoint runs: at most a few checkpoints a second.
PACE = 0.05
#: WAL frames past which a commit checkpoints inline, to start the WAL over (16 MB of 2 KB).
OVERDUE_FRAMES = 8000


class Checkpointer:
    """A daemon thread that checkpoints one database soon after its commits."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._nudged = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._overdue = False  # set by the thread, cleared by a commit that catches up

    def committed(self, db: sqlite3.Connection) -> None:
        """``db`` (the store's connection) just committed: checkpoint soon, or now if overdue.
        Cheap enough for every commit."""
        if self._thread is None:
            self._start()
        if not self._nudged.is_set():  # set() takes a lock: not on every append
            self._nudged.set()
        if self._overdue:
            _, left = checkpoint(db)
            self._overdue = left > 0

    def _start(self) -> None:
        self._nudged, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._nudged, self._stopping),
            name="eventlog-checkpoint", daemon=True,
        )
        with threads_without_signals():
            self._thread.start()

    def stop(self) -> None:
        """End the thread (the store's close). Whatever the WAL still holds, the last
        connection to close checkpoints, or any later writer's checkpointer."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._nudged.set()
        thread.join()
        self._thread = None

    def _run(self, nudged: threading.Event, stopping: threading.Event) -> None:
        try:
            db = self._connect()
        except sqlite3.Error:
            return  # the store's own connection reports what is wrong with the file
        try:
            # stop() sets ``stopping`` before ``nudged``: a nudge this loop clears after stop
            # began is seen as ``stopping`` by the loop's test.
            while not stopping.is_set():
                nudged.wait()
                if stopping.wait(PACE):  # let commits gather; return at once on stop
                    return
                nudged.clear()
                frames, _ = checkpoint(db)
                self._overdue = frames > OVERDUE_FRAMES
        finally:
            db.close()


def checkpoint(db: sqlite3.Connection) -> tuple[int, int]:
    """Copy what the WAL holds into the database without blocking anyone (PASSIVE). Returns
    the frames in the WAL, and how many of them are not copied yet (0: it has caught up, and
    the next commit starts the WAL over)."""
    try:
        busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return 0, 0  # the file went away, or the like: the store's own connection reports it
    frames = max(int(frames), 0)
    return frames, frames if busy else frames - max(int(copied), 0)
