"""PostgreSQL backend: the same contract as SQLite, for a log shared across machines.

Every write transaction starts by taking one transaction-level advisory lock per schema
(``pg_advisory_xact_lock``), reads the head row under it and numbers its events head+1, ...
explicitly. Why not a sequence: two writers draw positions 7 and 8, the one holding 8
commits first, a follower reads 8 and moves past 7, which becomes visible a moment later and
is never read. Under the lock positions are gap-free, and since PostgreSQL makes a commit
visible before it releases the transaction's locks, commits become visible in position
order: any reader sees a prefix of the log, so a follower reading by position never skips an
event. The price is one writer at a time per schema, as with SQLite's single writer.

PUBLISHED. The lock is not held through the flush of the WAL (milliseconds on a disk, most of
a short transaction): an appending transaction commits with ``synchronous_commit = off``, so
the lock is released once its commit is visible, and the next writer's commit can share the
flush (group commit). Durability is waited for in a second transaction, in the same round
trip, which publishes the head in ``eventlog_published`` and commits synchronously: its
commit record follows the first's in the WAL, so once it is flushed (and only then visible)
both are durable. Readers outside a write transaction read up to the published position, so
no reader sees an event that a crash of the server could still take back (its position would
be given again to another event after the restart); a writer's call returns only once the
publication committed. Under the lock a writer reads the whole log: anything it chains onto
was committed before it, so it is durable when the writer's own commit is. A writer gone
between its commit and its publication is published by the next writer (the publication
covers every commit visible to it) or the next process that opens the store.

Followers are woken by LISTEN/NOTIFY: an append's transaction sends the new head position on
the channel ``<schema>_events``; a listener thread per store, on its own connection, hands it
to the waiting threads. The schema (DDL under the same advisory lock) is created on first use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import TupleRow

from eventlog.errors import (
    ConnectionLost,
    DuplicateEventId,
    EventLogError,
    StoreFull,
    StoreLocked,
    StoreReplaced,
    StoreUnavailable,
    WrongExpectedVersion,
)
from eventlog.guards import GUARD_STREAM, GuardsRestored, restored_event
from eventlog.model import (
    ANY,
    EMPTY_HEAD,
    Expected,
    Head,
    NewEvent,
    RecordedEvent,
    redact_url,
    stamp,
    system_clock_us,
    version_matches,
)
from eventlog.pgpipe import DeferringConnection, Rows, Statement
from eventlog.store import Chimes, CountingDoorbell, Doorbell, EventStore, Transaction
from eventlog.threads import threads_without_signals
from eventlog.watch import bell_file

DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 10
#: A re-check however quiet the channel is, in case a notice was lost with its connection.
SAFETY_RECHECK = 1.0
#: An append of at most this many events inserts them as rows of values, more as arrays.
FEW_EVENTS = 8
#: Rows of ``eventlog_published`` (writers' backends spread over them by pid).
PUBLISH_SLOTS = 16

# Lower case only: the name is also a NOTIFY channel (<schema>_events, at most 63 bytes).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,55}")
COLUMNS = "position, stream, version, event_id, type, data, metadata, recorded_at, hash"

# tuple.__new__ straight from C: cheaper than RecordedEvent._make for a million rows.
_row = functools.partial(tuple.__new__, RecordedEvent)


def schema_from_url(url: str) -> str | None:
    """The first schema of ``?options=-csearch_path=...`` in a PostgreSQL URL, if any."""
    for options in parse_qs(urlsplit(url).query).get("options", []):
        found = re.search(r"search_path\s*=\s*([^\s,]+)", options)
        if found:
            return found.group(1).strip("\"'")
    return None


def lock_key(schema: str) -> int:
    """The advisory lock key that serializes writers of ``schema`` (a signed 64-bit int)."""
    digest = hashlib.sha256(f"eventlog:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# SQLSTATEs of a server going away or overloaded (its session terminated, shutting down,
# starting up) and of a full disk: they pass, and a new connection works again.
_CONNECTION_STATES = ("57P01", "57P02", "57P03", "53300", "53400")
_FULL_STATES = ("53100", "53200")
# The schema or its table gone under a running process (dropped, perhaps made anew).
_GONE_STATES = ("42P01", "3F000")


def translate_error(store: PostgresStore, e: psycopg.Error,
                    tx: PostgresTransaction | None = None) -> EventLogError:
    """The one place where a psycopg error becomes an event-log error (``tx``: the
    transaction it ended, if no longer the store's)."""
    message = " ".join(str(e).split())
    state = e.sqlstate or ""
    tx = tx or store._tx
    if tx is not None and tx.conflict is not None \
            and isinstance(e, pg_errors.InFailedSqlTransaction):
        # What a joined caller sends after the conflict: still the conflict (its retry
        # belongs to the outermost call, which starts the transaction again).
        return WrongExpectedVersion(*tx.conflict, None)
    if isinstance(e, pg_errors.NotNullViolation) and e.diag.column_name == "version" \
            and e.diag.table_name == "events" and tx is not None and tx.unchecked:
        # An append_fresh's check failed (see _Queries.insert_fresh): the failing row
        # begins with its position.
        found = re.search(r"\((\d+),", e.diag.message_detail or "")
        at = int(found.group(1)) if found else None
        tx.conflict = next(((s, v) for p, s, v in tx.unchecked if p == at),
                           tx.unchecked[0][1:])
        return WrongExpectedVersion(*tx.conflict, None)
    if not state or isinstance(e, psycopg.InterfaceError) or state.startswith("08") \
            or state in _CONNECTION_STATES:
        # No server error code (refused, unresolvable, lost), or the server ended the session.
        return ConnectionLost(f"cannot use PostgreSQL at {store.display_url}: {message}")
    if state in _FULL_STATES:
        return StoreFull(f"PostgreSQL at {store.display_url}: {message}")
    if state in _GONE_STATES:
        return StoreReplaced(
            f"PostgreSQL schema {store.schema!r} or its events table is gone (dropped since "
            f"this process opened it): {message}")
    if isinstance(e, pg_errors.LockNotAvailable):
        return StoreLocked(
            f"PostgreSQL schema {store.schema!r} is locked by another writer "
            f"(waited {store.lock_timeout:g} s, the lock timeout)"
        )
    if isinstance(e, pg_errors.UniqueViolation) and "event_id" in (e.diag.constraint_name or ""):
        return DuplicateEventId(f"schema {store.schema!r}: {message}")
    if isinstance(e, psycopg.OperationalError | pg_errors.InsufficientPrivilege):
        return StoreUnavailable(f"PostgreSQL at {store.display_url}: {message}")
    return EventLogError(f"PostgreSQL schema {store.schema!r}: {message}")


GUARD_BODY = "BEGIN RAISE EXCEPTION 'events are append-only: % refused', TG_OP; END"


class _Queries:
    """The SQL of one schema, quoted once (the name is checked against SCHEMA_NAME)."""

    def __init__(self, schema: str) -> None:
        events = f'"{schema}".events'
        self.table = events
        self.stream_version = f"SELECT max(version) FROM {events} WHERE stream = %s".encode()
        self.version_and_head = (
            f"SELECT (SELECT max(version) FROM {events} WHERE stream = %s),"
            f" position, recorded_at, hash FROM {events} ORDER BY position DESC LIMIT 1"
        ).encode()
        self.last_type = (
            f"SELECT type FROM {events} WHERE stream = %s ORDER BY version DESC LIMIT 1"
        ).encode()
        self.head_row = (
            f"SELECT position, recorded_at, hash FROM {events} ORDER BY position DESC LIMIT 1"
        ).encode()
        self.by_ids = (
            f"SELECT {COLUMNS} FROM unnest(%s::text[]) AS wanted (id)"
            f" JOIN {events} ON event_id = wanted.id ORDER BY position"
        ).encode()
        # All or nothing: under the advisory lock no one else inserts between the check and
        # the insert, so no row at all is written when one id of the batch is already stored.
        # (A join on unnest, not "= ANY": a cached generic plan chose a sequential scan.)
        self.insert = (
            f"INSERT INTO {events} ({COLUMNS}) SELECT * FROM unnest("
            "%b::bigint[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::bytea[],"
            " %b::bytea[], %b::bigint[], %b::bytea[])"
            " WHERE NOT EXISTS (SELECT 1 FROM unnest(%b::text[]) AS new (id)"
            f" JOIN {events} ON event_id = new.id)"
        ).encode()
        # An append's one look before it writes, under the lock: the stream's version, how
        # many of the batch's ids are stored already, and (on the transaction's first look)
        # the head row. Its INSERT then waits for the next round trip (DeferringConnection):
        # nothing else inserts while the lock is held, so it cannot meet a duplicate.
        # One id is looked up as a plain value, several as an array: psycopg dumps an array
        # in Python (~40 µs for an event's nine columns), a value in C (~2 µs for nine).
        stored = ("(SELECT count(*) FROM unnest(%s::text[]) AS new (id)"
                  f" JOIN {events} ON event_id = new.id)")
        stored_one = f"(SELECT count(*) FROM {events} WHERE event_id = %s)"
        version = f"(SELECT max(version) FROM {events} WHERE stream = %s)"
        head = f" position, recorded_at, hash FROM {events} ORDER BY position DESC LIMIT 1"
        #: (stream, ids) -> the look's statement and parameters; with the head, or not.
        self.look = functools.partial(
            self._look, f"SELECT {version}, {stored}".encode(),
            f"SELECT {version}, {stored_one}".encode())
        self.look_and_head = functools.partial(
            self._look, f"SELECT {version}, {stored},{head}".encode(),
            f"SELECT {version}, {stored_one},{head}".encode())
        # The events of an append: a few as rows of plain values, many as one INSERT of
        # arrays (one statement however many).
        self.insert_rows = (
            f"INSERT INTO {events} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %b, %b, %s, %b)"
        ).encode()
        self.insert_checked = (
            f"INSERT INTO {events} ({COLUMNS}) SELECT * FROM unnest("
            "%b::bigint[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::bytea[],"
            " %b::bytea[], %b::bigint[], %b::bytea[])"
        ).encode()
        # An append whose version the caller read under the lock and whose ids it has just
        # made (append_fresh): no look, the version checked by the INSERT itself. Each row's
        # version is NULL unless the stream is at the expected version when the statement
        # starts, and the NOT NULL constraint then fails the transaction (translated to
        # WrongExpectedVersion); a stored id fails it on the unique key.
        checked = (f"(SELECT CASE WHEN coalesce(max(version), 0) = %s THEN %s::bigint END"
                   f" FROM {events} WHERE stream = %s)")
        row = f"(%s, %s, {checked}, %s, %s, %b, %b, %s, %b)"
        self.insert_fresh = [
            f"INSERT INTO {events} ({COLUMNS}) VALUES {', '.join([row] * n)}".encode()
            for n in range(FEW_EVENTS + 1)]
        # Readers outside a write transaction see the log up to the published position
        # (see PUBLISHED): never an event that a crash of the server could still take back.
        self.published = f'"{schema}".eventlog_published'
        upto = f"(SELECT coalesce(max(position), 0) FROM {self.published})"
        self.published_ddl = (
            f"CREATE TABLE {self.published} (slot integer PRIMARY KEY,"
            " position bigint NOT NULL)").encode()
        # Run in a transaction of its own, committed synchronously: the events visible when
        # it starts were committed before it, so once its own commit is flushed (and only
        # then visible) so are theirs. One row per slot of backends, so that writers do not
        # queue on one row (and on each other's flush, which it would hold).
        self.publish = (
            f"INSERT INTO {self.published} SELECT pg_backend_pid() % {PUBLISH_SLOTS},"
            f" coalesce(max(position), 0) FROM {events} ON CONFLICT (slot) DO UPDATE"
            f" SET position = greatest({self.published}.position, excluded.position)"
        ).encode()
        self.read_stream = (
            f"SELECT {COLUMNS} FROM {events} WHERE stream = %s AND version >= %s"
            f" AND position <= {upto} ORDER BY version"
        ).encode()
        self.read_page = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > %s AND position <= {upto}"
            " ORDER BY position LIMIT %s"
        ).encode()
        self.read_page_of_types = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > %s AND position <= {upto}"
            " AND type = ANY(%s::text[]) ORDER BY position LIMIT %s"
        ).encode()
        self.head = f"SELECT least(max(position), {upto}) FROM {events}".encode()
        # Under the write lock a transaction sees the whole log, published or not.
        self.read_stream_locked = (
            f"SELECT {COLUMNS} FROM {events} WHERE stream = %s AND version >= %s ORDER BY version"
        ).encode()
        self.read_page_locked = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > %s ORDER BY position LIMIT %s"
        ).encode()
        self.read_page_of_types_locked = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > %s AND type = ANY(%s::text[])"
            " ORDER BY position LIMIT %s"
        ).encode()
        self.head_locked = f"SELECT max(position) FROM {events}".encode()
        self.channel = f"{schema}_events"
        key = lock_key(schema)
        self.lock_key = key
        self.meta = f'"{schema}".eventlog_meta'
        # The store's identity comes back with the lock, in the same round trip: a schema
        # dropped and made anew under a running process is noticed before it writes. (Two
        # statements: the lock's own would read the table as it was before the wait.)
        self.begin = b"BEGIN ISOLATION LEVEL READ COMMITTED"
        # A write transaction's statements run on plans made once per connection (generic
        # plans), not planned at each run: planning was half the server's CPU of a cycle,
        # all of it under the lock. What made custom plans necessary (a generic plan made
        # while a table was small scans it whole, and is kept) is ruled out for these
        # transactions by ``enable_seqscan = off``: an index is used wherever one applies,
        # however small the table. (JIT off: the scans the setting penalises, where no
        # index applies, would cross its cost threshold and be compiled at every run.)
        # Local to the transaction: snapshots and reads still plan each statement.
        plans = ("set_config('plan_cache_mode', 'force_generic_plan', true),"
                 " set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)")
        self.lock = (f"SELECT pg_advisory_xact_lock({key}), {plans},"
                     f" (SELECT store_id FROM {self.meta})").encode()
        # The head comes with the lock too (a statement of its own, so read after the wait):
        # the appends of the transaction know where to number from without a look of
        # their own (see PostgresTransaction.append_fresh).
        self.begin_write: list[Statement] = [(self.begin, None), (self.lock, None),
                                             (self.head_row, None)]
        self.store_id = f"SELECT store_id FROM {self.meta}".encode()
        self.meta_ddl = (
            f"CREATE TABLE {self.meta} (store_id text NOT NULL);"
            f" INSERT INTO {self.meta} VALUES (gen_random_uuid()::text)"
        ).encode()
        self.begin_snapshot: list[Statement] = [
            (b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None)]
        self.listen = f'LISTEN "{self.channel}"'.encode()
        self.bells_channel = f"{schema}_bells"
        self.listen_bells = f'LISTEN "{self.bells_channel}"'.encode()
        guard = f'"{schema}".events_are_append_only'
        # The append-only guards, restored as a whole when one is found missing or changed.
        self.guards_ddl = f"""
            CREATE OR REPLACE FUNCTION {guard}() RETURNS trigger
            LANGUAGE plpgsql AS $$ {GUARD_BODY} $$;
            DROP TRIGGER IF EXISTS events_are_append_only ON {events};
            CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON {events}
                FOR EACH ROW EXECUTE FUNCTION {guard}();
            DROP TRIGGER IF EXISTS events_are_append_only_truncate ON {events};
            CREATE TRIGGER events_are_append_only_truncate BEFORE TRUNCATE ON {events}
                FOR EACH STATEMENT EXECUTE FUNCTION {guard}();
        """.encode()
        # Each guard as PostgreSQL describes it: enabled, with its definition and the body
        # of its function (a trigger disabled, redefined or calling a rewritten function is
        # as good as none).
        self.guards = (
            b"SELECT t.tgname, t.tgenabled, pg_get_triggerdef(t.oid), p.prosrc"
            b" FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            b" WHERE t.tgrelid = to_regclass(%s) AND NOT t.tgisinternal"
        )
        # (pg_get_triggerdef leaves out a schema that is on the search path: compared
        # without schema names, see unqualified)
        self.expected_guards = {
            "events_are_append_only": "CREATE TRIGGER events_are_append_only BEFORE DELETE OR"
            " UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_are_append_only()",
            "events_are_append_only_truncate": "CREATE TRIGGER events_are_append_only_truncate"
            " BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION"
            " events_are_append_only()",
        }
        self.unqualified = functools.partial(
            re.compile(rf'"?\b{schema}"?\.').sub, "")
        self.ddl = f"""
            CREATE TABLE {events} (
                position    bigint PRIMARY KEY CHECK (position > 0),
                stream      text   NOT NULL,
                version     bigint NOT NULL CHECK (version > 0),
                event_id    text   NOT NULL,
                type        text   NOT NULL,
                data        bytea  NOT NULL,
                metadata    bytea  NOT NULL,
                recorded_at bigint NOT NULL,
                hash        bytea  NOT NULL,
                CONSTRAINT events_stream_version_key UNIQUE (stream, version),
                CONSTRAINT events_event_id_key UNIQUE (event_id)
            );
        """.encode() + self.guards_ddl

        # The notices of a commit: a channel and a payload each, one statement however many.
        self.notify_sql = (b"SELECT pg_notify(channel, payload)"
                           b" FROM unnest(%s::text[], %s::text[]) AS notice (channel, payload)")
        # The same, setting its transaction not to wait for its flush (one statement fewer
        # than a SET LOCAL); and the usual case, the head alone, as a plain value: no array
        # for psycopg to dump in Python, nothing for the server to plan but a call (a
        # statement with parameters is planned at each run on the store's connection, see
        # _connect).
        no_flush = b"SELECT set_config('synchronous_commit', 'off', true), "
        self.notify_async_sql = no_flush + self.notify_sql[len(b"SELECT "):]
        self.notify_head_async_sql = no_flush + f"pg_notify('{self.channel}', %s)".encode()

    @staticmethod
    def _look(many: bytes, one: bytes, stream: str, ids: list[str]) -> Statement:
        return (one, (stream, ids[0])) if len(ids) == 1 else (many, (stream, ids))

    def notify(self, position: int | None, bells: Iterable[str] = (),
               sql: bytes | None = None) -> Statement:
        # The notices are delivered only if (and once) their transaction's commit is
        # visible. Bells travel as digests (hex), the head as its number.
        channels, payloads = [], []
        if position is not None:
            channels.append(self.channel)
            payloads.append(str(position))
        for bell in bells:
            channels.append(self.bells_channel)
            payloads.append(bell_file(bell))
        return (sql or self.notify_sql, (channels, payloads))

    def commit_appended(self, position: int, bells: Iterable[str] = ()) -> list[Statement]:
        """An appending transaction's end, sent with its waiting writes in one pipeline (one
        round trip): its COMMIT without waiting for the flush, so that the write lock is
        released before it (the next writer's commit may share the flush); then the
        publication, whose synchronous commit waits for the flush of both; then the
        notices, which wake followers once what they announce can be read (see PUBLISHED).
        The notices go in a third transaction, committed without waiting for the flush: a
        transaction that notifies holds a lock of the whole server from its commit until
        its locks are released, after its flush, so publications that notified could not
        share a flush (one flush per cycle whatever the number of writers). (Not ended by
        Syncs in place of BEGIN and COMMIT: libpq sends at each Sync and the server answers
        at each, three writes and wake-ups a side instead of one, for 1.4% of the server's
        instructions of a cycle.)"""
        bells = list(bells)
        notify = self.notify(position, bells, self.notify_async_sql) if bells \
            else (self.notify_head_async_sql, (str(position),))
        return [(b"SET LOCAL synchronous_commit = off", None), (b"COMMIT", None),
                (b"BEGIN", None), (self.publish, None), (b"COMMIT", None),
                (b"BEGIN", None), notify, (b"COMMIT", None)]


