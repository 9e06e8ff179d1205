"""The in-memory backend passes the same contract as SQLite, so the fake cannot drift."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eventlog import CorruptLog, EventLogError, NewEvent, RecordedEvent, rehash
from eventlog.memory import MemoryStore
from eventlog.model import system_clock_us
from eventlog.testing import EventStoreContract, StoreFactory


class TestMemoryStore(EventStoreContract):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        def make(clock: Callable[[], int] | None = None) -> MemoryStore:
            return MemoryStore(clock=clock or system_clock_us)

        return make


@pytest.fixture
def five() -> MemoryStore:
    store = MemoryStore()
    for n in range(5):
        store.append(f"s-{n % 2}", [NewEvent("Counted", b'{"n":%d}' % n)])
    return store


def at(store: MemoryStore, position: int) -> RecordedEvent:
    return store.events[position - 1]


@pytest.mark.parametrize("position", [1, 3, 5])
@pytest.mark.parametrize(
    "change",
    [
        {"data": b'{"n":999}'},
        {"metadata": b'{"actor":"mallory"}'},
        {"type": "Forged"},
        {"stream": "s-9"},
        {"version": 7},
        {"event_id": "forged-id"},
        {"recorded_at": 1},
        {"hash": bytes(32)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_verify_names_a_changed_row(
    five: MemoryStore, position: int, change: dict[str, object]
) -> None:
    five.tamper(position, at(five, position)._replace(**change))
    with pytest.raises(CorruptLog, match=f"position {position}: changed") as raised:
        five.verify()
    assert raised.value.position == position


def test_a_row_rewritten_with_its_own_hash_is_caught_at_the_next_row(five: MemoryStore) -> None:
    forged = at(five, 3)._replace(data=b'{"n":999}')
    five.tamper(3, forged._replace(hash=rehash(at(five, 2).hash, forged)))
    with pytest.raises(CorruptLog) as raised:
        five.verify()
    assert raised.value.position == 4


def test_a_row_replaced_by_another_position_is_reported_missing(five: MemoryStore) -> None:
    five.tamper(3, at(five, 4))
    with pytest.raises(CorruptLog, match="position 3: missing") as raised:
        five.verify()
    assert raised.value.position == 3


def test_an_untouched_log_verifies(five: MemoryStore) -> None:
    assert five.verify() == 5


def test_tamper_needs_an_existing_position(five: MemoryStore) -> None:
    with pytest.raises(EventLogError, match="no event at position 6"):
        five.tamper(6, at(five, 5))
