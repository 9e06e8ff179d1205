"""A domain-free, append-only, hash-chained event store.

Knows nothing of tasks, workers or pydantic: streams of versioned events with JSON bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from eventlog.errors import (
    ConnectionLost,
    CorruptLog,
    DuplicateEventId,
    EventLogError,
    StoreFull,
    StoreLocked,
    StoreReplaced,
    StoreUnavailable,
    TransientStoreError,
    UnsafePath,
    WrongExpectedVersion,
)
from eventlog.guards import GUARD_RESTORED, GUARD_STREAM, GuardsRestored
from eventlog.model import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    STREAM_EXISTS,
    EventRow,
    Expected,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    chain_hash,
    redact_url,
    rehash,
    system_clock_us,
)
from eventlog.store import Doorbell, EventStore, Transaction, check_chain, position_at

__all__ = [
    "ANY",
    "GENESIS_HASH",
    "GUARD_RESTORED",
    "GUARD_STREAM",
    "NO_STREAM",
    "STREAM_EXISTS",
    "ConnectionLost",
    "CorruptLog",
    "Doorbell",
    "DuplicateEventId",
    "EventLogError",
    "EventRow",
    "EventStore",
    "Expected",
    "ExpectedVersion",
    "GuardsRestored",
    "NewEvent",
    "RecordedEvent",
    "StoreFull",
    "StoreLocked",
    "StoreReplaced",
    "StoreUnavailable",
    "Transaction",
    "TransientStoreError",
    "UnsafePath",
    "WrongExpectedVersion",
    "chain_hash",
    "check_chain",
    "open_store",
    "position_at",
    "redact_url",
    "rehash",
    "sqlite_path",
]


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL or bare path; None for any other kind of URL.

    ``sqlite:///state/x.db`` is relative, ``sqlite:////abs/x.db`` absolute (as SQLAlchemy).
    """
    if "://" not in url:
        return url
    if url.startswith("sqlite:///"):
        return unquote(url[len("sqlite:///"):])
    return None


def open_store(
    url: str,
    *,
    busy_timeout: float | None = None,
    synchronous: str | None = None,
    clock: Callable[[], int] = system_clock_us,
) -> EventStore:
    """Open the store at ``url``: ``sqlite:///path``, a bare path, ``memory://`` or
    ``postgresql://...`` (its schema from ``?options=-csearch_path%3DNAME``, else public;
    ``busy_timeout`` is PostgreSQL's lock timeout, ``synchronous`` is for SQLite only)."""
    path = sqlite_path(url)
    if path is not None:
        from eventlog.sqlite import DEFAULT_BUSY_TIMEOUT, SQLiteStore

        if not path:
            raise StoreUnavailable(f"no database path in {url!r}")
        return SQLiteStore(
            path,
            busy_timeout=DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout,
            synchronous=synchronous or "NORMAL",
            clock=clock,
        )
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from eventlog.memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme in ("postgresql", "postgres"):
        try:
            from eventlog.postgres import DEFAULT_LOCK_TIMEOUT, PostgresStore
        except ImportError as e:
            raise StoreUnavailable(
                "a postgresql:// store needs psycopg: pip install 'tri24es[postgres]'"
            ) from e
        return PostgresStore(
            url,
            clock=clock,
            lock_timeout=DEFAULT_LOCK_TIMEOUT if busy_timeout is None else busy_timeout,
        )
    raise StoreUnavailable(
        f"unsupported store URL {url!r}: use sqlite:///PATH, a file path, or postgresql://..."
    )