class PostgresTransaction(Transaction):
    def __init__(self, store: PostgresStore, connection: DeferringConnection):
        self.connection = connection
        self.scratch = {}
        self._store = store
        self._q = store.queries
        self._head: Head | None = None
        self.appended = False
        self.locked = False  # a write transaction, under the lock (not a snapshot)
        #: (position, stream, expected version) of the events of append_fresh: what a
        #: NULL version (the check failed) is reported as.
        self.unchecked: list[tuple[int, str, int]] = []
        #: (stream, expected version) of the append_fresh whose check failed, if one did.
        self.conflict: tuple[str, int] | None = None

    def begun(self, rows: list[Rows]) -> None:
        """The rows of the transaction's start (BEGIN, the lock, the head): the lock's row
        (lock, store id) must name the store this one opened; the head is kept."""
        _, lock, head = rows
        self._store.check_identity(lock.fetchone())
        row = head.fetchone()
        if self._head is None:  # (not if a look of the same round trip read it)
            self._head = EMPTY_HEAD if row is None else Head(*row)

    @property
    def head_position(self) -> int:
        return 0 if self._head is None else self._head.position

    def stream_version(self, stream: str) -> int:
        if self._head is not None:
            row = self.connection.query(self._q.stream_version, (stream,)).fetchone()
            return int(row[0] or 0) if row else 0
        # The first look of this transaction reads the head (under the lock) with the version.
        row = self.connection.query(self._q.version_and_head, (stream,), binary=True).fetchone()
        if row is None:
            self._head = EMPTY_HEAD
            return 0
        self._head = Head(row[1], row[2], row[3])
        return int(row[0] or 0)

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY,
        origin: int | None = None,
    ) -> list[RecordedEvent]:
        """The common case in one round trip (see ``_Queries.look``), its INSERT sent with
        the next; a version mismatch or an id stored already takes the general path."""
        batch = list(events)
        ids = [e.event_id for e in batch]
        if not batch or len(set(ids)) < len(ids):
            return super().append(stream, batch, expected_version)
        if self._head is None:
            row = self.connection.query(*self._q.look_and_head(stream, ids),
                                        binary=True).fetchone()
            self._head = EMPTY_HEAD if row is None else Head(row[2], row[3], row[4])
        else:
            row = self.connection.query(*self._q.look(stream, ids)).fetchone()
        actual, stored = (0, 0) if row is None else (int(row[0] or 0), int(row[1]))
        if stored or not version_matches(expected_version, actual):
            return super().append(stream, batch, expected_version)
        recorded = stamp(self._head, stream, actual, batch, self._store.clock())
        if len(recorded) <= FEW_EVENTS:
            self.connection.defer(self._q.insert_rows, recorded)
        else:
            columns = [list(column) for column in zip(*recorded, strict=True)]
            self.connection.defer(self._q.insert_checked, [columns])
        last = recorded[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)
        self.appended = True
        return recorded

    def append_fresh(
        self, stream: str, events: Sequence[NewEvent], version: int,
        origin: int | None = None,
    ) -> list[RecordedEvent]:
        """No look: stamped after the head read with the lock, the INSERT (which checks the
        version, see ``_Queries.insert_fresh``) sent with the next round trip."""
        batch = list(events)
        if self._head is None or not batch or len(batch) > FEW_EVENTS:
            return self.append(stream, batch, version)
        recorded = stamp(self._head, stream, version, batch, self._store.clock())
        params: list[object] = []
        for e in recorded:
            params += (e.position, e.stream, version, e.version, stream, e.event_id, e.type,
                       e.data, e.metadata, e.recorded_at, e.hash)
        self.connection.defer(self._q.insert_fresh[len(recorded)], [params])
        self.unchecked.extend((e.position, stream, version) for e in recorded)
        last = recorded[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)
        self.appended = True
        return recorded

    def last_type(self, stream: str) -> str | None:
        row = self.connection.query(self._q.last_type, (stream,)).fetchone()
        return None if row is None else str(row[0])

    def events_by_id(self, event_ids: list[str]) -> list[RecordedEvent]:
        rows = self.connection.query(self._q.by_ids, (event_ids,), binary=True).fetchall()
        return list(map(_row, rows))

    def head_row(self) -> Head:
        if self._head is None:
            row = self.connection.query(self._q.head_row, binary=True).fetchone()
            self._head = EMPTY_HEAD if row is None else Head(*row)
        return self._head

    def _insert_recorded(self, events: list[RecordedEvent]) -> None:
        if not self._write(events):
            raise DuplicateEventId("some of the copied events are already stored")

    def _write(self, recorded: list[RecordedEvent]) -> bool:
        """Insert stamped events unless one of their ids is stored (then nothing is)."""
        ids = [e.event_id for e in recorded]
        if len(set(ids)) < len(ids):
            return False  # a failed INSERT would abort the whole PostgreSQL transaction
        columns: list[object] = [list(column) for column in zip(*recorded, strict=True)]
        rows = self.connection.query(self._q.insert, [*columns, ids])
        if rows.rowcount != len(recorded):
            return False
        last = recorded[-1]
        self._head = Head(last.position, last.recorded_at, last.hash)
        self.appended = True
        return True

    def _insert(
        self, stream: str, version: int, batch: list[NewEvent]
    ) -> list[RecordedEvent] | None:
        recorded = stamp(self.head_row(), stream, version, batch, self._store.clock())
        return recorded if self._write(recorded) else None


