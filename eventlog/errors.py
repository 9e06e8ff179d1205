"""The one exception tree of the event log.

Driver errors (sqlite3, psycopg) are converted to these in exactly one place per backend,
always with ``raise ... from e`` so the cause stays visible in a traceback.
"""

from __future__ import annotations


class EventLogError(Exception):
    """The event log failed."""


class WrongExpectedVersion(EventLogError):
    """The stream is not at the version the writer expected; nothing was written."""

    def __init__(self, stream: str, expected: object, actual: int | None) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual  # None: found by the write itself, which does not say
        at = "another version" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream!r}: expected version {expected}, but it is at {at}")


class DuplicateEventId(EventLogError):
    """Some, but not all, of the events in a batch were already stored; nothing was written."""


class TransientStoreError(EventLogError):
    """A fault that heals by itself: try again later. Long-running processes ride these out
    (a lock held past the busy timeout, a lost connection, a full disk, an I/O error);
    every other EventLogError is final for the operation that raised it."""


class StoreLocked(TransientStoreError):
    """The store stayed locked by another writer for longer than the busy timeout."""


class StoreUnavailable(EventLogError):
    """The store cannot be opened or written (bad path, permissions, read-only; and, as the
    transient subclasses say, a lost connection or a full disk)."""


class ConnectionLost(StoreUnavailable, TransientStoreError):
    """The connection to the database server was lost or refused (it may be restarting)."""


class StoreFull(StoreUnavailable, TransientStoreError):
    """The disk holding the store is full, or an I/O error stopped a write."""


class StoreReplaced(StoreUnavailable):
    """The store this process opened was deleted, replaced by another file, or (PostgreSQL)
    its schema dropped or recreated: writing on would write where no one reads."""


class UnsafePath(StoreUnavailable):
    """The database path is a symlink or otherwise unsafe to open."""


class CorruptLog(EventLogError):
    """A stored row does not match the hash chain. ``kind`` is ``changed``, ``missing`` or
    ``reordered`` when the chain was checked from the genesis hash."""

    def __init__(self, position: int, problem: str, kind: str = "changed") -> None:
        self.position = position
        self.problem = problem
        self.kind = kind
        super().__init__(f"position {position}: {problem}")
