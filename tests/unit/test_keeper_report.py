"""The keeper's report on its outcome pipe (runtime/agent.py ``parse_report``): its
``spawned`` line, once the agent started, comes before the outcome line."""

from __future__ import annotations

from tri24es.runtime.agent import Outcome, parse_report


def test_the_outcome_is_the_line_after_spawned() -> None:
    assert parse_report("spawned\nexited 0\n") == Outcome("exited", 0)
    assert parse_report("spawned\nexited 256\n") == Outcome("exited", 1)
    assert parse_report("spawned\nterminated 15\n") == Outcome("terminated", -15)


def test_a_failed_start_says_why_without_spawned() -> None:
    assert parse_report("failed No such file or directory: nope\n") == Outcome(
        "failed", None, "No such file or directory: nope")


def test_no_outcome_line_is_a_killed_keeper() -> None:
    assert parse_report("") == Outcome("killed", None)
    assert parse_report("spawned\n") == Outcome("killed", None)