class _TransactionScope:
    """``with store.transaction() as tx``: BEGIN + advisory lock ... NOTIFY + COMMIT, or
    ROLLBACK on error. A transaction opened while another is open on the store joins it.
    The BEGIN and the lock go with the transaction's first statement (DeferringConnection:
    one round trip fewer), the store's identity checked before anything it read is used."""

    __slots__ = ("_begin", "_joined", "_store")

    def __init__(self, store: PostgresStore, begin: list[Statement]) -> None:
        self._store = store
        self._begin = begin
        self._joined = False

    def __enter__(self) -> PostgresTransaction:
        store = self._store
        store._lock.acquire()
        if store._tx is not None:
            self._joined = True
            return store._tx
        try:
            connection = store._connection()
            if connection.gone():  # lost since its last use (nothing was sent): a new one
                connection = store._connection()
        except BaseException:
            store._lock.release()
            raise
        locked = self._begin is store.queries.begin_write
        tx = store._tx = PostgresTransaction(store, connection)
        tx.locked = locked
        connection.begin(self._begin, tx.begun if locked else None)
        return tx

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        store = self._store
        tx = store._tx
        try:
            if self._joined:
                return
            store._tx = None
            assert tx is not None
            if exc is not None:
                store._rollback_quietly()
            else:
                try:
                    tx._run_before_commit()
                except BaseException:
                    store._rollback_quietly()
                    raise
                bells = tx.bells()
                q = store.queries
                if tx.connection.untouched() and not bells:
                    tx.connection.discard()  # nothing was sent: nothing to commit
                elif tx.appended:
                    tx.connection.finish(q.commit_appended(tx.head_position, bells))
                else:
                    tx.connection.finish([q.notify(None, bells), (b"COMMIT", None)] if bells
                                         else [(b"COMMIT", None)])
        except psycopg.Error as e:
            store._rollback_quietly()
            if exc is None:
                raise translate_error(store, e, tx) from e
        finally:
            store._lock.release()
        if isinstance(exc, psycopg.Error):
            raise translate_error(store, exc, tx) from exc


