"""``tri24es top``: a frame rendered from a store whose contents the test knows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

import eventlog
from tests.conftest import PATIENCE
from tests.e2e.conftest import Run
from tri24es import events as ev
from tri24es.budget import BudgetLimits
from tri24es.cli.top import frame, glance, sparkline
from tri24es.names import Priority
from tri24es.projections.upkeep import install
from tri24es.services import Services, TaskSpec
from tri24es.timeutil import from_us

T0 = 1_800_000_000_000_000
SECOND = 1_000_000
NOW = T0 + 7200 * SECOND


def populate(db: Path, at: int = NOW) -> None:
    """Four tasks (one running, one completed, one requeued after a failure, one queued),
    two workers, $2.75 of spend ($0.50 in the last 5 minutes) and an active kill switch."""
    now = [at - 7200 * SECOND]

    def clock() -> int:
        now[0] += SECOND
        return now[0]

    with eventlog.open_store(str(db), clock=clock) as store:
        install(store)
        svc = Services(store, actor="test", clock=clock)
        for task_id, priority in (("a", Priority.CRITICAL), ("b", Priority.HIGH),
                                  ("c", Priority.LOW), ("d", Priority.MEDIUM)):
            svc.submit(TaskSpec(task_id, f"task {task_id}", priority))
        for worker in ("w1", "w2"):
            svc.start_worker(worker, pid=100, pid_start_time=1, host="h")
        assert svc.claim("w1") is not None  # a
        b = svc.claim("w2")
        assert b is not None
        assert b.task_id == "b"
        svc.complete("b", "w2", 1)
        d = svc.claim("w2")
        assert d is not None
        assert d.task_id == "d"
        svc.fail("d", "w2", 1, "agent exited 3")
        for amount, ago in (("2.00", 7000), ("0.25", 600), ("0.50", 30)):
            svc.record_spend(ev.SpendRecorded(
                amount=Decimal(amount), worker="w1", occurred_at=from_us(at - ago * SECOND)))
        svc.activate_killswitch(ev.KillSwitchActivated(
            reason="rate over limit", rate=Decimal("1.5"), daily=Decimal("2.75"),
            rate_limit=Decimal("1"), daily_limit=Decimal("75")))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "tri24es.db"
    populate(path)
    return path


def render(db: Path, width: int = 120, height: int | None = None,
           heartbeats: bool = False) -> str:
    limits = BudgetLimits(rate_limit=Decimal("0.40"), window_seconds=300)
    with eventlog.open_store(str(db)) as store:
        g = glance(store, limits, NOW, heartbeats)
    console = Console(record=True, width=width, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(frame(g, height, heartbeats))
    console.file.close()
    return console.export_text()


def test_a_frame_shows_the_queue_workers_spend_and_kill_switch(db: Path) -> None:
    text = render(db)
    lines = text.splitlines()
    rows = {cells[0]: cells[1:] for line in lines
            if len(cells := line.split()) == 6 and cells[1].isdigit()}
    #                 CRITICAL HIGH MEDIUM LOW total
    assert rows == {"queued": ["0", "0", "1", "1", "2"], "running": ["1", "0", "0", "0", "1"],
                    "completed": ["0", "1", "0", "0", "1"]}  # empty states are left out
    assert any("w1" in line and "busy" in line and " a " in line for line in lines)
    assert any("w2" in line and "idle" in line for line in lines)
    # $0.50 in the last 300 s is $0.10/min, a quarter of the $0.40/min limit
    assert ("spend rate $0.10/min of $0.40/min (25%, window 5m) · peak $0.50/min · total $2.75"
            in lines)
    spark = next(line for line in lines if "▁" in line).split()[2]
    assert spark == "▁" * 49 + "▅" + "▁" * 9 + "█"
    assert lines[0].startswith("KILL SWITCH: rate over limit (since ")  # first, before all
    events = [line for line in lines if "KillSwitchActivated" in line or "SpendRecorded" in line]
    assert len(events) == 4
    assert "last 16 events, heartbeats hidden" in text  # all but 2 heartbeats: no height
    assert not any("WorkerHeartbeat" in line for line in lines)


def test_at_80_by_24_the_kill_switch_and_what_needs_you_come_first(tmp_path: Path) -> None:
    db = tmp_path / "state" / "tri24es.db"
    populate(db)
    with eventlog.open_store(str(db)) as store:  # a busy fleet: many workers, heartbeats
        svc = Services(store, actor="test")
        for n in range(12):
            svc.start_worker(f"worker-{n:02d}-with-a-long-name-on-host-a", pid=100,
                             pid_start_time=1, host="h")
        for _ in range(30):
            svc.heartbeat("w1")
        svc.submit(TaskSpec("needs-gpu", "needs a gpu", Priority.HIGH, model="gpu"))
    text = render(db, width=80, height=24)
    lines = text.splitlines()
    assert len(lines) <= 24, text
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0].startswith("KILL SWITCH: rate over limit")  # wrapped, never cut
    header = next(n for n, line in enumerate(lines) if line.startswith("tri24es top"))
    assert header <= 3, text
    assert "budget-watchdog" in " ".join(lines[:header])
    assert lines[header + 1].startswith("needs you: ")
    assert any("waiting for model=gpu" in line for line in lines[header + 1:header + 5]), text
    assert any(line.startswith("… ") and "more" in line for line in lines), text
    assert "spend rate" in text
    assert "heartbeats hidden" in text
    assert not any("WorkerHeartbeat" in line for line in lines)
    shown = render(db, width=80, height=40, heartbeats=True)
    assert "WorkerHeartbeat" in shown


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], ""), ([0, 0], "▁▁"), ([0, 1, 2, 4], "▁▄▅█"), ([Decimal("0.001"), 1000], "▂█")],
)
def test_sparkline(values: list[Decimal], expected: str) -> None:
    assert sparkline([Decimal(v) for v in values]) == expected


def test_top_once_prints_one_frame_and_exits(run: Run, project: Path) -> None:
    populate(project / "state" / "tri24es.db")
    result = run("top", "--once", env={"BUDGET_RATE_LIMIT": "2", "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tri24es top") == 1
    assert "of $2.00/min (" in result.stdout
    assert result.stdout.startswith("KILL SWITCH: rate over limit")


def test_top_redraws_when_the_log_changes_and_ctrl_c_exits_0(tmp_path: Path) -> None:
    import os
    import pty
    import select
    import signal
    import subprocess
    import time

    from tests.e2e.conftest import CLI, clean_env

    root = tmp_path / "fleet"
    db = root / "state" / "tri24es.db"
    populate(db)
    head = 18
    main, child_tty = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "top", "--interval", "3600"], env=clean_env(root) | {"COLUMNS": "120"},
        stdin=child_tty, stdout=child_tty, stderr=child_tty, start_new_session=True,
    )
    os.close(child_tty)
    seen = bytearray()

    def await_text(text: bytes, deadline_s: float = PATIENCE) -> None:
        deadline = time.monotonic() + deadline_s
        while text not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared in {bytes(seen[-2000:])!r}"
            if select.select([main], [], [], min(left, 0.2))[0]:
                seen.extend(os.read(main, 65536))

    try:
        await_text(f"log head {head}".encode())
        with eventlog.open_store(str(db)) as store:
            Services(store, actor="test").submit(TaskSpec("e", "task e", Priority.HIGH))
        await_text(f"log head {head + 1}".encode())  # long before --interval: the log woke it
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PATIENCE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
