"""Models paused fleet-wide: no task for a paused model is claimed until its pause ends."""

from __future__ import annotations

from tri24es.events import Envelope, ModelPaused, ModelResumed
from tri24es.projections.base import Projection, Row
from tri24es.projections.sql import Db
from tri24es.projections.tables.models import COLUMNS, ModelPause
from tri24es.timeutil import to_us

DDL = """
CREATE TABLE IF NOT EXISTS model_pauses (
    model      TEXT PRIMARY KEY,
    until      INTEGER,            -- µs, or NULL: until resumed
    reason     TEXT,
    paused_by  TEXT,
    paused_at  INTEGER NOT NULL
) WITHOUT ROWID;
"""





ModelsView = dict[str, ModelPause | None]  # None: resumed (kept to be deleted inline)



class ModelsProjection(Projection[ModelsView]):
    name = "models"
    ddl = DDL
    tables = ("model_pauses",)
    handles = frozenset({ModelPaused, ModelResumed})

    def new_view(self) -> ModelsView:
        return {}

    def apply(self, view: ModelsView, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, ModelPaused):
            until = None if event.until is None else to_us(event.until)
            view[event.model] = ModelPause(event.model, until, event.reason, event.by,
                                           envelope.recorded_at)
        elif isinstance(event, ModelResumed):
            view[event.model] = None

    def load(self, conn: Db, envelope: Envelope) -> ModelsView | None:
        model: str = envelope.event.model  # type: ignore[attr-defined]
        return {model: None}  # a pause or a resume replaces the row whole

    def save(self, conn: Db, view: ModelsView) -> None:
        for model, pause in view.items():
            conn.execute("DELETE FROM model_pauses WHERE model = ?", (model,))
            if pause is not None:
                conn.execute(f"INSERT INTO model_pauses ({COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                             (pause.model, pause.until, pause.reason, pause.by,
                              pause.paused_at))

    def rows(self, view: ModelsView) -> dict[str, list[Row]]:
        return {"model_pauses": sorted(
            (p.model, p.until, p.reason, p.by, p.paused_at)
            for p in view.values() if p is not None)}






MODELS = ModelsProjection()
