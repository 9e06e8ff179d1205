"""The queue bridge: ``tasks/queue/**.md`` files become TaskSubmitted events, bad ones
TaskRejected (moved to ``tasks/rejected/`` with a ``.reason`` file beside them).

Idempotent by task id: a rescan, a restart or several watchers at once submit each id once
(``Services.submit_many`` checks and appends in one write transaction). A file is read only
once its size and mtime have stayed the same for ``settle`` seconds. Accepted files stay in
``tasks/queue/``; the worker's legacy-files mode moves them when it claims the task.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import select
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from eventlog import TransientStoreError
from eventlog.threads import threads_without_signals
from eventlog.watch import quiet_stop_race
from tri24es import events as ev
from tri24es.errors import Tri24esError
from tri24es.files import private_folder, write_private
from tri24es.inputs.queue_folder import IgnoredEntry, ignored_entries
from tri24es.inputs.taskfile import (
    DEFAULT_MAX_BYTES,
    Location,
    Rejection,
    Unreadable,
    id_problem,
    locate,
    parse_task_file,
    printable,
    read_queue_file,
)
from tri24es.paths import ProjectPaths
from tri24es.projections import QUEUE
from tri24es.projections.sql import Db
from tri24es.runtime.resilience import Outage
from tri24es.runtime.signals import Wakeup, received_signals, signal_wakeup
from tri24es.services import NotFound, ServiceError, Services, TaskSpec

DEFAULT_SETTLE = 0.2
BATCH_SIZE = 500
#: ``--once`` waits at most this long for files that keep changing, then leaves them.
ONCE_PATIENCE = 10.0


class Signature(NamedTuple):
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class RejectedFile:
    source: str
    task_id: str
    reason: str
    moved_to: str | None  # None: another watcher moved it first (not reported then)
    recorded: bool = True  # False: the id was submitted meanwhile, so no TaskRejected


@dataclass(frozen=True)
class ChangedFile:
    source: str
    task_id: str
    detail: str


@dataclass
class ScanReport:
    submitted: list[TaskSpec] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    changed: list[ChangedFile] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # still changing: looked at later
    ignored: list[IgnoredEntry] = field(default_factory=list)  # new since the last scan

    def extend(self, other: ScanReport) -> None:
        self.submitted += other.submitted
        self.known += other.known
        self.rejected += other.rejected
        self.changed += other.changed
        self.ignored += other.ignored


class _Candidate(NamedTuple):
    path: Path
    location: Location
    source: str  # relative to the project root, printable
    signature: Signature


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        try:
            st = path.lstat()  # a dangling symlink: rejected as unreadable once read
        except OSError:
            return None  # gone
    return Signature(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class QueueWatcher:
    def __init__(
        self, services: Services, paths: ProjectPaths, *, max_bytes: int = DEFAULT_MAX_BYTES,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self.services = services
        self.queue_dir = paths.queue
        self.rejected_dir = paths.rejected
        self.root = paths.root
        self.max_bytes = max_bytes
        self.settle = settle
        self._handled: dict[Path, Signature] = {}  # files dealt with, as they were then
        self._seen: dict[Path, tuple[Signature, float]] = {}  # changing files: since when
        self._known: dict[str, str | None] = {}  # submitted ids -> their body_sha256
        self._warned: set[tuple[Path, str]] = set()
        self._told_ignored: set[IgnoredEntry] = set()  # said once each, while it stays

    # --- finding files ------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[Path, PurePosixPath]]:
        """Files in the queue folder and its priority folders (real folders, not symlinks)."""
        try:
            top = sorted(os.scandir(self.queue_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in top:
            if entry.is_dir(follow_symlinks=False):
                if entry.name.upper() not in ev.Priority.__members__:
                    continue
                try:
                    inner = sorted(os.scandir(entry.path), key=lambda e: e.name)
                except OSError:
                    continue
                for sub in inner:
                    if not sub.is_dir(follow_symlinks=False):
                        yield Path(sub.path), PurePosixPath(entry.name, sub.name)
            else:
                yield Path(entry.path), PurePosixPath(entry.name)

    def _stable(self, path: Path, sig: Signature) -> float:
        """0 if the file has stopped changing, else how long to wait before looking again."""
        age = time.time() - sig.mtime_ns / 1e9
        if age >= self.settle:
            return 0.0
        now = time.monotonic()
        seen = self._seen.get(path)
        if seen is None or seen[0] != sig:
            self._seen[path] = (sig, now)
            seen = self._seen[path]
        quiet = max(now - seen[1], age if age >= 0 else 0.0)
        return 0.0 if quiet >= self.settle else self.settle - quiet

    def _leads_outside(self, path: Path) -> bool:
        """Whether ``path`` is a symlink to somewhere outside the queue folder (or nowhere)."""
        if not path.is_symlink():
            return False
        try:
            return not path.resolve(strict=True).is_relative_to(self.queue_dir.resolve())
        except (OSError, RuntimeError):  # dangling, or a loop
            return True

    # --- one scan -----------------------------------------------------------------------

    def scan(self) -> tuple[ScanReport, float | None]:
        """Look at every queue file once. Returns what happened and, if some files are still
        changing, how many seconds until they are worth another look."""
        report = ScanReport()
        recheck: float | None = None
        present: set[Path] = set()
        batch: dict[str, tuple[_Candidate, TaskSpec]] = {}
        rejections: list[tuple[_Candidate, Rejection, bytes | None]] = []
        for path, relative in self._entries():
            present.add(path)
            location = locate(relative)
            if not isinstance(location, Location):
                continue
            sig = _signature(path)
            if sig is None or self._handled.get(path) == sig:
                continue
            problem = id_problem(location.task_id)
            # A name that is no safe id, or a symlink out of the queue, is refused whatever
            # the file holds: at once, not once it has settled (under load, a scan taking
            # longer than the settle time would otherwise reject it only on the next one).
            refused = problem is not None or self._leads_outside(path)
            wait = 0.0 if refused else self._stable(path, sig)
            source = printable(f"tasks/queue/{relative.as_posix()}")
            if wait > 0:
                report.waiting.append(source)
                recheck = wait if recheck is None else min(recheck, wait)
                continue
            candidate = _Candidate(path, location, source, sig)
            data: bytes | None = None
            verdict: TaskSpec | Rejection
            if problem is not None:
                verdict = Rejection(printable(location.task_id), problem, source)
            else:
                try:
                    data = read_queue_file(path, self.queue_dir, self.max_bytes)
                except Unreadable as e:
                    verdict = Rejection(location.task_id, str(e), source)
                else:
                    if _signature(path) != sig:  # written to while we read: look again later
                        recheck = self.settle if recheck is None else min(recheck, self.settle)
                        report.waiting.append(source)
                        continue
                    verdict = parse_task_file(location, data, source=source,
                                              max_bytes=self.max_bytes)
            if problem is None and self._is_known(location.task_id):
                self._compare(candidate, data, verdict, report)
            elif isinstance(verdict, Rejection):
                rejections.append((candidate, verdict, data))
            elif verdict.task_id in batch:  # a second file with this id: compared next time
                recheck = self.settle if recheck is None else min(recheck, self.settle)
            else:
                batch[verdict.task_id] = (candidate, verdict)
        self._submit(list(batch.values()), report)
        for candidate, rejection, data in rejections:
            if rejection.task_id in self._known and id_problem(candidate.location.task_id) is None:
                self._compare(candidate, data, rejection, report)
            else:
                self._reject(candidate, rejection, report)
        for stale in set(self._handled) - present:
            del self._handled[stale]
        for stale in set(self._seen) - present:
            del self._seen[stale]
        ignored = ignored_entries(self.queue_dir)
        report.ignored = [entry for entry in ignored if entry not in self._told_ignored]
        self._told_ignored = set(ignored)
        return report, recheck

    def _is_known(self, task_id: str) -> bool:
        """Whether the id is submitted; if so, ``self._known`` holds its body_sha256."""
        if task_id in self._known:
            return True
        try:
            self._known[task_id] = self.services.submitted(task_id).body_sha256
        except NotFound:
            return False
        return True

    def _compare(self, candidate: _Candidate, data: bytes | None,
                 verdict: TaskSpec | Rejection, report: ScanReport) -> None:
        """A file whose id is already submitted: the same content is fine; other content is
        reported once per change and never resubmitted."""
        task_id = candidate.location.task_id
        self._handled[candidate.path] = candidate.signature
        report.known.append(task_id)
        sha, submitted = _sha(data), self._known.get(task_id)
        if sha is not None and sha == submitted:
            return
        if isinstance(verdict, Rejection) and data is None:
            detail = f"task {task_id} is already submitted, and the file is now {verdict.reason}"
        else:
            detail = (f"content differs from task {task_id} as submitted (sha256 "
                      f"{(sha or '-')[:12]} != {(submitted or '-')[:12]}); not resubmitted")
        key = (candidate.path, sha or detail)
        if key not in self._warned:
            self._warned.add(key)
            report.changed.append(ChangedFile(candidate.source, task_id, detail))

    # --- submitting ---------------------------------------------------------------------

    def _submit(self, batch: list[tuple[_Candidate, TaskSpec]], report: ScanReport) -> None:
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start:start + BATCH_SIZE]
            new = set(self.services.submit_many([spec for _, spec in chunk]))
            for candidate, spec in chunk:
                if spec.task_id in new:  # else another watcher submitted it first
                    self._known[spec.task_id] = spec.body_sha256
                    self._handled[candidate.path] = candidate.signature
                    report.submitted.append(spec)
                else:
                    self._is_known(spec.task_id)
                    data = spec.body.encode()
                    self._compare(candidate, data, spec, report)

    # --- rejecting ----------------------------------------------------------------------

    def _reject(self, candidate: _Candidate, rejection: Rejection, report: ScanReport) -> None:
        moved = self._move_aside(candidate.path, candidate.location.name)
        if moved is None:
            return  # another watcher took it: that one records the rejection
        moved_to = printable(f"tasks/rejected/{moved.name}")
        write_private(moved.with_name(moved.name + ".reason"), (
            f"{rejection.reason}\nsource: {candidate.source}\n"
            f"rejected_at: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        ).encode(), self.root)
        recorded = True
        try:
            self.services.reject(rejection.task_id, rejection.reason, candidate.source)
        except ServiceError:
            recorded = False  # the id was submitted from another file meanwhile
        report.rejected.append(RejectedFile(candidate.source, rejection.task_id,
                                            rejection.reason, moved_to, recorded))

    def _move_aside(self, path: Path, name: str) -> Path | None:
        """Move ``path`` into tasks/rejected/ under its name (``x.1.md``... if taken).

        The first rename is the claim: of several watchers, exactly one gets the file."""
        private_folder(self.rejected_dir, self.root)
        claim = self.rejected_dir / f".claim-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            os.rename(path, claim)
        except FileNotFoundError:
            return None
        stem = name.removesuffix(".md")
        for n in itertools.count():
            final = self.rejected_dir / (name if n == 0 else f"{stem}.{n}.md")
            if os.path.lexists(final) or os.path.lexists(f"{final}.reason"):
                continue
            try:
                os.link(claim, final, follow_symlinks=False)  # never replaces a file
            except FileExistsError:
                continue
            except OSError:  # no hard links on this file system
                os.rename(claim, final)
                return final
            os.unlink(claim)
            return final
        raise AssertionError("unreachable")

    # --- running ------------------------------------------------------------------------

    def scan_until_settled(self, patience: float = ONCE_PATIENCE) -> ScanReport:
        """Scan, and scan again while files are still changing (at most ``patience`` s)."""
        total = ScanReport()
        deadline = time.monotonic() + patience
        while True:
            report, recheck = self.scan()
            total.extend(report)
            if recheck is None or time.monotonic() + recheck > deadline:
                total.waiting = report.waiting
                return total
            _pause(recheck)


def _pause(seconds: float) -> None:
    """Wait for a file to settle without sleeping blindly on the main thread's signals."""
    select.select([], [], [], seconds)


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: Wakeup) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
            return  # reads (ours included) change nothing
        self._wake.poke()


