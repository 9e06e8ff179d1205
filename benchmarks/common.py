"""Shared helpers: every figure is a ratio against raw sqlite3 measured in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Figure:
    name: str
    unit: str
    ours: float
    baseline: float
    goal: float | None = None  # minimum ratio ours/baseline

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline

    def line(self) -> str:
        verdict = ""
        if self.goal is not None:
            verdict = "ok" if self.ratio >= self.goal else "BELOW GOAL"
            verdict = f"  (goal >= {self.goal:.2f}x: {verdict})"
        return (
            f"{self.name:<38} {self.ours:>12,.0f} {self.unit:<10} raw {self.baseline:>12,.0f}"
            f"  ratio {self.ratio:.2f}x{verdict}"
        )


def rate(work: Callable[[], int], repeats: int) -> float:
    """Items per second: the median of ``repeats`` runs of ``work`` (which returns its count)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = work()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def interleaved(
    ours: Callable[[], int], raw: Callable[[], int], rounds: int
) -> tuple[float, float]:
    """Median rates of ``ours`` and ``raw``, run in alternation so drift hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(rate(ours, 1))
        b.append(rate(raw, 1))
    return statistics.median(a), statistics.median(b)
