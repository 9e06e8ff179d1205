"""What a run measured, as rows of the README's tables: tri24es beside one baseline or peer,
every run kept, medians and per-run ratios, the checks made, the goal; written as JSON and
as markdown."""

from __future__ import annotations

import json
import operator
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


@dataclass
class Series:
    """One contender's measurements of one figure, a value per run."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)  # e.g. duplicates, lost: summed
    error: str | None = None  # why there is no measurement (a peer that failed)

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    def add_checks(self, **counts: int) -> None:
        for name, n in counts.items():
            self.checks[name] = self.checks.get(name, 0) + n


@dataclass(frozen=True)
class Goal:
    """``on`` "ratio" (tri24es / the other, per run, median) or "value" (tri24es's median)."""

    on: str
    op: str
    value: float

    def text(self, unit: str) -> str:
        return f"{self.op} {self.value:g}x" if self.on == "ratio" else \
            f"{self.op} {self.value:g} {unit}"


@dataclass
class Row:
    figure: str
    ours: Series
    versus: Series | None = None
    goal: Goal | None = None
    note: str = ""
    note_on: str = ""  # what the note is about in the list under the table (default: figure)

    def ratios(self) -> list[float]:
        if self.versus is None:
            return []
        return [a / b for a, b in zip(self.ours.runs, self.versus.runs, strict=False) if b]

    @property
    def ratio(self) -> float | None:
        r = self.ratios()
        return statistics.median(r) if r else None

    def met(self) -> bool | None:
        if self.goal is None:
            return None
        measured = self.ratio if self.goal.on == "ratio" else self.ours.median
        return None if measured is None else OPS[self.goal.op](measured, self.goal.value)

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "ours": series_dict(self.ours),
                "versus": None if self.versus is None else series_dict(self.versus),
                "ratio": self.ratio, "ratio_runs": self.ratios(),
                "goal": None if self.goal is None else asdict(self.goal), "goal_met": self.met(),
                "note": self.note}

    def markdown(self) -> str:
        ours = value_text(self.ours)
        versus = "" if self.versus is None else f"{self.versus.name} {value_text(self.versus)}"
        ratio = ""
        if self.ratio is not None:
            r = self.ratios()
            ratio = f"**{self.ratio:.2f}x**" + (f" ({min(r):.2f}-{max(r):.2f})" if len(r) > 1
                                                else "")
        elif self.versus is not None and self.versus.error:
            ratio = "n/a"
        goal = ""
        if self.goal is not None:
            verdict = {True: " ✓", False: " ✗", None: ""}[self.met()]
            goal = self.goal.text(self.ours.unit) + verdict
        checks = "; ".join(filter(None, [checks_text(self.ours), checks_text(self.versus)]))
        return f"| {self.figure} | {ours} | {versus} | {ratio} | {goal} | {checks} |"


MARKDOWN_HEADER = ("| figure | tri24es | baseline or peer (same run) | ratio, median of runs"
                   " (range) | goal | checks |\n|---|---|---|---|---|---|")


#: How a peer that was left out on purpose (not a failure) is described.
NOT_RUN = ("skipped", "no peers venv", "not installed (--no-install)")


def series_dict(s: Series) -> dict[str, Any]:
    return {"name": s.name, "unit": s.unit, "median": s.median, "runs": s.runs,
            "checks": s.checks, "error": s.error}


def number(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) >= 0.01 else f"{x:.2g}"


def value_text(s: Series) -> str:
    if s.error:
        first = s.error.splitlines()[0][:80]
        return f"not run: {first}" if s.error.startswith(NOT_RUN) else f"failed: {first}"
    if s.median is None:
        return "not measured"
    return f"{number(s.median)} {s.unit}"


def checks_text(s: Series | None) -> str:
    """"name: ok" when every check counted 0, else the counts that did not."""
    if s is None or not s.checks:
        return ""
    bad = [f"{n} {k.replace('_', ' ')}" for k, n in s.checks.items() if n]
    if bad:
        return f"{s.name}: " + ", ".join(bad)
    return f"{s.name}: " + ("exactly once" if "duplicates" in s.checks else "all present")


@dataclass
class Results:
    started: str
    options: dict[str, Any]
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # load, peers, notes

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("  " + row.markdown(), flush=True)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "options": self.options, "machine": self.machine,
                "sections": self.sections, "rows": [r.as_dict() for r in self.rows]}

    def markdown(self) -> str:
        m = self.machine
        cpu = f" ({m['cpu']}; a fixed Python loop {m['loop_ms']} ms)" if m.get("cpu") else ""
        lines = [f"Measured {self.started} on {m['nproc']} cores{cpu}; load average "
                 f"{fmt_load(m['load_before'])} before, {fmt_load(m.get('load_after'))} after"
                 f" ({'quick' if self.options.get('quick') else 'full'} run).", "",
                 MARKDOWN_HEADER]
        lines += [r.markdown() for r in self.rows]
        seen: set[str] = set()
        notes = []
        for r in self.rows:
            if r.note and r.note not in seen:
                seen.add(r.note)
                notes.append(f"- {r.note_on or r.figure}: {r.note}")
        peers = self.sections.get("peers", {})
        notes += [f"- {name}: {info}" for name, info in peers.items() if info != "ok"]
        notes += [f"- group `{g}` failed: {e.strip().splitlines()[-1]}"
                  for g, e in self.sections.get("failed_groups", {}).items()]
        if notes:
            lines += ["", *notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        js, md = folder / f"{stem}.json", folder / f"{stem}.md"
        js.write_text(json.dumps(self.as_dict(), indent=1) + "\n")
        md.write_text(self.markdown())
        return js, md


def fmt_load(load: list[float] | None) -> str:
    return "?" if not load else " / ".join(f"{x:.2f}" for x in load)
