"""Folding the log into fresh views in memory: what replay, rebuild and verify do.

The projections are independent folds of the same log, so a long log is split between two
processes: a helper folds the spend and kill-switch views while this process folds the queue
and the workers (task events are most of a log), each reading the log itself. A store no
other process can open, a short log, or one core: everything is folded here. So is the
helper's share whenever the helper fails, whatever the reason.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventlog import EventStore, open_store
from eventlog.model import EventRow
from eventlog.store import READ_BATCH
from tri24es.events import CATALOG, Envelope, Event, decode_page
from tri24es.names import EventDecodeError
from tri24es.projections.base import Projection
from tri24es.projections.killswitch import KILLSWITCH
from tri24es.projections.limits import LIMITS, LimitsView
from tri24es.projections.models import MODELS, ModelsView
from tri24es.projections.queue import QUEUE, QueueView
from tri24es.projections.schedules import SCHEDULES, SchedulesView
from tri24es.projections.spend import SPEND, SpendView
from tri24es.projections.sql import Db
from tri24es.projections.tables.killswitch import KillSwitchView
from tri24es.projections.workers import WORKERS, WorkersView

log = logging.getLogger("tri24es.projections")

PROJECTIONS: tuple[Projection[Any], ...] = (QUEUE, WORKERS, SPEND, KILLSWITCH, LIMITS,
                                             SCHEDULES, MODELS)
#: What the helper process folds: about a third of the work of a realistic log.
HELPER_SHARE: tuple[Projection[Any], ...] = (SPEND, KILLSWITCH)
#: Below this many events, starting a Python process (~0.3 s) costs more than it saves.
PARALLEL_MIN_EVENTS = 150_000


@dataclass
class Views:
    """Every view, folded in memory."""

    queue: QueueView
    workers: WorkersView
    spend: SpendView
    killswitch: KillSwitchView
    limits: LimitsView
    schedules: SchedulesView
    models: ModelsView
    position: int

    def by_projection(self) -> dict[str, Any]:
        return {"queue": self.queue, "workers": self.workers, "spend": self.spend,
                "killswitch": self.killswitch, "limits": self.limits,
                "schedules": self.schedules, "models": self.models}


def decode_skipping(rows: Sequence[EventRow],
                    quiet: frozenset[str] = frozenset()) -> list[Envelope]:
    """A page decoded, passing over (with one warning line naming its position) any event
    that cannot be: corrupt, or of a type this version does not know. Such an event cannot
    change a view, and must not stop every process that opens the store or replays it.
    Events of ``quiet`` types are passed over without a word (another process reports them)."""
    try:
        return decode_page(rows)
    except EventDecodeError:
        decoded = []
        for row in rows:
            try:
                decoded.extend(decode_page([row]))
            except EventDecodeError as e:
                if row[4] not in quiet:  # row[4]: the type
                    log.warning("tri24es: warning: the views skip %s", e)
        return decoded


def fold_log(
    store: EventStore,
    until_position: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Views:
    """Fold the log (up to ``until_position``) into fresh in-memory views."""
    head = store.head()
    until = head if until_position is None else min(until_position, head)
    helper = _Helper.start(store.url, until) if _worth_a_helper(store, until) else None
    try:
        here = [p for p in PROJECTIONS if helper is None or p not in HELPER_SHARE]
        # Types both read (spend counts against tasks too): the helper reports what is bad.
        quiet = frozenset() if helper is None else frozenset(
            t.topic for p in HELPER_SHARE for t in p.handles)
        views = fold_projections(store, here, until, progress, report_unknown=True,
                                 quiet=quiet)
        if helper is not None:
            views.update(helper.result(store))
    finally:
        if helper is not None:
            helper.close()
    return Views(**{p.name: views[p.name] for p in PROJECTIONS}, position=until)


def fold_projections(
    store: EventStore,
    projections: Sequence[Projection[Any]],
    until: int,
    progress: Callable[[int], None] | None = None,
    report_unknown: bool = False,
    quiet: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Fold the log up to ``until`` into fresh views of ``projections``, by name.
    ``progress`` hears how far each page advanced; ``report_unknown``: warn about events of
    types the catalog does not know (one of the processes of a split fold does)."""
    views = {p.name: p.new_view() for p in projections}
    dispatch: dict[type[Event], list[tuple[Callable[[Any, Envelope], None], Any]]] = {}
    for projection in projections:
        for event_type in projection.handles:
            dispatch.setdefault(event_type, []).append((projection.apply, views[projection.name]))
    # An event none of them handles is passed over before it is decoded; with
    # report_unknown, one of a type the catalog does not know is kept, so that decoding it
    # reports it like any corrupt event.
    handled = {event_type.topic for event_type in dispatch}
    # Alone, read every event, so that one of an unknown type is reported. As one of two
    # processes, read only the types this share handles.
    types = None if report_unknown else handled
    position = 0
    with _no_cyclic_gc():
        for page in store.read_payload_pages(0, until_position=until, types=types):
            wanted = page if types is not None else [  # r[4]: the type
                r for r in page if r[4] in handled or r[4] not in CATALOG
            ]
            for envelope in decode_skipping(wanted, quiet):
                for apply, view in dispatch[type(envelope.event)]:
                    apply(view, envelope)
            if progress is not None:
                progress(page[-1][0] - position)
            position = page[-1][0]
    return views


