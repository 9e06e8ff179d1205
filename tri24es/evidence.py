"""What ``tri24es audit verify`` looks for in a store: evidence of tampering.

The hash chain shows an event changed in place. It cannot show, alone, a log cut short or
rewritten and re-hashed by someone who can write the database, nor views changed with SQL.
So the store is also checked for:

- the append-only guards found missing and restored (``AppendOnlyGuardRestored``, written by
  ``eventlog`` when it opened the store): the window in which events could be deleted or
  rewritten;
- views rebuilt from a broken chain (``BrokenChainAccepted``);
- the kill switch and spend views, compared with a fold of the log (the views safety
  depends on, and small);
- the witness: signed checkpoints of (position, head hash) kept outside the database
  (``tri24es.witness``): the latest one's position no longer reached by the log, or held
  with another hash (the chain from genesis ties every earlier position to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from eventlog import GUARD_RESTORED, EventStore, RecordedEvent
from tri24es import audit
from tri24es import events as ev
from tri24es.witness import Witness

NOTED_TYPES = (GUARD_RESTORED, ev.BrokenChainAccepted.topic)


@dataclass
class Report:
    verified: audit.Verified | None = None
    findings: list[str] = field(default_factory=list)  # evidence: audit verify exits 1
    notes: list[str] = field(default_factory=list)  # what else was checked, and how far


def inspect(store: EventStore, witness: Witness | None = None,
            progress: Callable[[int], None] | None = None) -> Report:
    report = Report()
    latest = witness.read(report.findings) if witness is not None else None
    try:
        report.verified = audit.verify_store(
            store, progress, hashes_at=() if latest is None else (latest.position,),
            noting=NOTED_TYPES)
    except audit.ChainBroken as e:
        report.findings.append(str(e.problem))
    noted = report.verified.noted if report.verified else _noted(store)
    report.findings.extend(_describe(event) for event in noted)
    differences = _views(store)
    if differences:
        report.findings.append(
            f"the kill switch and spend views differ from the log in {len(differences)} rows "
            f"(first: {differences[0]}): changed outside tri24es")
    else:
        report.notes.append("views: the kill switch and spend match the log")
    if witness is not None:
        hashes = report.verified.hashes if report.verified else {}
        witness.compare(store, latest, hashes, report)
    return report


def _noted(store: EventStore) -> list[RecordedEvent]:
    """The noted events of a log whose chain is broken (the chain pass stopped early)."""
    return [e for page in store.read_pages(types=NOTED_TYPES) for e in page]


def _describe(event: RecordedEvent) -> str:
    when = audit.iso_us(event.recorded_at)
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        data = {}
    if event.type == GUARD_RESTORED:
        missing = ", ".join(data.get("missing") or ()) or "?"
        return (f"position {event.position}: the append-only guard was found missing ({missing})"
                f" and restored at {when}: before that, events could have been changed or "
                "deleted without a trace in the chain")
    return (f"position {event.position}: the views were rebuilt from a broken chain at {when} "
            f"(position {data.get('position')}: {data.get('kind')}) by {data.get('by')}")


def _views(store: EventStore) -> list[str]:
    from tri24es.projections.killswitch import KILLSWITCH
    from tri24es.projections.spend import SPEND
    from tri24es.projections.upkeep import verify

    return verify(store, only=(SPEND, KILLSWITCH))
