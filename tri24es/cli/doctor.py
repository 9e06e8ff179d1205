"""``tri24es doctor``: is this project healthy? One line per check; exit 1 on a problem."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from tri24es.cli.common import Context, context_of

if TYPE_CHECKING:
    from eventlog import EventStore

OK, NOTE, PROBLEM = "ok", "note", "PROBLEM"
#: The log's last event may be this far ahead of this machine's clock before it is a problem
#: (recorded_at never goes backwards, so a clock behind the log stamps events in the future).
SKEW_TOLERANCE_S = 2.0

Check = Callable[[Context, "EventStore"], tuple[str, str]]


def _store(context: Context, store: EventStore) -> tuple[str, str]:
    from eventlog import redact_url

    return OK, f"store: {redact_url(context.settings.db_url)}, {store.head()} events"


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _permissions(context: Context, store: EventStore) -> tuple[str, str]:
    from eventlog import sqlite_path

    path = sqlite_path(context.settings.db_url)
    if path is None:
        return NOTE, "permissions: the store is a server's (its own grants apply)"
    state = os.stat(os.path.dirname(os.path.abspath(path)))
    db = os.stat(path)
    loose = [f"{what} is {stat.S_IMODE(st.st_mode):04o}" for what, st, private in (
        ("state/", state, 0o700), ("the store", db, 0o600))
        if stat.S_IMODE(st.st_mode) & ~private]
    if loose:
        return PROBLEM, (f"permissions: {', '.join(loose)}: others may read the log "
                         "(chmod 700 state; chmod 600 the store)")
    if not os.access(path, os.W_OK):
        return NOTE, "permissions: the store is read-only to you (reads work, writes fail)"
    if db.st_uid != os.geteuid():  # root, say, in a user's project
        owner = _user_name(db.st_uid)
        return PROBLEM, (f"permissions: the store is {owner}'s and you are "
                         f"{_user_name(os.geteuid())}: what a command writes here (its log, "
                         f"task files, a new WAL) would be yours, private, and unreadable to "
                         f"{owner}'s fleet (run it as {owner})")
    return OK, "permissions: state/ 0700, the store 0600, writable by you"


def _processes(context: Context, store: EventStore) -> tuple[str, str]:
    from tri24es.procinfo import host_id, is_same_process
    from tri24es.projections import connection_of, reads

    with store.snapshot() as tx:
        live = reads.live_workers(connection_of(tx))
    here = [w for w in live if w.host == host_id()]
    gone = [w.worker_id for w in here if not is_same_process(w.pid, w.pid_start_time)]
    elsewhere = f", {len(live) - len(here)} on other hosts" if len(here) < len(live) else ""
    if gone:
        return PROBLEM, (f"processes: {len(gone)} workers recorded live have no process: "
                         f"{', '.join(gone[:3])} (their leases will expire; tri24es workers "
                         "list)")
    return OK, f"processes: {len(here)} live workers on this host, all running{elsewhere}"


def _watchdog(context: Context, store: EventStore) -> tuple[str, str]:
    import fcntl

    from tri24es.projections import connection_of, reads

    paths = context.settings.paths
    running = False
    try:
        fd = os.open(paths.watchdog_lock, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running = True  # the daemon holds it for its life
        finally:
            os.close(fd)
    if running:
        from tri24es.files import pid_in

        pid = pid_in(paths.watchdog_pid)
        return OK, f"budget watchdog: running (pid {pid})"
    with store.snapshot() as tx:
        live = reads.live_workers(connection_of(tx))
    if live:
        return PROBLEM, (f"budget watchdog: not running on this host while {len(live)} "
                         "workers are live: no limit is enforced (tri24es budget-watchdog, "
                         "or tri24es up)")
    return NOTE, "budget watchdog: not running (no live workers either)"


def _postgresql(context: Context, store: EventStore) -> tuple[str, str]:
    from eventlog import sqlite_path

    if sqlite_path(context.settings.db_url) is not None:
        return NOTE, "postgresql: not used (the store is a SQLite file)"
    return OK, "postgresql: reachable"  # the store opened: the server answered


def _clock(context: Context, store: EventStore) -> tuple[str, str]:
    head = store.head()
    if head == 0:
        return NOTE, "clock: no event to compare with yet"
    [last] = store.read_page(head - 1, 1)
    ahead = last.recorded_at / 1e6 - time.time()
    if ahead > SKEW_TOLERANCE_S:
        return PROBLEM, (f"clock: this machine is {ahead:.1f} s behind the log's last event "
                         "(another host's clock is ahead, or this one is late: check NTP)")
    return OK, "clock: not behind the log's last event"


CHECKS: tuple[Check, ...] = (_store, _permissions, _processes, _watchdog, _postgresql, _clock)


def doctor(ctx: typer.Context) -> None:
    """Check the project: the store opens, its files are private, the workers recorded live
    are running, the budget watchdog is alive, PostgreSQL (if used) answers, and this clock
    is not behind the log. One line each; exit 1 if any is a PROBLEM.

    Example: tri24es doctor
    """
    from eventlog import EventLogError
    from tri24es.errors import Tri24esError

    context = context_of(ctx)
    verdicts = []
    try:
        with context.store() as store:
            for check in CHECKS:
                try:
                    verdict, text = check(context, store)
                except (OSError, Tri24esError, EventLogError) as e:  # a check that cannot
                    verdict, text = PROBLEM, f"{check.__name__.strip('_')}: {e}"  # run
                verdicts.append(verdict)
                typer.echo(f"{verdict:<8} {text}")
    except (Tri24esError, EventLogError) as e:  # the store did not open: nothing else runs
        verdicts.append(PROBLEM)
        typer.echo(f"{PROBLEM:<8} store: {e}")
    if PROBLEM in verdicts:
        raise typer.Exit(1)
