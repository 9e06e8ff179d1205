"""Moving a store to another backend: ``tri24es migrate --to postgresql://...``.

The log is copied as it is — positions, versions, event ids, times and hashes — a page per
transaction, each page checked against the hash chain as it arrives (``copy_in``). Then the
whole copy is verified once more from the target, and the views are rebuilt there from it.
A copy that stopped half-way resumes where it stopped: the target's last event must be the
source's event at that position, or nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventlog import EventStore, redact_url
from tri24es.audit import hash_at
from tri24es.errors import Tri24esError
from tri24es.projections.upkeep import install

PAGE = 2000


class MigrationRefused(Tri24esError):
    """The target holds events that are not the source's."""


@dataclass(frozen=True)
class Migrated:
    source: str
    target: str
    resumed_after: int  # events the target already had
    copied: int
    head: int  # the target's last position: the source's head when the copy started
    verified: int  # events whose chain was checked on the target
    behind: int  # events the source gained during the copy (not copied: run again)


def migrate(
    source: EventStore, target: EventStore, progress: Callable[[int], None] | None = None
) -> Migrated:
    """Copy ``source``'s log into ``target`` (empty, or holding a prefix of it), verify the
    chain there and rebuild the views from it."""
    start = target.head()
    end = source.head()
    if start and (start > end or hash_at(source, start) != hash_at(target, start)):
        where = (f"its event {start}" if start <= end
                 else f"{start} events, more than the source has")
        raise MigrationRefused(
            f"{redact_url(target.url)} already holds a different log ({where} is not the "
            "source's): migrate into an empty store"
        )
    copied = 0
    if end > start:
        for page in source.read_pages(start, until_position=end, batch_size=PAGE):
            with target.transaction() as tx:
                tx.copy_in(page)
            copied += len(page)
            if progress is not None:
                progress(len(page))
    verified = target.verify()
    install(target)  # views made from the copied log (caught up, if a run made some before)
    return Migrated(redact_url(source.url), redact_url(target.url), start, copied,
                    target.head(), verified, source.head() - end)