class _Listener:
    """LISTENs on its own connection in a thread and tells waiters the newest notified head
    (or, with ``chimes``, counts the doorbells rung)."""

    def __init__(self, connection: psycopg.Connection[TupleRow], listen: bytes,
                 chimes: Chimes | None = None):
        self._connection = connection
        connection.execute(listen)
        self.latest = 0
        self.alive = True
        self._chimes = chimes
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="eventlog-listen", daemon=True)
        with threads_without_signals():
            self._thread.start()

    def _run(self) -> None:
        # Asleep in poll until the server writes (or the safety re-check): psycopg's own
        # notifies(timeout) wakes every 0.1 s to let Ctrl-C in, which this thread blocks
        # anyway, and 30 idle workers' listeners made 600 wake-ups a second of it. Drained
        # without waiting before each sleep: a notice read into libpq's buffer by a drain
        # is handed out by the same drain, and one read with the answer to the LISTEN
        # (which psycopg keeps aside, off the socket) by the first, so none waits behind
        # the next poll. Not select: it refuses a descriptor numbered 1024 or more (a
        # process with many files open).
        try:
            poller = select.poll()
            poller.register(self._connection.fileno(), select.POLLIN)
            while not self._stopping:
                for note in self._connection.notifies(timeout=0):
                    if self._stopping:
                        break
                    if self._chimes is not None:
                        self._chimes.ring([note.payload])
                    elif note.payload.isdigit():
                        with self._changed:
                            self.latest = max(self.latest, int(note.payload))
                            self._changed.notify_all()
                if not self._stopping:
                    poller.poll(SAFETY_RECHECK * 1000)
        except psycopg.Error:
            # The connection is gone: waiters fall back to the safety re-check, and the next
            # wait_for_change starts a new listener; every doorbell wakes to look.
            self.alive = False
            if self._chimes is not None:
                self._chimes.unsure()
        finally:
            self._connection.close()

    def wait_beyond(self, position: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.latest > position, timeout)

    def stop(self, poke: Callable[[], object]) -> None:
        self._stopping = True
        with contextlib.suppress(psycopg.Error):
            poke()  # any notice on the channel ends the thread's wait at once
        self._thread.join(timeout=SAFETY_RECHECK * 2)


