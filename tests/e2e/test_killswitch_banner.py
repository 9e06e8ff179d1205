"""The KILL SWITCH banner: the first line of ``top`` and of ``up``'s live screen while the
switch is on, whatever the terminal's size; gone once it is reset."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

import eventlog
from tests.e2e.test_top import NOW, populate
from tri24es.budget import BudgetLimits
from tri24es.cli.top import frame
from tri24es.projections import connection_of, reads
from tri24es.runtime.up_screen import UpScreen
from tri24es.services import Services

SIZES = [(80, 24), (40, 10)]
Screen = Callable[[Path], RenderableType]


def lines(renderable: RenderableType, width: int, height: int) -> list[str]:
    """What a terminal of that size shows first (a live screen crops what does not fit)."""
    out = StringIO()
    console = Console(file=out, width=width, height=height, color_system=None)
    console.print(renderable, crop=True)
    return out.getvalue().splitlines()[:height]


def top_frame(db: Path) -> RenderableType:
    limits = BudgetLimits(rate_limit=Decimal("0.40"), window_seconds=300)
    with eventlog.open_store(str(db)) as store, store.snapshot() as tx:
        return frame(reads.glance(store, connection_of(tx), limits, NOW))


def up_frame(db: Path) -> RenderableType:
    with eventlog.open_store(str(db)) as store:
        screen = UpScreen(store, None, None, exit_when_done=False)
        assert not screen.tick()  # reads the views; without a terminal, prints a line
        return screen.frame()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "tri24es.db"
    populate(path)  # ends with the kill switch on: "rate over limit"
    return path


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("screen", [top_frame, up_frame])
def test_the_kill_switch_is_the_first_line_on_any_terminal(
        db: Path, screen: Screen, width: int, height: int) -> None:
    shown = lines(screen(db), width, height)
    assert shown[0].startswith("KILL SWITCH: rate over limit")
    assert len(shown[0]) <= width
    if width == 80:  # room for the rest of the sentence on the first line or the next
        assert "budget-watchdog --reset" in " ".join(shown[:3])


@pytest.mark.parametrize("screen", [top_frame, up_frame])
def test_no_banner_once_the_switch_is_reset(db: Path, screen: Screen) -> None:
    with eventlog.open_store(str(db)) as store:
        assert Services(store, actor="test").reset_killswitch(by="test", reason="reviewed")
    shown = lines(screen(db), 80, 24)
    assert not any("KILL SWITCH" in line for line in shown)
    assert shown[0].startswith(("tri24es top", "tri24es up"))


def test_ups_plain_line_starts_with_the_kill_switch(
        db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    up_frame(db)
    printed = capsys.readouterr().out
    assert "] KILL SWITCH: rate over limit | tasks: " in printed
