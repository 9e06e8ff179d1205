"""The spend-without-progress rule (runtime/progress.py) against a clock the test moves, and
a real git workspace whose files change."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tri24es.events import NoProgress
from tri24es.runtime.progress import ProgressWatch
from tri24es.scheduling import no_progress_text, parse_no_progress

RULE = NoProgress(usd=Decimal("1"), after_s=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_breaks_only_when_both_the_spend_and_the_time_are_reached() -> None:
    clock = Clock()
    watch = ProgressWatch(RULE, clock=clock)
    watch.saw(b"working\n", spend_line=False, spent=Decimal(0))
    watch.saw(b'{"cost_usd": 0.6}\n', spend_line=True, spent=Decimal("0.6"))
    clock.now += 120
    assert watch.check(Decimal("0.6"), "x") is None  # long enough, but not $1 yet
    watch.saw(b'{"cost_usd": 0.6}\n', spend_line=True, spent=Decimal("1.2"))
    evidence = watch.check(Decimal("1.2"), '{"cost_usd": 0.6}')
    assert evidence is not None
    assert (evidence.spent_usd, evidence.seconds, evidence.last_line) == (
        Decimal("1.2"), 120, '{"cost_usd": 0.6}')


def test_new_lines_are_progress_but_spend_reports_and_repeats_are_not() -> None:
    clock = Clock()
    watch = ProgressWatch(RULE, clock=clock)
    watch.saw(b"retrying...\n", spend_line=False, spent=Decimal(0))
    for _ in range(5):
        clock.now += 30
        watch.saw(b"retrying...\n", spend_line=False, spent=Decimal(5))  # the same line
    assert watch.check(Decimal(5), "retrying...") is not None
    watch.saw(b"a new line\n", spend_line=False, spent=Decimal(5))
    clock.now += 59
    assert watch.check(Decimal(10), "a new line") is None  # $5 more, but 59 s only
    clock.now += 1
    evidence = watch.check(Decimal(10), "a new line")
    assert evidence is not None
    assert evidence.spent_usd == Decimal(5)  # since the last progress, not the attempt's


def test_a_long_last_line_is_cut() -> None:
    clock = Clock()
    watch = ProgressWatch(NoProgress(usd=Decimal(0), after_s=1), clock=clock)
    clock.now += 1
    evidence = watch.check(Decimal(0), "x" * 10_000)
    assert evidence is not None
    assert len(evidence.last_line) == 500


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example", *args],
                   cwd=folder, check=True, capture_output=True)


def test_a_change_in_the_workspace_is_progress(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "one")
    clock = Clock()
    watch = ProgressWatch(RULE, workspace=tmp_path, clock=clock)
    clock.now += 61
    (tmp_path / "a.txt").write_text("two\n")  # an edit
    assert watch.check(Decimal(2), "") is None
    clock.now += 61
    (tmp_path / "new file.txt").write_text("new\n")  # an untracked file, a space in its name
    assert watch.check(Decimal(4), "") is None
    clock.now += 61
    (tmp_path / "a.txt").write_text("three, longer\n")  # a file already changed, again
    assert watch.check(Decimal(6), "") is None
    clock.now += 61
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "two")  # a commit: the head moved
    assert watch.check(Decimal(8), "") is None
    clock.now += 61
    assert watch.check(Decimal(10), "") is not None  # nothing moved since


def test_the_rule_reads_and_prints_as_the_task_field_does() -> None:
    assert parse_no_progress("$2 10m") == NoProgress(usd=Decimal(2), after_s=600)
    assert no_progress_text(parse_no_progress("$0.5 1h30m")) == "$0.5 5400s"
    assert no_progress_text(parse_no_progress("off")) == "off"
    for bad in ("2", "$2", "10m", "$-1 10m", "$2 0s", "$1e3 10m", "$0.00000000001 1m"):
        with pytest.raises(ValueError, match="bad no-progress rule"):
            parse_no_progress(bad)
