"""The model pauses table as readers see it."""

from __future__ import annotations

from dataclasses import dataclass

from tri24es.projections.sql import Db

COLUMNS = "model, until, reason, paused_by, paused_at"


@dataclass(slots=True, frozen=True)
class ModelPause:
    model: str
    until: int | None
    reason: str | None
    by: str | None
    paused_at: int


#: The claim's test that the task's model (its own, else the worker's: the first parameter)
#: is not paused at the time given as the second (run only when some cap or pause exists).
NOT_PAUSED = (
    " AND NOT EXISTS (SELECT 1 FROM model_pauses p"
    " WHERE p.model = coalesce(queue.model, ?) AND (p.until IS NULL OR p.until > ?))")


def model_pauses(conn: Db) -> list[ModelPause]:
    """Every pause, ended or not (one that ended stays until the model is resumed)."""
    return [ModelPause(*r) for r in conn.execute(
        f"SELECT {COLUMNS} FROM model_pauses ORDER BY model")]


def next_pause_end(conn: Db, now_us: int) -> int | None:
    """When the next timed pause ends after ``now_us``."""
    (end,) = conn.execute("SELECT min(until) FROM model_pauses WHERE until > ?",
                          (now_us,)).fetchone()
    return None if end is None else int(end)
