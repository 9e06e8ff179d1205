"""In-memory backend: the same contract as SQLite, for fast unit tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from eventlog.errors import DuplicateEventId, EventLogError
from eventlog.model import EMPTY_HEAD, Head, NewEvent, RecordedEvent, stamp, system_clock_us
from eventlog.store import Chimes, CountingDoorbell, Doorbell, EventStore, Transaction


class MemoryTransaction(Transaction):
    """Appends are staged and published to the store only when the transaction commits."""

    def __init__(self, store: MemoryStore) -> None:
        self.scratch = {}
        self._store = store
        self.staged: list[RecordedEvent] = []

    def _all(self) -> Iterator[RecordedEvent]:
        yield from self._store.events
        yield from self.staged

    def stream_version(self, stream: str) -> int:
        staged = [e.version for e in self.staged if e.stream == stream]
        return staged[-1] if staged else self._store.versions.get(stream, 0)

    def last_type(self, stream: str) -> str | None:
        found = [e.type for e in self._all() if e.stream == stream]
        return found[-1] if found else None

    def events_by_id(self, event_ids: list[str]) -> list[RecordedEvent]:
        wanted = set(event_ids)
        return [e for e in self._all() if e.event_id in wanted]

    def head_row(self) -> Head:
        last = self.staged[-1] if self.staged else None
        return self._store.last_head() if last is None else Head(
            last.position, last.recorded_at, last.hash
        )

    def _fresh(self, event_ids: list[str]) -> bool:
        known = {e.event_id for e in self._all()}
        return not any(i in known for i in event_ids) and len(set(event_ids)) == len(event_ids)

    def _insert_recorded(self, events: list[RecordedEvent]) -> None:
        if not self._fresh([e.event_id for e in events]) or any(
            e.version <= self.stream_version(e.stream) for e in events
        ):
            raise DuplicateEventId("some of the copied events are already stored")
        self.staged.extend(events)

    def _insert(
        self, stream: str, version: int, batch: list[NewEvent]
    ) -> list[RecordedEvent] | None:
        if not self._fresh([e.event_id for e in batch]):
            return None
        recorded = stamp(self.head_row(), stream, version, batch, self._store.clock())
        self.staged.extend(recorded)
        return recorded


class MemoryStore(EventStore):
    def __init__(self, *, clock: Callable[[], int] = system_clock_us) -> None:
        self.url = "memory://"
        self.clock = clock
        self.events: list[RecordedEvent] = []
        self.versions: dict[str, int] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._tx: MemoryTransaction | None = None
        self._chimes = Chimes()

    def last_head(self) -> Head:
        if not self.events:
            return EMPTY_HEAD
        last = self.events[-1]
        return Head(last.position, last.recorded_at, last.hash)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        with self._lock:
            if self._tx is not None:
                yield self._tx
                return
            tx = self._tx = MemoryTransaction(self)
            try:
                yield tx
                tx._run_before_commit()
            finally:
                self._tx = None
            for event in tx.staged:
                self.events.append(event)
                self.versions[event.stream] = event.version
            if tx.staged:
                self._changed.notify_all()
            self._chimes.ring(tx.bells())

    def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        with self._lock:
            return [e for e in self.events if e.stream == stream and e.version >= from_version]

    def read_page(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        with self._lock:
            # Positions are 1..n without gaps, so position p sits at index p - 1.
            page = []
            for event in self.events[max(after_position, 0):]:
                if types is None or event.type in types:
                    page.append(event)
                    if len(page) == limit:
                        break
            return page

    def head(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for_change(self, after_position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.events) <= after_position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def doorbell(self, bells: Iterable[str]) -> Doorbell:
        return CountingDoorbell(self._chimes, bells)

    def tamper(self, position: int, event: RecordedEvent) -> None:
        """Replace a stored row (tests of the hash chain only)."""
        if not 1 <= position <= len(self.events):
            raise EventLogError(f"no event at position {position}")
        self.events[position - 1] = event
