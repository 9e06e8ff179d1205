"""SQLite backend: the embedded default.

One file in WAL mode. A write transaction starts with ``BEGIN IMMEDIATE`` so that writers
queue on SQLite's own lock (waiting up to the busy timeout) instead of failing half-way;
positions are assigned under that lock, which keeps them gap-free and the hash chain linear.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import sqlite3
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from eventlog.checkpoint import Checkpointer
from eventlog.errors import (
    EventLogError,
    StoreFull,
    StoreLocked,
    StoreReplaced,
    StoreUnavailable,
    UnsafePath,
)
from eventlog.guards import GUARD_STREAM, GuardsRestored, restored_event
from eventlog.model import (
    ANY,
    EMPTY_HEAD,
    EventRow,
    Expected,
    Head,
    NewEvent,
    RecordedEvent,
    stamp,
    system_clock_us,
)
from eventlog.store import READ_BATCH, EventStore, Transaction, paged
from eventlog.watch import FileChangeWatcher, FileDoorbell, ring_files

# The events table. A stream's events are found by ``origin``, the position of its first
# event, rather than by its name: the streams a worker reaches one after another (tasks
# claimed in the order they were submitted) then sit side by side in the index, instead of
# each on a page of its own among a million names (a page read from the disk per claim when
# the cache is cold). Names are indexed only for first events (version 1): by name, what
# maps a name to its origin; by origin, what checks that an origin a caller gives (a hint)
# is that stream's, dozens of streams to a page (the events themselves are a few to a page).
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    metadata    BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL,
    hash        BLOB    NOT NULL,
    origin      INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_streams ON events (stream) WHERE version = 1;
CREATE UNIQUE INDEX IF NOT EXISTS events_versions ON events (origin, version);
CREATE INDEX IF NOT EXISTS events_origins ON events (position, stream) WHERE version = 1;
"""

#: The append-only guards, as SQLite keeps their text in sqlite_schema (checked on open).
GUARDS = {
    f"events_are_append_only_{op.lower()}": (
        f"CREATE TRIGGER events_are_append_only_{op.lower()} BEFORE {op} ON events\n"
        f"BEGIN SELECT RAISE(ABORT, 'events are append-only: {op} refused'); END"
    )
    for op in ("UPDATE", "DELETE")
}

COLUMNS = "position, stream, version, event_id, type, data, metadata, recorded_at, hash"
VALUES = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9"  # a RecordedEvent's fields, in order
ORIGIN_OF = "(SELECT position FROM events WHERE stream = {} AND version = 1)"


@dataclasses.dataclass(frozen=True, slots=True)
class Statements:
    """The statements that differ between the two layouts of the events table."""

    #: Any events (a RecordedEvent's nine fields each).
    insert: str
    #: A single event after the version before its own, the stream found by name (the nine
    #: fields); refused (IntegrityError: a NOT NULL column left NULL, no row written) when
    #: the stream is not at that version (or, by origin, is new).
    insert_checked: str
    #: The same, the stream found by its origin (the nine fields and the origin); refused
    #: when the stream is elsewhere or the origin is not that stream's. None: no origins.
    insert_at: str | None
    stream_version: str
    version_and_head: str
    last_type: str
    read_stream: str


