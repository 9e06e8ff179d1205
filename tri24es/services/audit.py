"""Commands about the log itself: what an operator decided about evidence of tampering."""

from __future__ import annotations

from eventlog import ANY
from tri24es import events as ev
from tri24es.names import AUDIT_STREAM
from tri24es.projections import connection_of
from tri24es.services.base import ServiceBase


class AuditCommands(ServiceBase):
    def accept_broken_chain(self, position: int, kind: str, detail: str) -> int:
        """Record that the views are being rebuilt from a log whose chain is broken at
        ``position``: the decision stays in the log beside the evidence. Its position."""
        event = ev.BrokenChainAccepted(position=position, kind=kind, detail=detail,
                                       by=self.metadata.actor)
        with self.store.transaction() as tx:
            (recorded,) = self._append(connection_of(tx), tx, AUDIT_STREAM, [event], ANY)
        return recorded.position
