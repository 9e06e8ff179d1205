"""The EventStore interface every backend implements, and the behaviour they share."""

from __future__ import annotations

import abc
import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from types import MappingProxyType
from typing import Any, TypeVar

from eventlog.errors import CorruptLog, DuplicateEventId, WrongExpectedVersion
from eventlog.guards import GuardsRestored
from eventlog.model import (
    ANY,
    GENESIS_HASH,
    EventRow,
    Expected,
    Head,
    NewEvent,
    RecordedEvent,
    rehash,
    version_matches,
)

READ_BATCH = 2000
_BEFORE_COMMIT = object()  # the key of the before-commit actions in a transaction's scratch
_BELLS = object()  # the key of the doorbells a transaction rings when it commits

R = TypeVar("R", bound=tuple[Any, ...])


def _chained(prev_hash: bytes, event: RecordedEvent) -> bytes:
    """The hash ``event`` should carry; CorruptLog if a column was changed to another type
    (a row rewritten behind the store's back, e.g. bytes replaced by text)."""
    try:
        return rehash(prev_hash, event)
    except (TypeError, AttributeError) as e:
        raise CorruptLog(event.position, f"changed (a column holds the wrong type: {e})") from e


class Transaction(abc.ABC):
    """One atomic unit: every append in it (and every projection write made through
    ``connection``) commits together or not at all."""

    #: The backend's own connection, for projection tables kept in the same transaction
    #: (sqlite3.Connection, psycopg.Connection; None for the in-memory backend).
    connection: Any = None
    #: The caller's own state for this transaction (e.g. rows it has read and changed),
    #: shared by the appends that join it and dropped with it, committed or not.
    scratch: dict[Any, Any]
    #: What the caller leaves to the store's next write transaction (None: this one carries
    #: nothing over), and what the last one left to this one (``carried``). The store
    #: hands it over only when nothing else wrote to the store in between: the state the
    #: caller keeps there (rows of its views, as that transaction committed them) is then
    #: still the stored one. Empty when anything may have changed; dropped on a rollback.
    carry: dict[Any, Any] | None = None
    carried: Mapping[Any, Any] = MappingProxyType({})

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY,
        origin: int | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to ``stream`` if it is at ``expected_version``.

        Raises WrongExpectedVersion (writing nothing) on a mismatch. Events whose ids are all
        already stored are an idempotent no-op: the stored events are returned.

        ``origin``: the position of the stream's first event, if the caller knows it (a
        hint: SQLite reaches the stream by it instead of by its name; a wrong one costs a
        look by name, never a wrong result). Other backends ignore it.
        """
        batch = list(events)
        if not batch:
            return []
        actual = self.stream_version(stream)
        if not version_matches(expected_version, actual):
            stored = self._already_stored(batch)
            if stored is not None:
                return stored
            raise WrongExpectedVersion(stream, expected_version, actual)
        recorded = self._insert(stream, actual, batch)
        if recorded is None:
            stored = self._already_stored(batch)
            if stored is not None:
                return stored
            raise DuplicateEventId(
                f"stream {stream!r}: some events of the batch are already stored, some are not"
            )
        return recorded

    def append_fresh(
        self, stream: str, events: Sequence[NewEvent], version: int,
        origin: int | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events``, whose ids were just made (none is stored), to ``stream`` at
        ``version``, which the caller read in this transaction (a view's row).

        As ``append``, except that a backend may check the version with the write instead
        of reading it first: then a mismatch raises WrongExpectedVersion from a later
        statement of the transaction or from its commit (whose ``actual`` may be None),
        and the whole transaction rolls back. A stored id is an error, not a no-op.
        ``origin``: as for ``append``, a hint."""
        return self.append(stream, events, version, origin)

    def before_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` just before this transaction commits, and not if it rolls back:
        for a write that only the transaction's final state needs (once, however many
        appends join it). An action that raises rolls the transaction back."""
        self.scratch.setdefault(_BEFORE_COMMIT, []).append(action)

    def _run_before_commit(self) -> None:
        for action in self.scratch.get(_BEFORE_COMMIT, ()):
            action()

    def ring(self, bells: Iterable[str]) -> None:
        """Ring these doorbells once this transaction commits (never if it rolls back): the
        followers waiting on one of them wake (see ``EventStore.doorbell``)."""
        self.scratch.setdefault(_BELLS, set()).update(bells)

    def bells(self) -> set[str]:
        """The doorbells this transaction rings when it commits."""
        found: set[str] = self.scratch.get(_BELLS, set())
        return found

    def copy_in(self, events: Sequence[RecordedEvent]) -> None:
        """Store events recorded in another store exactly as they are (positions, versions,
        times, hashes): how a log moves between backends. They must continue this log: the
        first follows the head, and each one's hash follows from its predecessor's, so a
        copy that arrives changed is refused (CorruptLog) and nothing of it is written."""
        if not events:
            return
        head = self.head_row()
        position, prev, recorded_at = head.position, head.hash, head.recorded_at
        for event in events:
            position += 1
            if event.position != position:
                raise CorruptLog(event.position, f"arrived where position {position} belongs")
            if event.recorded_at < recorded_at:
                raise CorruptLog(event.position, "recorded before its predecessor")
            if _chained(prev, event) != event.hash:
                raise CorruptLog(event.position, "changed (hash does not match its contents)")
            prev, recorded_at = event.hash, event.recorded_at
        self._insert_recorded(list(events))

    @abc.abstractmethod
    def head_row(self) -> Head:
        """The last event's position, time and hash (EMPTY_HEAD for an empty log)."""

    @abc.abstractmethod
    def _insert_recorded(self, events: list[RecordedEvent]) -> None:
        """Write already-stamped events as they are; raise if any of them is stored."""

    def _already_stored(self, batch: list[NewEvent]) -> list[RecordedEvent] | None:
        found = self.events_by_id([e.event_id for e in batch])
        if len(found) == len(batch):
            return found
        if found:
            raise DuplicateEventId(
                f"{len(found)} of {len(batch)} events of the batch are already stored"
            )
        return None

    @abc.abstractmethod
    def stream_version(self, stream: str) -> int:
        """The stream's last version, 0 when it has no events."""

    @abc.abstractmethod
    def last_type(self, stream: str) -> str | None:
        """The type of the stream's last event (None when it has none): one index step, for
        a caller that checks a view against the log where it matters."""

    @abc.abstractmethod
    def events_by_id(self, event_ids: list[str]) -> list[RecordedEvent]:
        """The stored events among ``event_ids``, in position order."""

    @abc.abstractmethod
    def _insert(
        self, stream: str, version: int, batch: list[NewEvent]
    ) -> list[RecordedEvent] | None:
        """Write the batch after ``version``; None (and nothing written) on a duplicate id."""


class Doorbell(abc.ABC):
    """Wakes a follower when one of its bells rang (a transaction that rang it committed).

    ``fileno()`` is a descriptor that turns readable when a bell may have rung: a loop can
    wait on it in ``select`` beside other things (a signal's wake-up pipe), then ask
    ``wait(0)`` whether one did."""

    #: However quiet the bells, look again this often (a notice may be missed).
    recheck: float = float("inf")

    def __init__(self) -> None:
        self._poke_r, self._poke_w = os.pipe()
        os.set_blocking(self._poke_r, False)
        os.set_blocking(self._poke_w, False)

    def fileno(self) -> int:
        return self._poke_r

    def poke(self) -> None:
        """A bell may have rung: wake whoever waits on ``fileno()`` (any thread may call)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._poke_w, b"!")

    def wait(self, timeout: float) -> bool:
        """True as soon as one of the bells rang since this doorbell was made (or listened
        anew) or last said True; False after ``timeout``. May say True when it cannot tell
        (a lost connection): the follower looks, finds nothing, and waits again."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._poke_r, 4096):
                    pass
            if self._rang():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # poll, not select, which refuses a descriptor numbered 1024 or more.
            poller = select.poll()
            poller.register(self._poke_r, select.POLLIN)
            poller.poll(min(remaining, self.recheck) * 1000)

    @abc.abstractmethod
    def _rang(self) -> bool:
        """Whether one of the bells rang since the last look (and note that it did)."""

    @abc.abstractmethod
    def listen(self, bells: Iterable[str]) -> None:
        """Listen to these bells from now on, instead of the ones before."""

    def close(self) -> None:
        """Stop listening."""
        for fd in (self._poke_r, self._poke_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Chimes:
    """How often each bell rang, as one process heard it: shared by the doorbells of one
    store (the in-memory backend counts its own commits; PostgreSQL counts notifications)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._unsure = 0  # bumped when rings may have been missed: every doorbell wakes
        self._lock = threading.Lock()
        self._doorbells: set[Doorbell] = set()

    def ring(self, bells: Iterable[str]) -> None:
        with self._lock:
            for bell in bells:
                self._counts[bell] = self._counts.get(bell, 0) + 1
            doorbells = list(self._doorbells)
        for doorbell in doorbells:
            doorbell.poke()

    def unsure(self) -> None:
        """Rings may have been missed (e.g. with a lost connection): wake every doorbell."""
        with self._lock:
            self._unsure += 1
            doorbells = list(self._doorbells)
        for doorbell in doorbells:
            doorbell.poke()

    def state(self, bells: Sequence[str]) -> tuple[int, ...]:
        with self._lock:
            return (self._unsure, *(self._counts.get(bell, 0) for bell in bells))

    def attach(self, doorbell: Doorbell) -> None:
        with self._lock:
            self._doorbells.add(doorbell)

    def detach(self, doorbell: Doorbell) -> None:
        with self._lock:
            self._doorbells.discard(doorbell)


class CountingDoorbell(Doorbell):
    def __init__(self, chimes: Chimes, bells: Iterable[str]) -> None:
        super().__init__()
        self._chimes = chimes
        self.listen(bells)
        chimes.attach(self)

    def listen(self, bells: Iterable[str]) -> None:
        self._bells = sorted(set(bells))
        self._seen = self._chimes.state(self._bells)

    def _rang(self) -> bool:
        state = self._chimes.state(self._bells)
        if state == self._seen:
            return False
        self._seen = state
        return True

    def close(self) -> None:
        self._chimes.detach(self)
        super().close()


class EventStore(abc.ABC):
    """An append-only, hash-chained log of events grouped in versioned streams."""

    url: str
    #: Set when opening found the append-only guards missing and restored them (recorded in
    #: the log): the opener reports it (see ``eventlog.guards``).
    guards_restored: GuardsRestored | None = None

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """An atomic unit of appends (and projection writes)."""

    def snapshot(self) -> contextlib.AbstractContextManager[Transaction]:
        """A consistent read of the log and the views, without blocking writers where the
        backend allows it. For reading only: append in ``transaction()``."""
        return self.transaction()

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> list[RecordedEvent]:
        with self.transaction() as tx:
            return tx.append(stream, events, expected_version)

    @abc.abstractmethod
    def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` on, in version order."""

    @abc.abstractmethod
    def read_page(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """At most ``limit`` events after ``after_position``, in position order."""

    def read_all(
        self,
        after_position: int = 0,
        types: Iterable[str] | None = None,
        until_position: int | None = None,
        batch_size: int = READ_BATCH,
    ) -> Iterator[RecordedEvent]:
        """Every event after ``after_position`` in position order, read in batches so that
        memory stays constant however long the log is."""
        # chain, not a generator: no Python frame is resumed per event.
        return chain.from_iterable(
            self.read_pages(after_position, types, until_position, batch_size)
        )

    def read_pages(
        self,
        after_position: int = 0,
        types: Iterable[str] | None = None,
        until_position: int | None = None,
        batch_size: int = READ_BATCH,
    ) -> Iterator[list[RecordedEvent]]:
        """``read_all`` a page at a time: for readers that decode or apply events in bulk."""
        wanted = None if types is None else sorted(set(types))
        return paged(
            lambda after: self.read_page(after, batch_size, wanted),
            after_position, until_position, batch_size,
        )

    def read_payload_pages(
        self,
        after_position: int = 0,
        until_position: int | None = None,
        batch_size: int = READ_BATCH,
        types: Iterable[str] | None = None,
    ) -> Iterator[Sequence[EventRow]]:
        """``read_pages`` for readers that decode every event and do not check the chain (a
        replay): each row holds a RecordedEvent's first eight fields, in its order, and may
        be a plain tuple without the hash. By default the rows are RecordedEvents; a backend
        may read less (SQLite: no hash, no namedtuple per row)."""
        return self.read_pages(after_position, types, until_position, batch_size)

    @abc.abstractmethod
    def head(self) -> int:
        """The position of the last event, 0 when the log is empty."""

    @abc.abstractmethod
    def wait_for_change(self, after_position: int, timeout: float) -> bool:
        """Block until an event after ``after_position`` is committed (True) or the timeout
        passes (False). Wakes on a commit by any process, without busy polling."""

    @abc.abstractmethod
    def doorbell(self, bells: Iterable[str]) -> Doorbell:
        """A follower's doorbell on ``bells``: it wakes only when a transaction that rang one
        of them commits (in any process), not on every commit. A follower that only cares
        about some events (a worker: work to claim, its own control, the kill switch) sleeps
        through the rest."""

    def check_guards(self) -> GuardsRestored | None:
        """Check the append-only guards now (a backend does it when it opens the store):
        restore any found missing, record that in the log, and say so (None: all there)."""
        return None

    def verify(self) -> int:
        """Check the hash chain of the whole log; the number of events checked.

        Raises CorruptLog naming the first position that does not follow from its predecessor.
        """
        return check_chain(self.read_all())[0]

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections and watchers."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_chain(events: Iterable[RecordedEvent]) -> tuple[int, bytes]:
    """Check that ``events`` are the log from position 1, each chained from its predecessor
    back to the genesis hash: how many there are and the head hash. Raises CorruptLog (kind
    ``reordered``, ``missing`` or ``changed``) at the first position that does not follow."""
    prev, expected, count = GENESIS_HASH, 1, 0
    for event in events:
        if event.position < expected:
            raise CorruptLog(event.position, f"reordered (found after position {expected - 1})",
                             "reordered")
        if event.position > expected:
            raise CorruptLog(expected, f"missing (positions jump from {expected - 1} to "
                             f"{event.position})", "missing")
        if _chained(prev, event) != event.hash:
            raise CorruptLog(event.position, "changed (hash does not match its contents)")
        prev, expected, count = event.hash, expected + 1, count + 1
    return count, prev


def position_at(store: EventStore, at_us: int) -> int:
    """The last position recorded at or before ``at_us`` (microseconds; 0 if none).

    ``recorded_at`` never decreases along the log, so a binary search over positions finds
    it in a few dozen one-row reads, however long the log is.
    """
    lo, hi = 0, store.head()  # lo is at or before the moment; every position above hi after
    while lo < hi:
        mid = (lo + hi + 1) // 2
        page = store.read_page(mid - 1, 1)
        if page and page[0].position <= hi and page[0].recorded_at <= at_us:
            lo = page[0].position
        else:
            hi = mid - 1
    return lo


def paged(
    read_page: Callable[[int], list[R]],
    after_position: int,
    until_position: int | None,
    batch_size: int,
) -> Iterator[list[R]]:
    """Pages from ``read_page(after)`` until a short page, cut at ``until_position``. Rows are
    tuples with the position first."""
    position = after_position
    while True:
        page = read_page(position)
        if not page:
            return
        if until_position is not None and page[-1][0] > until_position:
            page = [e for e in page if e[0] <= until_position]
            if page:
                yield page
            return
        yield page
        if len(page) < batch_size:
            return
        position = page[-1][0]