_HEAD = "position, recorded_at, hash FROM events ORDER BY position DESC LIMIT 1"
# The checked inserts are INSERT ... VALUES whose checks make a NOT NULL column NULL, not
# INSERT ... SELECT ... WHERE: a SELECT that reads the table it inserts into is copied into
# a temporary table first (the row and its payload written twice), and that copy was about
# half of what each append (a claim's, a completion's) cost in SQL.
CURRENT = Statements(
    insert=(f"INSERT INTO events ({COLUMNS}, origin) VALUES ({VALUES},"
            f" CASE WHEN ?3 = 1 THEN ?1 ELSE {ORIGIN_OF.format('?2')} END)"),
    insert_checked=(
        f"INSERT INTO events ({COLUMNS}, origin) VALUES ({VALUES},"
        f" (SELECT o FROM (SELECT {ORIGIN_OF.format('?2')} AS o)"
        " WHERE (SELECT max(version) FROM events WHERE origin = o) = ?3 - 1))"),
    insert_at=(
        f"INSERT INTO events ({COLUMNS}, origin) VALUES ({VALUES}, CASE"
        " WHEN (SELECT stream FROM events INDEXED BY events_origins"
        " WHERE position = ?10 AND version = 1) = ?2"
        " AND (SELECT max(version) FROM events WHERE origin = ?10) = ?3 - 1 THEN ?10 END)"),
    stream_version=f"SELECT max(version) FROM events WHERE origin = {ORIGIN_OF.format('?')}",
    version_and_head=(f"SELECT (SELECT max(version) FROM events WHERE origin ="
                      f" {ORIGIN_OF.format('?')}), {_HEAD}"),
    last_type=(f"SELECT type FROM events WHERE origin = {ORIGIN_OF.format('?')}"
               " ORDER BY version DESC LIMIT 1"),
    read_stream=(f"SELECT {COLUMNS} FROM events WHERE origin = {ORIGIN_OF.format('?')}"
                 " AND version >= ? ORDER BY version"),
)
#: Files made before origins: ``UNIQUE (stream, version)``, the stream found by name (they
#: keep working as they are; ``tri24es migrate`` to a new file gives the current layout).
LEGACY = Statements(
    insert=f"INSERT INTO events ({COLUMNS}) VALUES ({VALUES})",
    insert_checked=(
        f"INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, CASE"
        " WHEN coalesce((SELECT max(version) FROM events WHERE stream = ?2), 0) = ?3 - 1"
        " THEN ?3 END, ?4, ?5, ?6, ?7, ?8, ?9)"),
    insert_at=None,
    stream_version="SELECT max(version) FROM events WHERE stream = ?",
    version_and_head=f"SELECT (SELECT max(version) FROM events WHERE stream = ?), {_HEAD}",
    last_type="SELECT type FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1",
    read_stream=(f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version >= ?"
                 " ORDER BY version"),
)
SELECT_PAYLOADS = (
    "SELECT position, stream, version, event_id, type, data, metadata, recorded_at"
    " FROM events WHERE position > ?{types} ORDER BY position LIMIT ?"
)
SELECT_HEAD = f"SELECT {_HEAD}"

# tuple.__new__ straight from C: cheaper than RecordedEvent._make for a million rows.
_row = functools.partial(tuple.__new__, RecordedEvent)

DEFAULT_BUSY_TIMEOUT = 5.0
# Each event touches three b-trees (rows, origin/version, event id; a stream's first event
# two more, its name by name and by position), and a commit writes
# every page it touched to the WAL whole: 2 KB pages write half the bytes of the default
# 4 KB, for rows of a few hundred bytes (set when the file is created; later no-op).
PAGE_SIZE = 2048
# Checkpoints run in a thread (eventlog.checkpoint), not inside some unlucky commit; reads
# go through mmap.
TUNING = ("wal_autocheckpoint = 0", "cache_size = -16000", "mmap_size = 268435456")
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


# SQLite's result codes (the low byte of an extended code), and the one extended code read.
_BUSY, _LOCKED, _IOERR, _FULL, _READONLY_DBMOVED = 5, 6, 10, 13, 1032


def translate_error(store: SQLiteStore, e: sqlite3.Error) -> EventLogError:
    """The one place where a sqlite3 error becomes an event-log error."""
    message = str(e)
    path = store.path
    code = getattr(e, "sqlite_errorcode", None) or 0
    if code == _READONLY_DBMOVED:
        return StoreReplaced(f"database {path} was moved or deleted since it was opened")
    if code & 0xFF in (_BUSY, _LOCKED) or "locked" in message or "busy" in message:
        return StoreLocked(
            f"database {path} is locked by another process "
            f"(waited {store.busy_timeout:g} s, the busy timeout)"
        )
    if code & 0xFF in (_FULL, _IOERR):  # may clear: space freed, a transient device error
        why = "" if code & 0xFF == _FULL else " (the disk may be full, or failing)"
        return StoreFull(f"database {path}: {message}{why}")
    if isinstance(e, sqlite3.OperationalError) and any(
            word in message for word in ("readonly", "disk", "unable to open", "I/O")):
        return StoreUnavailable(f"database {path}: {message}")
    return EventLogError(f"database {path}: {message}")


