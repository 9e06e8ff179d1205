"""The queue bridge: ``tasks/queue/**.md`` files become TaskSubmitted events, bad ones
TaskRejected (moved to ``tasks/rejected/`` with a ``.reason`` file beside them).

Idempotent by task id: a rescan, a restart or several watchers at once submit each id once
(``Services.submit_many`` checks and appends in one write transaction). A file is read only
once its size and mtime have stayed the same for ``settle`` seconds. Accepted files stay in
``tasks/queue/``; the worker's legacy-files mode moves them when it claims the task.

An accepted file edited while its task is still queued (not yet claimed) changes the task:
one TaskUpdated with what the edit changed (its text always, and each field whose line or
place changed), carrying the new file's sha256, which the task's stream keeps, so a rescan,
a restart or another watcher compares the file with it and records nothing twice. An edit
that makes the file invalid is refused with one line and the task keeps its last version;
an edit after the claim is only reported.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import select
import signal
import time
from collections import Counter
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
    field_values,
    id_problem,
    locate,
    parse_task_file,
    printable,
    priority_of,
    read_queue_file,
)
from tri24es.machines import TaskState
from tri24es.names import Priority
from tri24es.paths import ProjectPaths
from tri24es.projections.queue import QUEUE
from tri24es.projections.sql import Db
from tri24es.runtime.resilience import Outage
from tri24es.runtime.signals import Wakeup, received_signals, signal_wakeup
from tri24es.services import (
    BudgetTooLow,
    NotFound,
    NotQueued,
    Outdated,
    ServiceError,
    Services,
    TaskSpec,
)
from tri24es.services.dependencies import order_by_dependencies
from tri24es.timeutil import from_us

#: Seconds a file's size and mtime must stay the same before it is read. A writer that
#: pauses between two bursts (an editor's autosave, a script's two writes, a slow copy) must
#: not have the first one submitted alone: 0.2 s did exactly that with bursts 1 s apart.
#: inotify's CLOSE_WRITE cannot shorten it (a writer may close the file between bursts).
DEFAULT_SETTLE = 2.0
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


@dataclass(frozen=True)
class UpdatedFile:
    source: str
    task_id: str
    fields: tuple[str, ...]  # what the edit changed ("body" for the text alone)


@dataclass
class ScanReport:
    submitted: list[TaskSpec] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    changed: list[ChangedFile] = field(default_factory=list)  # edits not applied: warnings
    updated: list[UpdatedFile] = field(default_factory=list)  # edits applied to queued tasks
    edit_rejected: list[ChangedFile] = field(default_factory=list)  # invalid edits refused
    waiting: list[str] = field(default_factory=list)  # still changing: looked at later
    ignored: list[IgnoredEntry] = field(default_factory=list)  # new since the last scan

    def extend(self, other: ScanReport) -> None:
        self.submitted += other.submitted
        self.known += other.known
        self.rejected += other.rejected
        self.changed += other.changed
        self.updated += other.updated
        self.edit_rejected += other.edit_rejected
        self.ignored += other.ignored


class _Version(NamedTuple):
    """What a submitted task's queue file held when last recorded (submission or edit)."""

    sha256: str | None
    source: str | None  # None or not under tasks/queue/: not submitted from a queue file


#: Fields an edit cannot change (the task keeps them; the edit is refused): dependencies are
#: fixed at submission (no cycle can form later). (A budget, a no-progress rule or a backoff
#: can be changed but not removed: a TaskUpdated has no way to clear them to the fleet's.)
_FIXED = ("after",)
#: Fields compared between the file's last recorded version and the edit.
_COMPARED = ("priority", "title", "shard", "model", "type", "max_retries", "max_budget_usd",
             "no_progress", "retry_backoff",
             "base", "review", "require_changes", "resume", "retry_from")