#: How many events a replay page by page folds between two spills: what it holds in memory
#: is the rows these touch (and the small views), whatever the length of the log.
SPILL_EVENTS = 10_000


def spill_log(
    store: EventStore,
    conn: Db,
    until: int,
    progress: Callable[[int], None] | None = None,
    every: int = SPILL_EVENTS,
) -> dict[str, Any]:
    """Fold the log up to ``until`` into the (empty) view tables on ``conn``, ``every``
    events at a time: each projection loads the stored rows a page touches (``prefetch``),
    the page is applied by the same ``apply`` as every other fold, and after ``every``
    events each projection writes out and forgets what it need not keep (``spill``);
    ``finish`` writes the rest. What stays in memory: the small views, by name."""
    views = {p.name: p.spilling_view() for p in PROJECTIONS}
    dispatch: dict[type[Event], list[tuple[Callable[[Any, Envelope], None], Any]]] = {}
    for projection in PROJECTIONS:
        for event_type in projection.handles:
            dispatch.setdefault(event_type, []).append((projection.apply, views[projection.name]))
    handled = {event_type.topic for event_type in dispatch}
    position = since_spill = 0
    with _no_cyclic_gc():
        # Every event is read, so that one of an unknown type is reported (as fold_log does).
        for page in store.read_payload_pages(0, until_position=until,
                                             batch_size=min(every, READ_BATCH)):
            wanted = [r for r in page if r[4] in handled or r[4] not in CATALOG]  # r[4]: type
            envelopes = decode_skipping(wanted)
            for projection in PROJECTIONS:
                projection.prefetch(conn, views[projection.name], envelopes)
            for envelope in envelopes:
                for apply, view in dispatch[type(envelope.event)]:
                    apply(view, envelope)
            since_spill += len(page)
            if since_spill >= every:
                for projection in PROJECTIONS:
                    projection.spill(conn, views[projection.name])
                since_spill = 0
            if progress is not None:
                progress(page[-1][0] - position)
            position = page[-1][0]
        for projection in PROJECTIONS:
            projection.finish(conn, views[projection.name])
    return views


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """A fold makes millions of small objects and no reference cycles: the cyclic garbage
    collector would only rescan the growing views, again and again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _worth_a_helper(store: EventStore, until: int) -> bool:
    return (
        until >= PARALLEL_MIN_EVENTS
        and (os.cpu_count() or 1) > 1
        and not store.url.startswith("memory:")  # nothing another process could open
    )


class _Helper:
    """The process that folds ``HELPER_SHARE`` (a new interpreter; not multiprocessing, which
    would run the caller's main module again), and how its views come back: pickled, on its
    stdout, into an unnamed temporary file (a pipe would stall it until this process reads)."""

    @classmethod
    def start(cls, url: str, until: int) -> _Helper | None:
        """The helper, running; None if no process could be started (no interpreter at
        ``sys.executable``, no processes or files left): then the caller folds it all."""
        try:
            return cls(url, until)
        except OSError as e:
            log.debug("no fold helper (%s): folding everything here", e)
            return None

    def __init__(self, url: str, until: int) -> None:
        self.until = until
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from tri24es.projections.fold import _main; _main()",
                 str(until)],
                stdin=subprocess.PIPE, stdout=self.output,
            )
        except BaseException:
            self.output.close()
            raise
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):  # it died already: result() folds here
            self.process.stdin.write(url.encode())  # not in argv: a URL may hold a password
            self.process.stdin.close()

    def result(self, store: EventStore) -> dict[str, Any]:
        """The helper's views; if it failed, its share folded here instead."""
        if self.process.wait() == 0:
            self.output.seek(0)
            try:
                with _no_cyclic_gc():
                    packed = pickle.load(self.output)
                    return {p.name: p.unpack(packed[p.name]) for p in HELPER_SHARE}
            except (EOFError, OSError, pickle.UnpicklingError):
                pass
        log.debug("the fold helper failed (exit %s): folding its share here",
                  self.process.returncode)
        return fold_projections(store, HELPER_SHARE, self.until)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # only when this process is leaving early (Ctrl-C, an error)
        self.process.wait()
        self.output.close()


def _fold_in_helper(url: str, until: int) -> None:
    store = open_store(url)
    try:
        views = fold_projections(store, HELPER_SHARE, until)
    finally:
        store.close()
    pickle.dump({p.name: p.pack(views[p.name]) for p in HELPER_SHARE}, sys.stdout.buffer,
                protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


def _main() -> None:
    """The helper process: the store's URL on stdin, the position to fold to in argv."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    _fold_in_helper(sys.stdin.read(), int(sys.argv[1]))
