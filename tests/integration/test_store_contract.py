"""The event store contract (eventlog/testing.py), on each durable backend in turn."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from eventlog import EventStore, open_store
from eventlog.model import system_clock_us
from eventlog.testing import EventStoreContract, StoreFactory


class TestStoreContract(EventStoreContract):
    @pytest.fixture
    def make_store(self, new_url: Callable[[], str]) -> Iterator[StoreFactory]:
        made: list[EventStore] = []

        def make(clock: Callable[[], int] | None = None) -> EventStore:
            made.append(open_store(new_url(), clock=clock or system_clock_us))
            return made[-1]

        yield make
        for store in made:
            store.close()
