"""Scheduling with real processes: a real worker waits out a backoff, a delay, a dependency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Run
from tests.e2e.test_worker import Fleet, wait_until
from tri24es import events as ev
from tri24es.timeutil import to_us

SECOND = 1_000_000


@pytest.fixture
def fleet(project: Path, run: Run) -> Iterator[Fleet]:
    assert run("init").returncode == 0
    fleet = Fleet(project, run)
    yield fleet
    fleet.close()


def claims_of(fleet: Fleet, task_id: str) -> list[tuple[int, int]]:
    """(attempt, recorded_at) of each claim of the task."""
    return [(ev.decode_event(r).attempt, r.recorded_at)  # type: ignore[attr-defined]
            for r in fleet.services.store.read_stream(ev.task_stream(task_id))
            if r.type == ev.TaskClaimed.topic]


def test_a_worker_retries_a_failed_task_after_its_backoff_and_wakes_for_it(
    fleet: Fleet,
) -> None:
    fleet.submit("flaky", "fail-on 1\nsay fine")
    # Beats every 10 s and polls every 60 s: only waking at the task's time claims it soon.
    proc = fleet.worker("--id", "w1", lease=30.0,
                        env={"TRI24ES_RETRY_BACKOFF": "2s..2s", "POLL_INTERVAL": "60"})
    wait_until(lambda: fleet.state("flaky") == "completed", "the retry completed")
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is ev.RequeueReason.RETRY
    assert requeued.not_before is not None
    [failed] = [r for r in fleet.services.store.read_stream("task-flaky")
                if r.type == ev.TaskRequeued.topic]
    due = to_us(requeued.not_before)
    assert 1 * SECOND <= due - failed.recorded_at <= 2 * SECOND  # half the step to all of it
    (_, _first), (_, second) = claims_of(fleet, "flaky")
    assert second >= due  # never before its time
    assert second - due < 5 * SECOND, "the idle worker did not wake at the task's time"
    assert proc.poll() is None


def test_submit_takes_a_retry_backoff_and_refuses_a_bad_one(run: Run) -> None:
    assert run("init").returncode == 0
    done = run("submit", "Flaky", "--id", "f", "--retry-backoff", "30s..1h", "--json")
    assert done.returncode == 0, done.stderr
    shown = run("tasks", "show", "f", "--json")
    assert '"retry_backoff": "30s..3600s"' in shown.stdout
    bad = run("submit", "Flaky", "--id", "g", "--retry-backoff", "soon")
    assert (bad.returncode, bad.stderr) == (
        2, "tri24es: error: bad retry backoff 'soon': expected e.g. 5s..10m, 30s or 0: "
        "nothing submitted\n")
    assert run("tasks", "show", "g").returncode != 0  # nothing written
    env_bad = run("submit", "x", env={"TRI24ES_RETRY_BACKOFF": "soon"})
    assert env_bad.returncode == 2
    assert env_bad.stderr.count("\n") == 1
    assert "TRI24ES_RETRY_BACKOFF" in env_bad.stderr
