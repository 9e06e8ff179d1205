"""Models paused by hand: no task for the model is claimed until the pause ends or is lifted
(``tri24es models pause|resume``; the claim checks it: ``projections.models``)."""

from __future__ import annotations

from datetime import datetime

from tri24es import events as ev
from tri24es.names import MODELS_STREAM
from tri24es.projections import connection_of
from tri24es.projections.tables.models import model_pauses
from tri24es.services.base import NotFound, ServiceBase, retry_on_conflict


class ModelCommands(ServiceBase):
    @retry_on_conflict
    def pause_model(self, model: str, *, until: datetime | None, by: str | None,
                    reason: str | None = None) -> None:
        """No claim of a task for ``model`` (its own, or its worker's) before ``until``."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            self._append(conn, tx, MODELS_STREAM, [ev.ModelPaused(
                model=model, until=until, by=by, reason=reason)],
                tx.stream_version(MODELS_STREAM))

    @retry_on_conflict
    def resume_model(self, model: str, *, by: str | None) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if all(pause.model != model for pause in model_pauses(conn)):
                raise NotFound(f"model {model!r} is not paused")
            self._append(conn, tx, MODELS_STREAM, [ev.ModelResumed(model=model, by=by)],
                         tx.stream_version(MODELS_STREAM))
