"""The store's PostgreSQL connection: a transaction's statements sent in one pipeline per
round trip, prepared once, with psycopg's cursors left out of the hot path.

Issue #20: a claim+complete cycle cost ~2 ms of client CPU, ~70% of it psycopg's Python
around each statement (its cursor, query conversion, preparation bookkeeping, pipeline
queue): about 90 µs a statement, twenty statements a cycle. Here a round trip is a handful
of calls into psycopg's C layer: the parameters dumped by psycopg's own adapters
(``Transformer.dump_sequence``, out of band: never formatted into the SQL text), each
statement sent with libpq's ``PQsendQueryPrepared`` in pipeline mode, the results gathered
by psycopg's C generators and loaded by its loaders. Statements are prepared on the server
once seen a few times (psycopg's own preparation is off on this connection, so ``DEALLOCATE
ALL`` touches only ours), which also spares the server parsing them again.

A write whose result nothing reads (``defer``: the events' INSERT, the views' saves, the
checkpoint) waits on the client and goes out in the same pipeline as the transaction's next
query, or its COMMIT (``finish``). Every query sends what waits before it, so a transaction
still reads its own writes, in order; a write that fails raises there and the transaction
rolls back as it would have.
"""

from __future__ import annotations

import re
import select
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq
from psycopg.abc import Params, QueryNoTemplate
from psycopg.abc import Transformer as TransformerType
from psycopg.adapt import PyFormat, Transformer
from psycopg.rows import RowFactory, TupleRow, tuple_row

#: A statement is prepared on the server when seen this many times (a one-off, such as a
#: lookup of a varying number of ids, is not), and at most this many per connection.
PREPARE_AFTER = 2
PREPARED_MAX = 200

# psycopg's placeholders: %s (either format), %b (binary), %t (text); %% is a percent sign.
_PLACEHOLDER = re.compile(rb"%[sbt%]")
_FORMATS = {b"%s": PyFormat.AUTO, b"%b": PyFormat.BINARY, b"%t": PyFormat.TEXT}
# After these the server may no longer find what a prepared statement named (psycopg's rule).
_INVALIDATES = re.compile(rb"^(?:DROP|ALTER|ROLLBACK|DISCARD ALL|DEALLOCATE ALL)\b").match
_CHANGES = re.compile(rb"\b(?:DROP|ALTER|ROLLBACK|DISCARD|DEALLOCATE)\b", re.IGNORECASE)

_FATAL = pq.ExecStatus.FATAL_ERROR
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_IDLE = pq.TransactionStatus.IDLE
_TEXT, _BINARY = pq.Format.TEXT, pq.Format.BINARY

Statement = tuple[bytes | str, Sequence[Any] | None]


class _Sql:
    """One statement's text as libpq takes it ($1, $2, ...) and its parameters' formats."""

    __slots__ = ("formats", "text")

    def __init__(self, sql: bytes | str) -> None:
        raw = sql.encode() if isinstance(sql, str) else sql
        formats: list[PyFormat] = []

        def number(found: re.Match[bytes]) -> bytes:
            if found.group() == b"%%":
                return b"%"
            formats.append(_FORMATS[found.group()])
            return b"$%d" % len(formats)

        self.text = _PLACEHOLDER.sub(number, raw)
        self.formats = formats


class Rows:
    """A statement's rows, loaded (what the store and the views read of a result)."""

    __slots__ = ("_at", "_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        at = self._at
        if at >= len(self._rows):
            return None
        self._at = at + 1
        return self._rows[at]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._at:] if self._at else self._rows
        self._at = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Loader:
    """The rows of a round trip's results, loaded by psycopg's loaders (one set of them
    for the round trip: made when a result first has rows)."""

    __slots__ = ("_connection", "_loader")

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection
        self._loader: TransformerType | None = None

    def __call__(self, result: pq.abc.PGresult) -> Rows:
        count = result.ntuples
        if count == 0:
            return Rows([], result.command_tuples or 0)
        loader = self._loader
        if loader is None:
            loader = self._loader = Transformer(self._connection)
        loader.set_pgresult(result)
        return Rows(loader.load_rows(0, count, tuple), count)


