"""``print_table``: rows that fit the terminal however narrow it is, and cells that a terminal
shows rather than obeys."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from tri24es.cli.common import print_table, terminal_width

HEADERS = ("TASK", "STATE", "PRIORITY", "TRIES", "RETRIES", "SPENT", "WORKER", "TITLE")
ROW = ("fix-the-login-page-for-good", "queued", "MEDIUM", 0, "0/3", "$0.00", None,
       "修复登录页面的错误并添加测试用例")


@pytest.mark.parametrize("columns", [40, 50, 60, 80])
def test_rows_fit_a_narrow_terminal(columns: int, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    print_table(HEADERS, [ROW, ROW], squeeze="TITLE")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(cell_len(line) <= columns for line in lines), lines


def test_cells_are_shown_not_obeyed(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    title = "a\x1b[31mb\x9b31mc\x7fd\u2028e\u202ef\u2066g\x85h"
    print_table(("ID", "TITLE"), [("x", title), ("y", "family 👩\u200d👩\u200d👧")])
    out = capsys.readouterr().out
    for control in ("\x1b", "\x9b", "\x7f", "\u2028", "\u202e", "\u2066", "\x85"):
        assert control not in out, repr(out)
    assert "a [31mb 31mc d e f g h" in out
    assert "👩\u200d👩\u200d👧" in out  # a joiner is part of what is shown


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "²", ""])
def test_a_columns_that_is_no_width_is_as_if_unset(columns: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    assert terminal_width() == 80  # piped, as under pytest


def test_columns_sets_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "132")
    assert terminal_width() == 132
    monkeypatch.setenv("COLUMNS", "5")
    assert terminal_width() == 20
