"""Fleet-wide caps: set and remove them (the claim enforces them: ``projections.limits``)."""

from __future__ import annotations

from tri24es import events as ev
from tri24es.names import LIMITS_STREAM, LimitKey
from tri24es.projections import connection_of
from tri24es.projections.limits import read_limits
from tri24es.services.base import ServiceBase, retry_on_conflict


class LimitCommands(ServiceBase):
    @retry_on_conflict
    def set_limit(self, key: LimitKey, value: str, cap: int, *, by: str | None) -> bool:
        """At most ``cap`` running tasks with ``key=value``. False if it was so already."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if read_limits(conn).get((key.value, value)) == cap:
                return False
            self._append(conn, tx, LIMITS_STREAM,
                         [ev.LimitSet(key=key, value=value, cap=cap, by=by)],
                         tx.stream_version(LIMITS_STREAM))
            return True

    @retry_on_conflict
    def remove_limit(self, key: LimitKey, value: str, *, by: str | None) -> bool:
        """No cap on ``key=value`` any more. False if there was none."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if (key.value, value) not in read_limits(conn):
                return False
            self._append(conn, tx, LIMITS_STREAM,
                         [ev.LimitRemoved(key=key, value=value, by=by)],
                         tx.stream_version(LIMITS_STREAM))
            return True