@contextlib.contextmanager
def translate_errors(store: SQLiteStore) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise translate_error(store, e) from e


def prepare_path(path: Path) -> None:
    """Create the database file 0600 in a 0700 directory; refuse a symlinked path."""
    if path.is_symlink():
        raise UnsafePath(f"refusing to open {path}: it is a symbolic link")
    for folder in reversed([path.parent, *path.parent.parents]):
        if folder.exists():
            continue
        try:  # each missing folder 0700: mkdir(parents=True) makes the parents by the umask
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as e:
            raise StoreUnavailable(f"cannot create {folder}: {e.strerror}") from e
        folder.chmod(0o700)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(f"refusing to open {path}: not a regular file") from None
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"refusing to open {path}: it is a symbolic link") from e
        raise StoreUnavailable(f"cannot create {path}: {e.strerror}") from e
    os.fchmod(fd, 0o600)
    os.close(fd)


class SQLiteTransaction(Transaction):
    def __init__(self, store: SQLiteStore, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.scratch = {}
        self._store = store
        self._head: Head | None = None
        #: PRAGMA data_version when this write transaction began (None: a snapshot).
        self._data_version: int | None = None

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY,
        origin: int | None = None,
    ) -> list[RecordedEvent]:
        """A single event at an exact version is one INSERT that checks the version (the
        stream found by ``origin`` when given: see ``SCHEMA``), after a look at the head
        if the transaction does not know it yet; so is each event of a batch given its
        stream's origin. Anything else, or a mismatch, takes the general path (which
        decides what a mismatch or a stored id means)."""
        sql = self._store.statements
        if type(expected_version) is not int or not events:
            return super().append(stream, events, expected_version)
        if len(events) != 1:
            if origin is None or expected_version == 0 or sql.insert_at is None:
                return super().append(stream, events, expected_version)
            return self._append_at(stream, events, expected_version, origin)
        if self._head is None:
            self.head_row()
        assert self._head is not None
        recorded = stamp(self._head, stream, expected_version, list(events), self._store.clock())
        try:
            if expected_version == 0 and sql.insert_at is not None:
                # A new stream: its first event is its origin (a stream of that name
                # already stored fails the index on names: the general path says so).
                self.connection.execute(sql.insert, recorded[0])
            elif origin is not None and sql.insert_at is not None:
                self.connection.execute(sql.insert_at, (*recorded[0], origin))
            else:
                self.connection.execute(sql.insert_checked, recorded[0])
        except sqlite3.IntegrityError:
            # The stream is not at that version, or an id (or the new stream) is stored
            # already: nothing written.
            return super().append(stream, events, expected_version)
        last = recorded[0]
        self._head = Head(last.position, last.recorded_at, last.hash)
        return recorded

    def _append_at(
        self, stream: str, events: Sequence[NewEvent], expected_version: int, origin: int
    ) -> list[RecordedEvent]:
        """A batch, each event checked by its stream's origin (a failure, then a requeue):
        all of it written, or none of it and the general path."""
        recorded = stamp(self.head_row(), stream, expected_version, list(events),
                         self._store.clock())
        insert_at = self._store.statements.insert_at
        assert insert_at is not None
        self.connection.execute("SAVEPOINT batch")
        try:
            try:
                self.connection.executemany(insert_at, [(*event, origin) for event in recorded])
                written = True
            except sqlite3.IntegrityError:  # a stream elsewhere, or an id stored already
                written = False
            if not written:
                self.connection.execute("ROLLBACK TO batch")
        finally:
            self.connection.execute("RELEASE batch")
        if not written:
            return super().append(stream, events, expected_version)
        last = recorded[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)
        return recorded

    def stream_version(self, stream: str) -> int:
        sql = self._store.statements
        if self._head is not None:
            row = self.connection.execute(sql.stream_version, (stream,)).fetchone()
            return int(row[0] or 0)
        # First look in this transaction: read the head with the version, in one statement.
        row = self.connection.execute(sql.version_and_head, (stream,)).fetchone()
        if row is None:
            self._head = EMPTY_HEAD
            return 0
        self._head = Head(row[1], row[2], row[3])
        return int(row[0] or 0)

    def last_type(self, stream: str) -> str | None:
        row = self.connection.execute(self._store.statements.last_type, (stream,)).fetchone()
        return None if row is None else str(row[0])

    def events_by_id(self, event_ids: list[str]) -> list[RecordedEvent]:
        marks = ",".join("?" * len(event_ids))
        rows = self.connection.execute(
            f"SELECT {COLUMNS} FROM events WHERE event_id IN ({marks}) ORDER BY position",
            event_ids,
        ).fetchall()
        return list(map(_row, rows))

    def head_row(self) -> Head:
        if self._head is None:
            row = self.connection.execute(SELECT_HEAD).fetchone()
            self._head = EMPTY_HEAD if row is None else Head(*row)
        return self._head

    def _insert_recorded(self, events: list[RecordedEvent]) -> None:
        # A failure rolls the transaction back.
        self.connection.executemany(self._store.statements.insert, events)
        last = events[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)

    def _insert(
        self, stream: str, version: int, batch: list[NewEvent]
    ) -> list[RecordedEvent] | None:
        head = self.head_row()
        recorded = stamp(head, stream, version, batch, self._store.clock())
        insert = self._store.statements.insert
        try:
            if len(recorded) == 1:
                self.connection.execute(insert, recorded[0])
            else:
                # A failing row must not leave the rows before it in this transaction.
                self.connection.execute("SAVEPOINT batch")
                try:
                    self.connection.executemany(insert, recorded)
                except sqlite3.IntegrityError:
                    self.connection.execute("ROLLBACK TO batch")
                    raise
                finally:
                    self.connection.execute("RELEASE batch")
        except sqlite3.IntegrityError as e:
            if "event_id" in str(e):
                return None
            raise
        last = recorded[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)
        return recorded


