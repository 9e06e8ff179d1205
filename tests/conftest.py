"""Fixtures shared by every test layer."""

from __future__ import annotations

import fcntl
import itertools
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from eventlog import NO_STREAM, NewEvent
from eventlog.sqlite import SQLiteStore

# Property tests judge results, not speed: a loaded machine must not fail them by a deadline
# or by how slowly their examples are made.
settings.register_profile("tri24es", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tri24es")

#: The ceiling of every wait on a condition: reached only when something is wrong, so it can be
#: generous; a loaded laptop must not fail a test by the time a condition took to hold.
PATIENCE = float(os.environ.get("TRI24ES_TEST_PATIENCE", "90"))

MILLION_BATCHES, MILLION_PER_BATCH = 100, 10_000
RUN = f"t{os.getpid()}_{secrets.token_hex(3)}"  # prefix of this run's PostgreSQL schemas
_numbers = itertools.count()


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = PATIENCE, every: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session", autouse=True)
def interruptible_children() -> None:
    """Tests press Ctrl-C on real processes, as a user at a terminal would. A suite started in
    the background by a non-interactive shell inherits SIGINT and SIGQUIT ignored (POSIX job
    control), and so would every process it starts: they would never see the Ctrl-C."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _build_million_event_store(path: Path) -> None:
    """Writes the million-event store to ``path``, through the real SQLite store."""
    data = b'{"task_id":"t","n":1,"note":"some payload text"}'
    meta = b'{"actor":"bench"}'
    with SQLiteStore(path, synchronous="OFF") as store:
        for b in range(MILLION_BATCHES):
            batch = [NewEvent("Loaded", data, meta) for _ in range(MILLION_PER_BATCH)]
            store.append(f"load-{b}", batch, NO_STREAM)


def _million_key() -> str:
    """What the million-event store is made of: the code above and the store that writes it
    (every file of the ``eventlog`` package: a change of its format makes a new store)."""
    import hashlib
    import inspect

    import eventlog

    digest = hashlib.sha256(inspect.getsource(_build_million_event_store).encode())
    digest.update(f"{MILLION_BATCHES}x{MILLION_PER_BATCH}".encode())
    package = Path(eventlog.__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _shared_cache() -> Path:
    """A folder of this user's, shared by every test process, run and checkout on the
    machine (``TRI24ES_TEST_CACHE`` to put it elsewhere)."""
    folder = Path(os.environ.get("TRI24ES_TEST_CACHE")
                  or Path(tempfile.gettempdir()) / f"tri24es-tests-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = folder.stat()
    if mode.st_uid != os.getuid() or mode.st_mode & 0o022:
        pytest.fail(f"{folder}: not this user's alone; set TRI24ES_TEST_CACHE to a folder "
                    "of yours", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def million_event_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store of 1,000,000 events (100 streams of 10,000), only ever read: the
    bounded-memory tests of read_all and of the audit export share it.

    Building it takes 8 s on a quiet machine and a minute or more on a loaded one, so it is
    built once per machine into a shared folder, named by a hash of the code that builds it
    and of the ``eventlog`` package (a changed store format builds a new one), under a lock:
    test processes, and other runs or checkouts, wait for the one building it. Each test
    process reads a copy of its own."""
    folder = _shared_cache()
    key = _million_key()
    master = folder / f"million-{key}.db"
    with open(folder / "million.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not master.exists():
            partial = master.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _build_million_event_store(partial)  # closed: the WAL is folded into the file
            partial.rename(master)
            # 250 MB each: keep one other (a second checkout at other code), the last used
            others = sorted((old for old in folder.glob("million-*.db") if old != master),
                            key=lambda old: old.stat().st_mtime, reverse=True)
            for old in others[1:]:
                old.unlink(missing_ok=True)
        os.utime(master)  # its last use, for the above
        path = tmp_path_factory.mktemp("million") / "big.db"
        shutil.copyfile(master, path)  # under the lock: a newer run may delete an old master
    return path


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` first on its search path: a store of its own."""
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL server of the PostgreSQL tests (TRI24ES_TEST_PG_DSN).

    Without it the tests are skipped, unless TRI24ES_REQUIRE_PG=1 (as in CI): then they fail.
    """
    dsn = os.environ.get("TRI24ES_TEST_PG_DSN", "")
    if not dsn:
        if os.environ.get("TRI24ES_REQUIRE_PG") == "1":
            pytest.fail(
                "TRI24ES_REQUIRE_PG=1 but TRI24ES_TEST_PG_DSN is not set", pytrace=False
            )
        pytest.skip("PostgreSQL tests: set TRI24ES_TEST_PG_DSN=postgresql://USER@HOST:5432/DB "
                    "to run them (README, Test it)")
    return dsn


@pytest.fixture
def new_schema(pg_dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names of this test run; drops them all afterwards."""
    import psycopg

    made: list[str] = []

    def new() -> str:
        made.append(f"{RUN}_{next(_numbers)}")
        return made[-1]

    yield new
    with closing(psycopg.connect(pg_dsn, autocommit=True)) as admin:
        for schema in made:
            # A session a test left in a transaction on the schema (a store not closed, a
            # process killed) would make the DROP wait for ever: end those sessions first.
            admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND l.pid <> pg_backend_pid()", (schema,))
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Skips grouped by reason, one line each (not a line per test: without a PostgreSQL
    server a hundred tests skip for one reason)."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"SKIPPED {count}: {reason}")
