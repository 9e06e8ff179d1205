"""The append-only guards of the events table, and what a store does when one is missing.

UPDATE, DELETE (and on PostgreSQL TRUNCATE) of stored events are refused by triggers. Someone
with write access to the database can drop or disable them, rewrite or delete events, and put
them back; re-creating a missing guard without a word would erase the evidence. So a backend
checks its guards when it opens the store, and when one is missing, disabled or changed, it
restores it *and appends an event saying so* in the same transaction
(``AppendOnlyGuardRestored`` on the stream ``eventlog``), which the opener reports. The event
stays in the log: ``tri24es audit verify`` names it every time.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import orjson

from eventlog.model import NewEvent

#: The stream and type of the event a store appends when it restores its guards.
GUARD_STREAM = "eventlog"
GUARD_RESTORED = "AppendOnlyGuardRestored"


class GuardsRestored(NamedTuple):
    """What opening the store found: the guards that were missing (or disabled, or changed)
    and the position of the event recording that they were restored."""

    missing: tuple[str, ...]
    position: int

    def describe(self, where: str) -> str:
        names = ", ".join(self.missing)
        return (f"the append-only guard of {where} was missing ({names}): someone with write "
                f"access to the store dropped or changed it, and may have changed or deleted "
                f"events; restored, and recorded at position {self.position} "
                "(run `tri24es audit verify`)")


def restored_event(missing: tuple[str, ...]) -> NewEvent:
    data = orjson.dumps({"missing": list(missing)})
    return NewEvent(GUARD_RESTORED, data, orjson.dumps({"actor": "eventlog", "pid": os.getpid()}))