class DeferringConnection(psycopg.Connection[TupleRow]):
    """psycopg's connection, with ``query`` (one pipeline: the writes waiting, then the
    statement), ``defer`` and ``finish`` (see the module). psycopg's own ``execute`` still
    works, for everything off the hot path; it sends the writes waiting first."""

    def __init__(self, pgconn: pq.abc.PGconn, row_factory: RowFactory[TupleRow] = tuple_row):
        super().__init__(pgconn, row_factory)
        self.prepare_threshold = None
        self._deferred: list[Statement] = []
        #: A transaction's start (BEGIN, the lock, the head) waiting for its first round
        #: trip, and what checks their rows (the store's identity) and keeps what they read.
        self._begin: tuple[Sequence[Statement], Callable[[list[Rows]], None] | None] | None \
            = None
        self._dumper = Transformer(self)
        self._parsed: dict[bytes | str, _Sql] = {}
        #: (statement, parameter types) -> its prepared name; how often each was seen.
        self._named: dict[tuple[bytes | str, tuple[int, ...]], bytes] = {}
        self._seen_count: dict[tuple[bytes | str, tuple[int, ...]], int] = {}
        self._names_made = 0
        self._deallocate_all = False

    # psycopg's own preparation stays off on this connection (its ``connect`` sets the
    # threshold after making the object): its ``DEALLOCATE ALL`` after a DROP or a ROLLBACK
    # would drop the statements prepared here, which it does not know of.
    @property
    def prepare_threshold(self) -> int | None:
        return None

    @prepare_threshold.setter
    def prepare_threshold(self, value: int | None) -> None:
        self._prepared.prepare_threshold = None

    def defer(self, sql: bytes | str, rows: list[Sequence[object]]) -> None:
        """Run ``sql`` for each of ``rows`` before the next statement (at once outside a
        transaction: nothing would send it)."""
        if self._begin is None and self.pgconn.transaction_status == _IDLE:
            self.run([(sql, row) for row in rows])
            return
        self._deferred.extend([(sql, row) for row in rows])

    def begin(self, statements: Sequence[Statement],
              check: Callable[[list[Rows]], None] | None = None) -> None:
        """Start a transaction with its first round trip: ``statements`` go first in it,
        and ``check`` is handed their rows before any other result is looked at (a
        transaction that sends nothing before its COMMIT sends them on their own)."""
        self._begin = (statements, check)

    def gone(self) -> bool:
        """Whether this idle connection is closed, or the server sent something unasked
        since its last use: a session terminated, a server shut down or restarted (the
        error, or the end of the stream, is there to read). Then it is closed, and the
        caller makes a new one: one look without waiting, instead of a round trip."""
        if self.closed:
            return True
        poll = select.poll()
        poll.register(self.pgconn.socket, select.POLLIN)
        if not poll.poll(0):
            return False
        self.close()
        return True

    def untouched(self) -> bool:
        """Whether the transaction has sent nothing yet and holds no write."""
        return self._begin is not None and not self._deferred

    def discard(self) -> None:
        """Drop the writes waiting (the transaction rolls back), and a start not sent."""
        self._deferred = []
        self._begin = None

    def query(self, sql: bytes | str, params: Sequence[Any] | None = None,
              binary: bool = False) -> Rows:
        """The writes waiting, then ``sql``: one round trip; its rows."""
        return self.run([(sql, params)], binary)[-1]

    def finish(self, statements: Sequence[Statement]) -> None:
        """The writes waiting, then ``statements`` (COMMIT, the publication...): one round
        trip (two if the transaction's start is still waiting: it is checked first)."""
        if self._begin is not None:
            self.run([])
        self.run(statements)

    # Not the t-string overload of psycopg's execute: the store sends none.
    def execute(  # type: ignore[override]
        self, query: QueryNoTemplate, params: Params | None = None, *,
        prepare: bool | None = None, binary: bool = False,
    ) -> psycopg.Cursor[TupleRow]:
        if self._deferred or self._begin is not None:
            self.run([])
        cursor = super().execute(query, params, prepare=prepare, binary=binary)
        text = query.encode() if isinstance(query, str) else query
        if not isinstance(text, bytes) or _CHANGES.search(text):  # (any of its statements)
            self._forget_prepared()
        return cursor

    def run(self, statements: Sequence[Statement], binary: bool = False) -> list[Rows]:
        """The writes waiting, then ``statements``, in one pipeline; the rows of each of
        ``statements`` (in binary when ``binary``). The first error raises (psycopg's error,
        as its cursor would raise it); what follows it in the pipeline is not run."""
        pg = self.pgconn
        commands: deque[Callable[[], None]] = deque()
        prepares: list[tuple[int, tuple[bytes | str, tuple[int, ...]]]] = []
        first = 0  # the first result that could invalidate the prepared statements
        if self._deallocate_all:
            # In a sync of its own: a statement run before a BEGIN that sets the isolation
            # level in the same implicit block would make the BEGIN fail.
            self._deallocate_all = False
            commands.append(partial(pg.send_query_params, b"DEALLOCATE ALL", None))
            commands.append(pg.pipeline_sync)
            first = 2
        fmt = _BINARY if binary else _TEXT
        begin, deferred = self._begin, self._deferred
        check_at = -1
        wanted, begun = [], []
        try:
            if begin is not None:
                for sql, params in begin[0]:
                    self._queue(commands, prepares, sql, params, _TEXT)
                    begun.append(len(commands) - 1)
                check_at = begun[-1]
            for sql, params in deferred:
                self._queue(commands, prepares, sql, params, _TEXT)
            for sql, params in statements:
                self._queue(commands, prepares, sql, params, fmt)
                wanted.append(len(commands) - 1)
        except BaseException:
            # A value psycopg cannot adapt, a wrong count: nothing was sent, and the start
            # and the writes waiting stay for the next round trip (or the rollback).
            for _, key in prepares:
                self._named.pop(key, None)
            self._deallocate_all = self._deallocate_all or first == 2
            raise
        self._begin, self._deferred = None, []
        commands.append(pg.pipeline_sync)
        groups = self._communicate(commands)
        rows = _Loader(self)
        for at, group in enumerate(groups):
            result = group[0]
            status = result.status
            if status == _FATAL:
                for prepared_at, key in prepares:
                    if prepared_at >= at:
                        self._named.pop(key, None)  # not prepared: the pipeline stopped
                raise pg_errors.error_from_result(result, encoding=self.info.encoding)
            if status == _COMMAND_OK and at >= first \
                    and _INVALIDATES(result.command_status or b""):
                self._forget_prepared()
            if at == check_at and begin is not None and begin[1] is not None:
                # before any later result is used
                begin[1]([rows(groups[b][0]) for b in begun])
        return [rows(groups[at][0]) for at in wanted]

    def _queue(self, commands: deque[Callable[[], None]],
               prepares: list[tuple[int, tuple[bytes | str, tuple[int, ...]]]],
               sql: bytes | str, params: Sequence[Any] | None, fmt: pq.Format) -> None:
        pg = self.pgconn
        parsed = self._parsed.get(sql)
        if parsed is None:
            if len(self._parsed) > 4 * PREPARED_MAX:
                self._parsed.clear()
            parsed = self._parsed[sql] = _Sql(sql)
        count = len(parsed.formats)
        if count != (len(params) if params else 0):
            raise psycopg.ProgrammingError(
                f"the query has {count} placeholders but {len(params or ())} parameters")
        if count:
            dumper = self._dumper
            values: Sequence[Any] | None = dumper.dump_sequence(params or (), parsed.formats)
            types: tuple[int, ...] = dumper.types or ()
            formats = dumper.formats
        else:
            values, types, formats = None, (), None
        key = (sql, types)
        name = self._named.get(key)
        if name is None:
            seen = self._seen_count.get(key, 0) + 1
            if seen >= PREPARE_AFTER and len(self._named) < PREPARED_MAX:
                self._names_made += 1
                name = self._named[key] = b"_eventlog_%d" % self._names_made
                prepares.append((len(commands), key))
                commands.append(partial(pg.send_prepare, name, parsed.text, param_types=types))
            else:
                if len(self._seen_count) > 4 * PREPARED_MAX:
                    self._seen_count.clear()
                self._seen_count[key] = seen
                commands.append(partial(pg.send_query_params, parsed.text, values,
                                        param_types=types, param_formats=formats,
                                        result_format=fmt))
                return
        commands.append(partial(pg.send_query_prepared, name, values, param_formats=formats,
                                result_format=fmt))

    def _communicate(self, commands: deque[Callable[[], None]]) -> list[list[pq.abc.PGresult]]:
        """Send ``commands`` (the last a sync) in pipeline mode, flushed once (one write
        for all, where psycopg's pipeline writes each), and gather one group of results per
        command. A connection left in an unknown state (interrupted, lost) is closed: the
        store makes a new one, and the server rolls back what it held."""
        pg = self.pgconn
        wait, fetch_many = self.wait, generators.fetch_many
        with self.lock:
            pg.enter_pipeline_mode()
            try:
                for command in commands:
                    command()
                wait(generators.send(pg))
                groups = [wait(fetch_many(pg)) for _ in commands]
                pg.exit_pipeline_mode()
            except BaseException:
                if not self.closed:
                    pg.finish()
                raise
        return groups

    def _forget_prepared(self) -> None:
        if self._named:
            self._named.clear()
            self._deallocate_all = True
        self._seen_count.clear()
