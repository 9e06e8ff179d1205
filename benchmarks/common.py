"""Shared helpers: every figure is a ratio against raw sqlite3 measured in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Figure:
    """One measured rate beside its baselines: ``plain`` (a raw table with no index but its
    rowid) and, where it applies, ``same`` (raw SQL on a table with the store's own schema)."""

    name: str
    unit: str
    ours: float
    plain: float
    same: float | None = None
    goal: float | None = None  # minimum ratio ours / plain

    def line(self) -> str:
        text = (
            f"{self.name:<36} {self.ours:>10,.0f} {self.unit}  raw {self.plain:>10,.0f}"
            f"  ratio {self.ours / self.plain:.2f}x"
        )
        if self.same is not None:
            text += f"  | raw same schema {self.same:>9,.0f}  ratio {self.ours / self.same:.2f}x"
        if self.goal is not None:
            verdict = "ok" if self.ours / self.plain >= self.goal else "below"
            text += f"  (goal {self.goal:.2f}x: {verdict})"
        return text

    def markdown_row(self) -> str:
        same = "" if self.same is None else f"{self.same:,.0f} ({self.ours / self.same:.2f}x)"
        goal = "" if self.goal is None else f"≥ {self.goal:.2f}x"
        return (
            f"| {self.name} | {self.ours:,.0f} {self.unit} | {self.plain:,.0f} "
            f"| **{self.ours / self.plain:.2f}x** | {goal} | {same} |"
        )


MARKDOWN_HEADER = (
    "| figure | tri24es | raw plain table | ratio | goal | raw, same schema (ratio) |\n"
    "|---|---|---|---|---|---|"
)


def timed(work: Callable[[], int]) -> float:
    """Items per second of one run of ``work`` (which returns how many items it did)."""
    start = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - start)


def interleaved(*contenders: Callable[[], int], rounds: int) -> list[float]:
    """Median rate of each contender, run in alternation so that drift hits all alike."""
    rates: list[list[float]] = [[] for _ in contenders]
    for _ in range(rounds):
        for i, work in enumerate(contenders):
            rates[i].append(timed(work))
    return [statistics.median(r) for r in rates]