WRITE = "BEGIN IMMEDIATE"


class _TransactionScope:
    """``with store.transaction() as tx``: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error.

    A class rather than a generator-based context manager: it sits on the append hot path.
    A transaction opened while another is open on the same store joins it.
    """

    __slots__ = ("_begin", "_joined", "_store")

    def __init__(self, store: SQLiteStore, begin: str = WRITE) -> None:
        self._store = store
        self._begin = begin
        self._joined = False

    def __enter__(self) -> SQLiteTransaction:
        store = self._store
        store._lock.acquire()
        if store._tx is not None:
            self._joined = True
            return store._tx
        try:
            store.check_identity()
            store._db.execute(self._begin)
            tx = SQLiteTransaction(store, store._db)
            if self._begin is WRITE:
                store._hand_over(tx)
        except sqlite3.Error as e:
            if store._db.in_transaction:
                store._db.execute("ROLLBACK")
            store._lock.release()
            raise translate_error(store, e) from e
        except BaseException:
            if store._db.in_transaction:
                store._db.execute("ROLLBACK")
            store._lock.release()
            raise
        store._tx = tx
        return tx

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        store = self._store
        rings: set[str] = set()
        try:
            if self._joined:
                return
            tx, store._tx = store._tx, None
            assert tx is not None
            if exc is None:
                try:
                    tx._run_before_commit()
                except BaseException:
                    store._db.execute("ROLLBACK")
                    raise
                store._db.execute("COMMIT")
                rings = tx.bells()
                if self._begin is WRITE:  # a snapshot added nothing to checkpoint or carry
                    store._committed(tx)
                    store._checkpointer.committed(store._db)
            else:
                store._db.execute("ROLLBACK")
        except sqlite3.Error as e:
            if store._db.in_transaction:
                store._db.execute("ROLLBACK")
            if exc is None:
                raise translate_error(store, e) from e
        finally:
            store._lock.release()
        if rings:  # once committed: a follower that wakes sees what the bell is about
            ring_files(store.bells_dir, rings)
        if isinstance(exc, sqlite3.Error):
            raise translate_error(store, exc) from exc


