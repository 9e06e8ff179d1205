"""Live updates: one thread follows the log head; every open page hears of a move through
server-sent events and fetches its numbers again.

The thread sleeps in the store's ``wait_for_change`` (inotify on SQLite, LISTEN on
PostgreSQL), so an idle dashboard costs nothing however many pages are open; under a flood
of commits it tells the pages at most twice a second (a page then reads its numbers again,
and at 100,000 queued tasks the overview's counts take ~0.1-0.4 s to read).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator

from eventlog import EventLogError, EventStore, TransientStoreError
from eventlog.threads import threads_without_signals

#: At least this long (seconds) between two moves the pages hear of.
PACE = 0.5
#: A comment this often (seconds) keeps proxies and the browser from closing a quiet stream.
KEEPALIVE = 15.0


class HeadWatcher:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.head = store.head()
        self._moved = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Follow the head from now on (called inside the server's event loop)."""
        self._loop = asyncio.get_running_loop()
        with threads_without_signals():  # the server's main thread takes Ctrl-C and SIGTERM
            self._thread = threading.Thread(target=self._follow, name="head-watcher",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _follow(self) -> None:
        head = self.head
        while not self._stop.is_set():
            try:
                self.store.wait_for_change(head, timeout=1.0)
                now = self.store.head()
            except TransientStoreError:  # the pages keep their last numbers meanwhile
                self._stop.wait(1.0)
                continue
            except EventLogError as e:  # replaced or gone: the pages say so when they read
                print(f"serve: live updates stopped: {e}", file=sys.stderr, flush=True)
                return
            if now != head:
                head = now
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._publish, now)
                self._stop.wait(PACE)

    def _publish(self, head: int) -> None:
        self.head = head
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def events(self) -> AsyncIterator[str]:
        """Server-sent events: ``head`` with the position now, then on every move."""
        head = self.head
        yield f"event: head\ndata: {head}\n\n"
        while True:
            if self.head == head:
                try:
                    await asyncio.wait_for(self._moved.wait(), KEEPALIVE)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
            head = self.head
            yield f"event: head\ndata: {head}\n\n"