_CLEARED_BY_EMPTY = ("shard", "model", "type", "base")


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
        self._known: dict[str, _Version] = {}  # submitted ids -> their file, as recorded
        self._read_now: set[str] = set()  # ids whose version was read from the log this scan
        self._warned: set[tuple[Path, str]] = set()
        self._shared: set[str] = set()  # ids more than one queue file names (this scan)
        self._told_ignored: set[IgnoredEntry] = set()  # said once each, while it stays
        self.next_slot_us: int | None = None  # when a schedule's next slot comes

    # --- finding files ------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[Path, PurePosixPath]]:
        """Files in the queue folder and its priority folders (real folders, not symlinks)."""
        try:
            top = sorted(os.scandir(self.queue_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in top:
            if entry.is_dir(follow_symlinks=False):
                if entry.name.upper() not in Priority.__members__:
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
        fired, self.next_slot_us = self.services.fire_schedules()  # recurring tasks first
        report.submitted += fired
        recheck: float | None = None
        present: set[Path] = set()
        batch: dict[str, tuple[_Candidate, TaskSpec]] = {}
        rejections: list[tuple[_Candidate, Rejection, bytes | None]] = []
        self._read_now.clear()
        entries = list(self._entries())
        # Two files naming one id (x.md and HIGH/x.md) would take turns editing its task.
        names = [where.task_id for where in (locate(rel) for _, rel in entries)
                 if isinstance(where, Location)]
        self._shared = {task_id for task_id, n in Counter(names).items() if n > 1}
        for path, relative in entries:
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
                if not self._compare(candidate, data, verdict, report):
                    recheck = self.settle if recheck is None else min(recheck, self.settle)
            elif isinstance(verdict, Rejection):
                rejections.append((candidate, verdict, data))
            elif verdict.task_id in batch:  # a second file with this id: compared next time
                recheck = self.settle if recheck is None else min(recheck, self.settle)
            else:
                batch[verdict.task_id] = (candidate, verdict)
        ordered, problems = order_by_dependencies([spec for _, spec in batch.values()],
                                                  self._is_known)
        for task_id, problem in problems.items():  # an unknown dependency, a cycle
            candidate, spec = batch.pop(task_id)
            rejections.append((candidate, Rejection(task_id, problem, candidate.source),
                               spec.body.encode()))
        self._submit([batch[spec.task_id] for spec in ordered], report)
        for candidate, rejection, data in rejections:
            if rejection.task_id in self._known and id_problem(candidate.location.task_id) is None:
                if not self._compare(candidate, data, rejection, report):
                    recheck = self.settle if recheck is None else min(recheck, self.settle)
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
        """Whether the id is submitted; if so, ``self._known`` holds its file's version."""
        if task_id in self._known:
            return True
        try:
            self._read_version(task_id)
        except NotFound:
            return False
        return True

    def _read_version(self, task_id: str) -> _Version:
        task = self.services.submitted(task_id)  # with every edit applied
        self._known[task_id] = _Version(task.body_sha256, task.source)
        self._read_now.add(task_id)
        return self._known[task_id]

    def _compare(self, candidate: _Candidate, data: bytes | None,
                 verdict: TaskSpec | Rejection, report: ScanReport) -> bool:
        """A file whose id is already submitted. The same content in a place of the same
        priority is nothing (a touch, a rescan, a restart); an edit changes the task while it
        is queued, else it is reported once per change. False: look again later (the task
        changed while the edit was being weighed)."""
        task_id = candidate.location.task_id
        report.known.append(task_id)
        # Read again (once a scan) rather than trusted from memory: another watcher, or
        # `tasks update`, may have recorded a version since, and a file put back to what this
        # watcher last recorded would then look unchanged.
        last = self._known[task_id] if task_id in self._read_now else self._read_version(task_id)
        sha = _sha(data)
        if sha is not None and sha == last.sha256 and (
                _priority_at(candidate.source) == _priority_at(last.source)):
            self._handled[candidate.path] = candidate.signature
            return True
        from_file = last.source is not None and last.source.startswith("tasks/queue/")
        if not from_file:  # a task submitted otherwise, and a file that happens to share its id
            if isinstance(verdict, Rejection) and data is None:
                detail = (f"task {task_id} is already submitted, and the file is now "
                          f"{verdict.reason}")
            else:
                detail = (f"content differs from task {task_id} as submitted (sha256 "
                          f"{(sha or '-')[:12]} != {(last.sha256 or '-')[:12]}); not resubmitted: "
                          "the task was not submitted from a queue file")
            self._warn(candidate, sha or detail, detail, report)
            return True
        if task_id in self._shared:
            self._warn(candidate, sha or "shared", (
                f"more than one file in the queue names task {task_id}: the edit is not "
                "applied (keep one of them)"), report)
            # Weighed again on each scan (not handled): once the other file goes, it applies.
            del self._handled[candidate.path]
            return True
        return self._edit(candidate, data, verdict, report)

    def _edit(self, candidate: _Candidate, data: bytes | None,
              verdict: TaskSpec | Rejection, report: ScanReport) -> bool:
        """Apply an edited queue file to its task, if the task is still queued."""
        task_id = candidate.location.task_id
        key = _sha(data) or (verdict.reason if isinstance(verdict, Rejection) else "")
        row = self.services.task(task_id)  # read first: its version guards the update
        if row.state != TaskState.QUEUED:
            self._not_queued(candidate, key, row.state, report)
            return True
        if isinstance(verdict, Rejection):
            self._refuse_edit(candidate, key, verdict.reason, report)
            return True
        task = self.services.submitted(task_id)
        if task.body_sha256 == verdict.body_sha256 and (
                _priority_at(task.source) == _priority_at(candidate.source)):
            # Recorded already (by another watcher, or before this one read it last).
            self._known[task_id] = _Version(task.body_sha256, task.source)
            self._handled[candidate.path] = candidate.signature
            return True
        change = _change(task, verdict, self.services.clock())
        if isinstance(change, str):
            self._refuse_edit(candidate, key, change, report)
            return True
        event, changed = change
        try:
            self.services.update(event.model_copy(update={"by": self.services.metadata.actor}),
                                 version=row.version)
        except Outdated:
            self._known.pop(task_id, None)  # read again (another watcher may have done it)
            return False
        except NotQueued:  # claimed between the read and the update
            self._known.pop(task_id, None)
            self._not_queued(candidate, key, self.services.task(task_id).state, report)
            return True
        except BudgetTooLow as e:
            self._refuse_edit(candidate, key, str(e), report)
            return True
        self._known[task_id] = _Version(verdict.body_sha256, candidate.source)
        self._handled[candidate.path] = candidate.signature
        report.updated.append(UpdatedFile(candidate.source, task_id, changed))
        return True

    def _not_queued(self, candidate: _Candidate, key: str, state: str,
                    report: ScanReport) -> None:
        task_id = candidate.location.task_id
        self._warn(candidate, key, (
            f"changed, but task {task_id} is {state}: the edit is not applied (only a task "
            "not yet claimed takes its file's changes)"), report)

    def _refuse_edit(self, candidate: _Candidate, key: str, reason: str,
                     report: ScanReport) -> None:
        """An edit that cannot be applied: said once per content; the file stays where it is
        (fixing it in place is the next edit) and the task keeps its last version."""
        self._handled[candidate.path] = candidate.signature
        if (candidate.path, key) not in self._warned:
            self._warned.add((candidate.path, key))
            report.edit_rejected.append(ChangedFile(
                candidate.source, candidate.location.task_id,
                f"{reason} (task {candidate.location.task_id} keeps its last version)"))

    def _warn(self, candidate: _Candidate, key: str, detail: str, report: ScanReport) -> None:
        self._handled[candidate.path] = candidate.signature
        if (candidate.path, key) not in self._warned:
            self._warned.add((candidate.path, key))
            report.changed.append(ChangedFile(candidate.source, candidate.location.task_id,
                                              detail))

    # --- submitting ---------------------------------------------------------------------

    def _submit(self, batch: list[tuple[_Candidate, TaskSpec]], report: ScanReport) -> None:
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start:start + BATCH_SIZE]
            new = set(self.services.submit_many([spec for _, spec in chunk]))
            for candidate, spec in chunk:
                if spec.task_id in new:  # else another watcher submitted it first
                    self._known[spec.task_id] = _Version(spec.body_sha256, spec.source)
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


def _priority_at(source: str | None) -> Priority | None:
    """The priority a queue file's place gives it (its name's prefix, else its folder)."""
    if source is None or not source.startswith("tasks/queue/"):
        return None
    where = locate(PurePosixPath(source.removeprefix("tasks/queue/")))
    return priority_of(where) if isinstance(where, Location) else None


def _change(task: ev.TaskSubmitted, new: TaskSpec,
            now_us: int) -> tuple[ev.TaskUpdated, tuple[str, ...]] | str:
    """The TaskUpdated that takes ``task`` (as last recorded) to the edited file ``new``, and
    the names of what it changes; or why the edit cannot be applied.

    Fields are compared with what the file said before (the task's recorded text, read at
    its recorded place), not with the task: a change made with ``tasks update`` stays unless
    the edit touches that field too."""
    old: TaskSpec | None = None
    if task.source is not None and task.body_sha256 is not None:
        where = locate(PurePosixPath(task.source.removeprefix("tasks/queue/")))
        if isinstance(where, Location):
            parsed = parse_task_file(where, task.body.encode(), source=task.source)
            old = parsed if isinstance(parsed, TaskSpec) else None

    def differs(name: str) -> bool:
        return old is None or getattr(old, name) != getattr(new, name)

    fixed = [name for name in _FIXED if getattr(task, name) != getattr(new, name)]
    if new.max_budget_usd is None and task.max_budget_usd is not None and differs(
            "max_budget_usd"):
        fixed.append("max_budget_usd (it can be changed, not removed)")
    if new.no_progress is None and task.no_progress is not None and differs("no_progress"):
        fixed.append("no_progress (it can be changed, not removed; off: none)")
    if new.retry_backoff is None and task.retry_backoff is not None and differs(
            "retry_backoff"):
        fixed.append("retry_backoff (it can be changed, not removed; 0: none)")
    if fixed:
        return (f"the edit changes {', '.join(fixed)}, which cannot change once a task is "
                "submitted")
    values: dict[str, object] = {"body": new.body, "body_sha256": new.body_sha256,
                                 "source": new.source}
    changed = ["body"] if old is None or old.body != new.body else []
    for name in _COMPARED:
        if differs(name):
            value = getattr(new, name)
            values[name] = "" if value is None and name in _CLEARED_BY_EMPTY else value
            changed.append(name)
    if differs("command") or differs("agent"):  # the two decide together who may run it
        values |= {"command": new.command or [], "agent": new.agent or ""}
        changed += ["command", "agent"]
    # A relative not_before ("10m") is read against the clock: compare the lines as written.
    before = None if old is None else field_values(old.body).get("not_before") or None
    after = field_values(new.body).get("not_before") or None
    if before != after:
        values["not_before"] = new.not_before or from_us(now_us)  # removed: claimable now
        changed.append("not_before")
    return ev.TaskUpdated(task_id=new.task_id, **values), tuple(changed)


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
                    if watcher.next_slot_us is not None:  # a schedule's next slot
                        until = (watcher.next_slot_us - watcher.services.clock()) / 1e6
                        timeout = max(min(timeout, until), 0.0)
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