class PostgresStore(EventStore):
    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], int] = system_clock_us,
        schema: str | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self.clock = clock
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self.schema = schema or schema_from_url(url) or "public"
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise StoreUnavailable(
                f"schema name {self.schema!r} must be lower-case letters, digits and '_' "
                "(at most 56 characters)"
            )
        self.queries = _Queries(self.schema)
        self.lock_key = self.queries.lock_key
        self._lock = threading.RLock()
        self._tx: PostgresTransaction | None = None
        self._listener: _Listener | None = None
        self._bell_listener: _Listener | None = None
        self._chimes = Chimes()
        self._db = self._connect()
        try:
            self._create_schema()
            with self._errors():
                found = self._db.execute(self.queries.store_id).fetchone()
                # What a writer committed but did not live to publish (see PUBLISHED) is
                # published by the next process that opens the store, if not by a writer.
                with contextlib.suppress(pg_errors.InsufficientPrivilege,
                                         pg_errors.ReadOnlySqlTransaction):
                    self._db.execute(self.queries.publish)
        except BaseException:
            self._db.close()
            raise
        self.store_id: str = found[0] if found else ""
        try:
            self.check_guards()
        except BaseException:
            self._db.close()
            raise

    def _broken_guards(self) -> tuple[str, ...]:
        """The guards missing, disabled or not as created."""
        expected = self.queries.expected_guards
        found = {
            name: (enabled in ("O", "A") and self.queries.unqualified(definition)
                    == expected.get(name)
                   and " ".join(body.split()) == GUARD_BODY)
            for name, enabled, definition, body in self._db.execute(
                self.queries.guards, (self.queries.table,)).fetchall()
        }
        return tuple(name for name in expected if not found.get(name))

    def check_guards(self) -> GuardsRestored | None:
        """Restore missing guards and record it, in one transaction (under the write lock:
        another process may have done it meanwhile)."""
        with self._lock, self._errors():
            if not self._broken_guards():
                return None
        with self.transaction() as tx:
            missing = self._broken_guards()
            if not missing:
                return None
            self._db.execute(self.queries.guards_ddl)
            (recorded,) = tx.append(GUARD_STREAM, [restored_event(missing)])
        self.guards_restored = GuardsRestored(missing, recorded.position)
        return self.guards_restored

    def check_identity(self, row: tuple[object, ...] | None) -> None:
        """StoreReplaced unless ``row`` (lock, store id) names the store this one opened."""
        if row is None or row[-1] != self.store_id:
            raise StoreReplaced(
                f"PostgreSQL schema {self.schema!r} at {self.display_url} is not the store "
                "this process opened (dropped and made anew): stopping rather than writing "
                "to it")

    def _connect(self) -> DeferringConnection:
        try:
            connection = DeferringConnection.connect(
                self.url, autocommit=True, connect_timeout=self.connect_timeout
            )
            # Plans that stay right when the statistics are stale, as they are after a burst
            # of appends. psycopg prepares a statement after a few runs, and a generic plan
            # made while a table was small (a sequential scan) would be kept for the life of
            # the connection: custom plans every time. And the statements on this connection
            # (the log's, and the callers' tables kept in its transactions) are point lookups
            # and ordered ranges with a LIMIT, for which an index scan in order is right; a
            # planner that underestimates a table picks a bitmap scan and sorts all of it.
            connection.execute(
                f"SET lock_timeout = {round(self.lock_timeout * 1000)};"
                " SET plan_cache_mode = force_custom_plan; SET enable_bitmapscan = off".encode()
            )
        except psycopg.Error as e:
            raise translate_error(self, e) from e
        return connection

    def _connection(self) -> DeferringConnection:
        """The store's connection; a new one if the last was lost (never inside a transaction)."""
        if self._db.closed and self._tx is None:
            self._db = self._connect()
        return self._db

    def _run(self, statements: Sequence[Statement], binary: bool = False) -> list[Rows]:
        """Run ``statements`` in one round trip on the store's connection, from outside a
        transaction. If that connection was lost since its last use (the server restarted,
        the session was terminated), they did nothing: they run once more on a new one."""
        connection = self._connection()
        try:
            return connection.run(statements, binary)
        except psycopg.OperationalError:
            if not connection.closed or self._tx is not None:
                raise
            return self._connection().run(statements, binary)

    def _query(self, sql: bytes, params: Sequence[object] | None = None,
               binary: bool = False) -> Rows:
        """One statement, as ``_run``; its rows."""
        return self._run([(sql, params)], binary)[-1]

    def _rollback_quietly(self) -> None:
        self._db.discard()
        if self._db.closed or self._db.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            return  # (nothing sent yet, or the connection gone: the server rolled back)
        with contextlib.suppress(psycopg.Error):
            self._db.finish([(b"ROLLBACK", None)])

    def _create_schema(self) -> None:
        """Create the table and its triggers once, even when several processes start at once."""
        table, meta, published = self.queries.table, self.queries.meta, self.queries.published
        look = b"SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)"
        with self._errors():
            found = self._db.execute(look, (table, meta, published)).fetchone()
            if found is not None and None not in found:
                return
            # A session lock, taken before the transaction: a transaction that waited on an
            # advisory lock would still look names up in the catalog as it was at its start.
            self._db.execute(b"SELECT pg_advisory_lock(%s)", (self.lock_key,))
            try:
                with self._db.transaction():
                    found = self._db.execute(look, (table, meta, published)).fetchone()
                    if found is None or found[0] is None:
                        exists = self._db.execute(
                            b"SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                        ).fetchone()
                        if exists is None:
                            self._db.execute(f'CREATE SCHEMA "{self.schema}"'.encode())
                        self._db.execute(self.queries.ddl)
                    if found is None or found[1] is None:  # new, or made by an older version
                        self._db.execute(self.queries.meta_ddl)
                    if found is None or found[2] is None:  # the same: everything published
                        self._db.execute(self.queries.published_ddl)
                        self._db.execute(self.queries.publish)
            finally:
                self._db.execute(b"SELECT pg_advisory_unlock(%s)", (self.lock_key,))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            raise translate_error(self, e) from e

    def transaction(self) -> _TransactionScope:
        return _TransactionScope(self, self.queries.begin_write)

    def snapshot(self) -> _TransactionScope:
        # No advisory lock: a REPEATABLE READ snapshot never waits for writers.
        return _TransactionScope(self, self.queries.begin_snapshot)

    def _locked(self) -> bool:
        """Whether this thread's reads are made under the write lock (in a transaction), where
        the whole log is read, published or not."""
        return self._tx is not None and self._tx.locked

    def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        with self._lock, self._errors():
            q = self.queries
            rows = self._query(q.read_stream_locked if self._locked() else q.read_stream,
                                 (stream, from_version), binary=True).fetchall()
        return list(map(_row, rows))

    def read_page(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        with self._lock, self._errors():
            q, locked = self.queries, self._locked()
            if types is None:
                found = self._query(q.read_page_locked if locked else q.read_page,
                                    (after_position, limit), binary=True)
            else:
                found = self._query(
                    q.read_page_of_types_locked if locked else q.read_page_of_types,
                    (after_position, list(types), limit), binary=True)
            rows = found.fetchall()
        return list(map(_row, rows))

    def head(self) -> int:
        with self._lock, self._errors():
            row = self._query(self.queries.head_locked if self._locked()
                                else self.queries.head).fetchone()
        return int(row[0] or 0) if row else 0

    def _listening(self) -> _Listener:
        with self._lock:
            if self._listener is None or not self._listener.alive:
                # LISTEN before the first look at the head: a commit after that look is
                # always notified.
                connection = self._connect()
                try:
                    with self._errors():
                        self._listener = _Listener(connection, self.queries.listen)
                except BaseException:
                    connection.close()
                    raise
            return self._listener

    def doorbell(self, bells: Iterable[str]) -> Doorbell:
        return _PostgresDoorbell(self, bells)

    def _bell_listening(self) -> None:
        """A listener for doorbells, on a connection of its own (made anew once lost)."""
        with self._lock:
            if self._bell_listener is None or not self._bell_listener.alive:
                connection = self._connect()
                try:
                    with self._errors():
                        self._bell_listener = _Listener(connection, self.queries.listen_bells,
                                                        self._chimes)
                except BaseException:
                    connection.close()
                    raise

    def wait_for_change(self, after_position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        listener = self._listening()
        while True:
            if listener.latest > after_position or self.head() > after_position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            listener.wait_beyond(after_position, min(remaining, SAFETY_RECHECK))

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                channel = self.queries.channel
                self._listener.stop(
                    lambda: self._db.execute(b"SELECT pg_notify(%s, 'stop')", (channel,))
                )
                self._listener = None
            if self._bell_listener is not None:
                bells = self.queries.bells_channel
                self._bell_listener.stop(
                    lambda: self._db.execute(b"SELECT pg_notify(%s, 'stop')", (bells,)))
                self._bell_listener = None
            self._db.close()


class _PostgresDoorbell(CountingDoorbell):
    """Counts the notifications of its bells (by digest) on the store's bell listener; a
    listener lost meanwhile is made anew on the next wait (and wakes every doorbell once)."""

    def __init__(self, store: PostgresStore, bells: Iterable[str]) -> None:
        self._store = store
        store._bell_listening()
        super().__init__(store._chimes, bells)

    def listen(self, bells: Iterable[str]) -> None:
        super().listen(bell_file(bell) for bell in bells)

    def _rang(self) -> bool:
        with contextlib.suppress(EventLogError):  # the server away: the wait still times out
            self._store._bell_listening()
        return super()._rang()
