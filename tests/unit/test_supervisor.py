"""The pure parts of ``tri24es up``'s supervisor: the restart backoff and the child list."""

from __future__ import annotations

import pytest

from tri24es.runtime.supervisor import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RESET_AFTER,
    fleet_specs,
    next_backoff,
    worker_prefix,
)


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        (None, 0.0, INITIAL_BACKOFF),  # the first crash
        (None, 500.0, INITIAL_BACKOFF),
        (0.5, 1.0, 1.0),  # quick crashes double the wait
        (1.0, 1.0, 2.0),
        (16.0, 10.0, 30.0),  # ... up to the ceiling
        (30.0, 10.0, 30.0),
        (30.0, RESET_AFTER - 0.1, 30.0),
        (30.0, RESET_AFTER, INITIAL_BACKOFF),  # healthy for a minute: start over
        (8.0, 3600.0, INITIAL_BACKOFF),
    ],
)
def test_next_backoff(previous: float | None, uptime: float, expected: float) -> None:
    assert next_backoff(previous, uptime) == expected


def test_backoff_sequence_of_quick_crashes_reaches_the_ceiling() -> None:
    waits, wait = [], None
    for _ in range(9):
        wait = next_backoff(wait, uptime=0.1)
        waits.append(wait)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert max(waits) == MAX_BACKOFF


def test_backoff_with_custom_limits() -> None:
    assert next_backoff(3.0, 1.0, initial=1.0, maximum=5.0, reset_after=2.0) == 5.0
    assert next_backoff(3.0, 2.0, initial=1.0, maximum=5.0, reset_after=2.0) == 1.0


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 30.0), (-1.0, 30.0), (5.0, 1.0)])
def test_backoff_rejects_bad_limits(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="need 0 < initial <= maximum"):
        next_backoff(None, 0.0, initial=initial, maximum=maximum)


def test_fleet_specs_watcher_then_numbered_workers() -> None:
    specs = fleet_specs(3, exec_command="agent --fast", watcher=True, prefix="box")
    assert [s.name for s in specs] == ["queue-watcher", "box-1", "box-2", "box-3",
                                       "budget-watchdog"]
    assert specs[-1].args == ("budget-watchdog",)
    assert specs[0].args == ("queue-watcher",)
    assert specs[2].args == ("worker", "--id", "box-2", "--exec", "agent --fast")
    assert specs[2].worker_id == "box-2"
    assert specs[2].argv[1:4] == ["-m", "tri24es", "worker"]


def test_fleet_specs_without_watcher_or_exec() -> None:
    specs = fleet_specs(1, exec_command=None, watcher=False, prefix="box", watchdog=False)
    assert [s.args for s in specs] == [("worker", "--id", "box-1")]


@pytest.mark.parametrize(("host", "prefix"), [
    ("host-a", "host-a"), ("rack1.example.org", "rack1"), ("my host/2", "my-host-2"),
    ("...", "worker"),
])
def test_worker_ids_follow_the_host_id(monkeypatch: pytest.MonkeyPatch, host: str,
                                       prefix: str) -> None:
    monkeypatch.setenv("TRI24ES_HOST_ID", host)
    assert worker_prefix() == prefix
    assert fleet_specs(1, exec_command=None, watcher=False)[0].worker_id == f"{prefix}-1"