def serve(
    watcher: QueueWatcher, interval: float, on_report: Callable[[ScanReport], None],
    on_error: Callable[[str], None],
) -> None:
    """Watch until SIGTERM or SIGINT: a scan on every change notice (inotify), when a changing
    file should have settled, and every ``interval`` seconds in case a notice was missed.
    A store outage is reported once and ridden out; a fault that cannot heal (the store
    replaced) ends the watch by raising it."""
    outage = Outage("queue watcher", on_error)
    # The signal's number lands in the wake-up pipe too, so select() returns at once.
    with received_signals((signal.SIGTERM, signal.SIGINT)) as inbox, signal_wakeup() as wake:
        with threads_without_signals():  # watchdog starts threads in all three
            quiet_stop_race()
            observer = Observer()
            observer.daemon = True
            observer.schedule(_Wake(wake), str(watcher.queue_dir), recursive=True)
            observer.start()
        try:
            while not inbox:
                timeout = interval
                try:
                    report, recheck = watcher.scan()
                    outage.ok()
                    on_report(report)
                    if recheck is not None:
                        timeout = min(timeout, recheck)
                except TransientStoreError as e:
                    timeout = min(timeout, outage.failed(e))
                except (Tri24esError, OSError) as e:  # e.g. a file vanished mid-move
                    on_error(f"queue watcher: {e} (will retry)")
                if inbox:
                    break
                readable, _, _ = select.select([wake.fd], [], [], timeout)
                if readable:
                    wake.drain()
        finally:
            observer.stop()
            observer.join(timeout=5)


def pending_files(queue_dir: Path, conn: Db) -> list[str]:
    """Ids of queue files not submitted yet (rejected ones are moved out of the folder, so
    they do not stay pending)."""
    pending = []
    for path in sorted(queue_dir.glob("*.md")) + sorted(queue_dir.glob("*/*.md")):
        where = locate(PurePosixPath(path.relative_to(queue_dir).as_posix()))
        if isinstance(where, Location) and QUEUE.load_by_id(conn, where.task_id) is None:
            pending.append(where.task_id)
    return pending
