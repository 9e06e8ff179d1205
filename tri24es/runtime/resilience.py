"""Riding out store faults: what a long-running process does while the store fails for a while.

A lock held past the busy timeout, a PostgreSQL session terminated or a server restarting, a
full disk: these heal, and a worker, a watchdog or a follower that exited on the first one
would leave the fleet unguarded (DESIGN: a safety daemon never exits on a transient error).
So each long-running process retries with a capped, doubling wait and says so once per
outage: one line when it starts, one when it ends. Faults that cannot heal (the store
replaced, the permission to write it gone) are not ``TransientStoreError`` and still stop
the process, with one clear line.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventlog import TransientStoreError

T = TypeVar("T")

#: The first wait after a failure, and the most any wait grows to.
FIRST_WAIT = 0.1
MAX_WAIT = 5.0

log = logging.getLogger("tri24es.resilience")


class Outage:
    """The store outage a process is living through, if any: reported when it starts and
    when it ends; ``failed`` says how long to wait before the next try."""

    def __init__(self, who: str, report: Callable[[str], None] = log.warning) -> None:
        self.who = who
        self.report = report
        self.since: float | None = None
        self.failures = 0
        self._wait = FIRST_WAIT

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: TransientStoreError) -> float:
        """Note a failed try; the seconds to wait before the next (jittered, so that the
        processes of a fleet do not retry in step)."""
        if self.since is None:
            self.since, self._wait = time.monotonic(), FIRST_WAIT
            self.report(f"{self.who}: the store is unavailable, retrying until it is back "
                        f"({error})")
        else:
            self._wait = min(self._wait * 2, MAX_WAIT)
        self.failures += 1
        return self._wait * random.uniform(0.5, 1.0)

    def ok(self) -> None:
        """Note a try that worked: the outage, if there was one, is over."""
        if self.since is not None:
            self.report(f"{self.who}: the store is back after "
                        f"{time.monotonic() - self.since:.1f} s ({self.failures} failed tries)")
            self.since, self.failures = None, 0


def ride_out(fn: Callable[[], T], outage: Outage,
             wait: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, tried again after each transient store fault until it works. ``wait`` may
    raise to give up (e.g. when the process is told to stop meanwhile)."""
    while True:
        try:
            result = fn()
        except TransientStoreError as e:
            wait(outage.failed(e))
            continue
        outage.ok()
        return result
