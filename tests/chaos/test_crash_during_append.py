"""SIGKILL a process in the middle of large appends: the log keeps its chain, no batch is torn."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from eventlog import open_store
from tests.chaos.conftest import rounds
from tri24es import events as ev
from tri24es.projections import upkeep
from tri24es.services import Services

ROUNDS = rounds(8)
RAW_BATCH = 2_000
TASK_BATCH = 200
GROWTH_DEADLINE = 30.0

RAW_APPENDER = """
    import sys
    from eventlog import NO_STREAM, NewEvent, open_store

    store = open_store(sys.argv[1])
    prefix = sys.argv[2]
    for n in range(10**9):
        batch = [NewEvent("Bulk", b'{"i":%d}' % i) for i in range(int(sys.argv[3]))]
        store.append(f"{prefix}-{n}", batch, NO_STREAM)
"""

TASK_SUBMITTER = """
    import sys
    from eventlog import open_store
    from tri24es.services import Services, TaskSpec

    services = Services(open_store(sys.argv[1]), actor="chaos")
    prefix, size = sys.argv[2], int(sys.argv[3])
    for n in range(10**9):
        services.submit_many([TaskSpec(f"{prefix}-{n}-{i}", f"task {i}") for i in range(size)])
"""


def kill_while_appending(db: Path, code: str, prefix: str, size: int) -> None:
    """Start a child appending batches of ``size``; SIGKILL it at a random moment once the log
    has grown."""
    with open_store(str(db)) as store:
        before = store.head()
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(db), prefix,
                                  str(size)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + GROWTH_DEADLINE
            while store.head() <= before:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the child never appended: {child.stderr!r}")
                store.wait_for_change(before, 0.1)
            time.sleep(random.uniform(0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()


def batch_of(stream: str) -> str:
    """``task-r3-7-42`` -> ``r3-7`` (round 3, batch 7)."""
    return stream.removeprefix("task-").rpartition("-")[0]


@pytest.mark.chaos
def test_a_killed_appender_leaves_whole_batches_and_an_intact_chain(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    for round_ in range(ROUNDS):
        kill_while_appending(db, RAW_APPENDER, f"r{round_}", RAW_BATCH)
        with open_store(str(db)) as store:
            checked = store.verify()  # hash chain intact, positions 1..head with no gap
            sizes = Counter(e.stream for e in store.read_all())
            assert checked == store.head() == sum(sizes.values())
            torn = {s: n for s, n in sizes.items() if n != RAW_BATCH}
            assert not torn, f"round {round_}: partial batches {torn}"
    assert len(sizes) >= ROUNDS  # every round committed at least one batch


@pytest.mark.chaos
def test_a_killed_submitter_leaves_whole_batches_and_views_that_match_the_log(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    open_store(str(db)).close()
    for round_ in range(ROUNDS):
        kill_while_appending(db, TASK_SUBMITTER, f"r{round_}", TASK_BATCH)
    with open_store(str(db)) as store:
        store.verify()
        services = Services(store, actor="test")
        assert upkeep.verify(store) == []
        streams: dict[str, list[str]] = {}
        for e in store.read_all():
            streams.setdefault(e.stream, []).append(e.type)
        task_streams = {s: types for s, types in streams.items() if s.startswith("task-")}
        assert all(types == [ev.TaskSubmitted.topic] for types in task_streams.values())
        batch_sizes = Counter(batch_of(s) for s in task_streams)
        assert set(batch_sizes.values()) == {TASK_BATCH}, batch_sizes
        assert len({b.partition("-")[0] for b in batch_sizes}) == ROUNDS
        for stream in task_streams:
            assert services.task(stream.removeprefix("task-")).state == "queued"