class SQLiteStore(EventStore):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        synchronous: str = "NORMAL",
        clock: Callable[[], int] = system_clock_us,
    ) -> None:
        self.path = Path(path).absolute()
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous.upper()
        self.clock = clock
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise StoreUnavailable(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        self._lock = threading.RLock()
        self._tx: SQLiteTransaction | None = None
        #: What the last write transaction left to the next, and when (``_hand_over``).
        self._left: tuple[int, int, Head | None, dict[Any, Any]] | None = None
        self._watcher: FileChangeWatcher | None = None
        prepare_path(self.path)
        # A file this user may not write (an auditor's copy, another account's store) is
        # opened read-only: reads work, an append fails with SQLite's "readonly" error.
        self.read_only = not os.access(self.path, os.W_OK)
        # The file as opened, held open: once it is deleted or replaced (renamed over), it has
        # no link left, and this process must not go on writing where no one reads.
        try:
            self._file = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise StoreUnavailable(f"cannot open {self.path}: {e.strerror}") from e
        self._checkpointer = Checkpointer(self._connect)
        try:
            self._open()
            self.statements = self._statements()
        except BaseException:
            os.close(self._file)
            raise

    def _open(self) -> None:
        with self._errors():
            try:
                self._db = self._connect()
            except sqlite3.OperationalError as e:
                if self.path.is_symlink():
                    raise UnsafePath(f"refusing to open {self.path}: it is a symbolic link") from e
                raise
            if not self.read_only:
                self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                self._db.execute("PRAGMA journal_mode = WAL")
            for pragma in TUNING:
                self._db.execute(f"PRAGMA {pragma}")
            if not self._broken_guards():
                return  # opening to read must not wait for the write lock
            if self.read_only:
                if not self._has_table():
                    raise StoreUnavailable(f"{self.path} is read-only and holds no event log")
                return  # a copy to read: missing guards are for audit verify to report
            if not self._has_table():
                try:
                    self._db.executescript(
                        "BEGIN IMMEDIATE;" + SCHEMA + ";".join(GUARDS.values()) + ";COMMIT;")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                return
        self.statements = self._statements()  # (the guards are restored by an append)
        self._restore_guards()

    def check_guards(self) -> GuardsRestored | None:
        with self._lock, self._errors():
            if not self._broken_guards():
                return None
        return self._restore_guards()

    def _restore_guards(self) -> GuardsRestored | None:
        """A log whose guards are gone: restore them and record it, in one transaction
        (another process may have done so meanwhile: then nothing is left to do)."""
        with self.transaction() as tx:
            missing = self._broken_guards()
            if not missing:
                return None
            for name in missing:
                tx.connection.execute(f"DROP TRIGGER IF EXISTS {name}")
                tx.connection.execute(GUARDS[name])
            (recorded,) = tx.append(GUARD_STREAM, [restored_event(missing)])
        self.guards_restored = GuardsRestored(missing, recorded.position)
        return self.guards_restored

    def _hand_over(self, tx: SQLiteTransaction) -> None:
        """Begin a write transaction with what the last one left (its head, the caller's
        ``carry``) if nothing wrote to the file since it committed: no other connection (the
        file's data_version, under the write lock just taken) and no statement of this one
        outside a transaction of this store (its count of changed rows)."""
        (tx._data_version,) = self._db.execute("PRAGMA data_version").fetchone()
        tx.carry = {}
        left, self._left = self._left, None
        if left is not None and left[0] == tx._data_version and left[1] == self._db.total_changes:
            tx._head, tx.carried = left[2], left[3]

    def _committed(self, tx: SQLiteTransaction) -> None:
        """What a committed write transaction leaves to the next (see ``_hand_over``)."""
        if tx._data_version is not None and tx.carry is not None:
            self._left = (tx._data_version, self._db.total_changes, tx._head, tx.carry)

    def check_identity(self) -> None:
        """StoreReplaced if the file this store opened was deleted or replaced since."""
        if self._file >= 0 and os.fstat(self._file).st_nlink == 0:
            raise StoreReplaced(
                f"database {self.path} was deleted or replaced after this process opened it: "
                "stopping rather than writing to a file no one reads (restart to use the "
                "file now at that path)"
            )

    def _connect(self) -> sqlite3.Connection:
        """A connection to the file (the checkpointer opens its own), at the store's
        synchronous setting: a checkpoint syncs as that setting says."""
        uri = "file:" + urllib.parse.quote(str(self.path)) + "?nofollow=1"
        if self.read_only:
            uri += "&mode=ro"
            # WAL readers share a -shm file: without one, and no right to create it, the
            # file is read as it stands (no writer can be at work: it would have made one).
            shm = self.path.with_name(self.path.name + "-shm")
            if not shm.exists() and not os.access(self.path.parent, os.W_OK):
                uri += "&immutable=1"
        db = sqlite3.connect(
            uri, uri=True, timeout=self.busy_timeout, isolation_level=None,
            check_same_thread=False,
        )
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        return db

    def _statements(self) -> Statements:
        """The statements of this file's layout of the events table (see ``LEGACY``)."""
        with self._errors():
            found = self._db.execute(
                "SELECT 1 FROM pragma_table_info('events') WHERE name = 'origin'").fetchone()
        return LEGACY if found is None else CURRENT

    def _has_table(self) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'events'").fetchone()
        return found is not None

    def _broken_guards(self) -> tuple[str, ...]:
        """The guards missing or not as created (all of them for a new file), in one read."""
        found = dict(self._db.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall())
        return tuple(name for name, sql in GUARDS.items() if found.get(name) != sql)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self)

    def transaction(self) -> _TransactionScope:
        return _TransactionScope(self)

    def snapshot(self) -> _TransactionScope:
        # A deferred BEGIN takes no write lock: readers never queue behind writers in WAL.
        return _TransactionScope(self, "BEGIN")

    def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        with self._lock, self._errors():
            rows = self._db.execute(self.statements.read_stream, (stream, from_version)).fetchall()
        return list(map(_row, rows))

    def read_page(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        sql = f"SELECT {COLUMNS} FROM events WHERE position > ?"
        params: list[object] = [after_position]
        if types is not None:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params.extend(types)
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        with self._lock, self._errors():
            # Straight from the cursor: no intermediate list of plain tuples.
            return list(map(_row, self._db.execute(sql, params)))

    def read_payload_pages(
        self,
        after_position: int = 0,
        until_position: int | None = None,
        batch_size: int = READ_BATCH,
        types: Iterable[str] | None = None,
    ) -> Iterator[list[EventRow]]:
        # Plain tuples of the eight columns a decoder reads: the hash and a RecordedEvent per
        # row are a fifth of what reading costs, and a replay needs neither.
        wanted = [] if types is None else sorted(set(types))
        sql = SELECT_PAYLOADS.format(
            types="" if types is None else f" AND type IN ({','.join('?' * len(wanted))})"
        )

        def read_page(after: int) -> list[EventRow]:
            with self._lock, self._errors():
                return self._db.execute(sql, (after, *wanted, batch_size)).fetchall()

        return paged(read_page, after_position, until_position, batch_size)

    def head(self) -> int:
        self.check_identity()  # followers look here first: a replaced file stops them too
        with self._lock, self._errors():
            row = self._db.execute("SELECT max(position) FROM events").fetchone()
        return int(row[0] or 0)

    def wait_for_change(self, after_position: int, timeout: float) -> bool:
        with self._lock:
            if self._watcher is None:
                # A commit writes the -wal file; inotify tells us at once, in any process.
                self._watcher = FileChangeWatcher(
                    self.path.parent, {self.path.name, self.path.name + "-wal"}
                )
        return self._watcher.wait_until(lambda: self.head() > after_position, timeout)

    @property
    def bells_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".bells")

    def doorbell(self, bells: Iterable[str]) -> FileDoorbell:
        return FileDoorbell(self.bells_dir, bells)

    def close(self) -> None:
        self._checkpointer.stop()
        with self._lock:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
            self._db.close()
            if self._file >= 0:
                os.close(self._file)
                self._file = -1
