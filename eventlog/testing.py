"""The contract every EventStore backend honours, as a pytest class.

A backend's tests subclass ``EventStoreContract`` and provide a ``make_store`` fixture: a
callable ``make_store(clock=None)`` returning a fresh, empty store whose clock (integer
microseconds) is ``clock`` when given. ``store`` defaults to ``make_store()``; a subclass may
override it. Imported by the test suites only, since it needs pytest and hypothesis.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog.errors import CorruptLog, DuplicateEventId, WrongExpectedVersion
from eventlog.model import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    STREAM_EXISTS,
    Expected,
    NewEvent,
    RecordedEvent,
    chain_hash,
    rehash,
)
from eventlog.store import EventStore


class StoreFactory(Protocol):
    def __call__(self, clock: Callable[[], int] | None = None) -> EventStore: ...


class SteppingClock:
    """Returns the given microsecond readings in turn, then keeps returning the last one."""

    def __init__(self, *readings: int) -> None:
        self._readings = list(readings)

    def __call__(self) -> int:
        return self._readings.pop(0) if len(self._readings) > 1 else self._readings[0]


def event(kind: str = "Happened", n: int = 0) -> NewEvent:
    return NewEvent(kind, b'{"n":%d}' % n, b'{"actor":"contract"}')


def positions(events: list[RecordedEvent]) -> list[int]:
    return [e.position for e in events]


def versions(events: list[RecordedEvent]) -> list[int]:
    return [e.version for e in events]


# Each example builds its own store with make_store, so a function-scoped factory is right;
# and every backend's subclass runs the same property, so an example that failed on one
# backend is worth replaying on the others ("differing executors" is the point here).
property_settings = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)


class EventStoreContract:
    @pytest.fixture
    def store(self, make_store: StoreFactory) -> EventStore:
        return make_store()

    # -- append, read_stream, read_all, head ------------------------------------------------

    def test_an_empty_store_has_nothing(self, store: EventStore) -> None:
        assert store.head() == 0
        assert list(store.read_all()) == []
        assert store.read_stream("missing") == []
        assert store.verify() == 0

    def test_append_records_the_events_as_given(self, store: EventStore) -> None:
        first, second = event("Opened", 1), event("Closed", 2)
        recorded = store.append("door-1", [first, second], NO_STREAM)
        assert positions(recorded) == [1, 2]
        assert versions(recorded) == [1, 2]
        for new, stored in zip([first, second], recorded, strict=True):
            assert stored.stream == "door-1"
            assert (stored.event_id, stored.type) == (new.event_id, new.type)
            assert (stored.data, stored.metadata) == (new.data, new.metadata)
        assert store.head() == 2

    def test_streams_are_versioned_independently_in_one_global_order(
        self, store: EventStore
    ) -> None:
        written = []
        for stream in ["a", "b", "a", "c", "a", "b"]:
            written += store.append(stream, [event()])
        assert list(store.read_all()) == written
        assert positions(written) == [1, 2, 3, 4, 5, 6]
        assert versions(store.read_stream("a")) == [1, 2, 3]
        assert positions(store.read_stream("a")) == [1, 3, 5]
        assert versions(store.read_stream("b")) == [1, 2]
        assert versions(store.read_stream("a", from_version=2)) == [2, 3]
        assert store.read_stream("a", from_version=4) == []
        assert store.head() == 6

    def test_last_type_is_the_type_of_a_streams_last_event(self, store: EventStore) -> None:
        store.append("switch", [event("On"), event("Off"), event("On", 1)])
        store.append("other", [event("Off", 2)])
        with store.transaction() as tx:
            assert tx.last_type("switch") == "On"
            assert tx.last_type("nothing") is None
            tx.append("switch", [event("Off", 3)])
            assert tx.last_type("switch") == "Off"  # this transaction's own appends count
        assert store.guards_restored is None  # a fresh store had nothing to restore

    def test_an_origin_is_only_a_hint(self, store: EventStore) -> None:
        """``origin`` (where the stream began) may be wrong: the append goes to the named
        stream at the expected version all the same, or is refused as without it."""
        (first,) = store.append("a", [event()])
        (other,) = store.append("b", [event()])
        store.append("b", [event()])
        with store.transaction() as tx:
            tx.append("a", [event()], 1, origin=first.position)
            tx.append("a", [event()], 2, origin=other.position)  # another stream's origin
            tx.append("a", [event()], 3, origin=other.position + 1)  # not an origin
            tx.append("a", [event()], 4, origin=10**9)  # no event at all
        for stale, origin in [(2, first.position), (0, first.position), (2, other.position)]:
            for batch in ([event()], [event(), event()]):
                with pytest.raises(WrongExpectedVersion), store.transaction() as tx:
                    tx.append("a", batch, stale, origin=origin)
        with store.transaction() as tx:  # batches too
            tx.append("a", [event(), event()], 5, origin=first.position)
            twice = [event(), event()]
            tx.append("a", twice, 7, origin=other.position)
            assert tx.append("a", twice, 7, origin=first.position) == tx.events_by_id(
                [e.event_id for e in twice])  # stored already: the idempotent no-op
        assert versions(store.read_stream("a")) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert versions(store.read_stream("b")) == [1, 2]
        assert store.head() == 11

    def test_an_empty_batch_is_a_no_op(self, store: EventStore) -> None:
        assert store.append("s", [], STREAM_EXISTS) == []
        assert store.head() == 0

    # -- expected version --------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [(0, 0), (0, NO_STREAM), (0, ANY), (2, 2), (2, STREAM_EXISTS), (2, ANY)],
    )
    def test_a_matching_expected_version_is_accepted(
        self, store: EventStore, existing: int, expected: Expected
    ) -> None:
        if existing:
            store.append("s", [event() for _ in range(existing)])
        store.append("other", [event()])
        (recorded,) = store.append("s", [event()], expected)
        assert recorded.version == existing + 1

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [(0, 1), (0, STREAM_EXISTS), (2, 0), (2, 1), (2, 3), (2, NO_STREAM)],
    )
    def test_a_wrong_expected_version_is_rejected(
        self, store: EventStore, existing: int, expected: Expected
    ) -> None:
        if existing:
            store.append("s", [event() for _ in range(existing)])
        store.append("other", [event()])
        with pytest.raises(WrongExpectedVersion, match="'s'") as raised:
            store.append("s", [event()], expected)
        assert (raised.value.stream, raised.value.expected) == ("s", expected)
        assert raised.value.actual == existing
        assert store.head() == existing + 1

    def test_a_conflicting_batch_writes_nothing(self, store: EventStore) -> None:
        before = store.append("s", [event()])
        batch = [event(n=n) for n in range(3)]
        with pytest.raises(WrongExpectedVersion):
            store.append("s", batch, 0)
        assert list(store.read_all()) == before
        # None of the batch's ids was kept: the same batch now goes in as new events.
        assert versions(store.append("s", batch, 1)) == [2, 3, 4]

    def test_fresh_appends_chain_and_number_like_appends(self, store: EventStore) -> None:
        store.append("s", [event()])
        with store.transaction() as tx:
            tx.append("other", [event()])
            first = tx.append_fresh("s", [event(n=1), event(n=2)], 1)
            (last,) = tx.append_fresh("new", [event(n=3)], 0)
            (after,) = tx.append_fresh("s", [event(n=4)], 3)  # sees its own appends
        assert [(e.position, e.stream, e.version) for e in [*first, last, after]] == [
            (3, "s", 2), (4, "s", 3), (5, "new", 1), (6, "s", 4)]
        assert list(store.read_all())[2:] == [*first, last, after]
        assert store.verify() == 6

    @pytest.mark.parametrize("expected", [0, 1, 3, 5])
    def test_a_fresh_append_at_a_wrong_version_rolls_its_transaction_back(
        self, store: EventStore, expected: int
    ) -> None:
        """Wherever the backend checks the version (before the write, with it, at commit),
        the mismatch is WrongExpectedVersion and nothing of the transaction is stored."""
        before = store.append("s", [event(), event()])

        def appends() -> None:
            with store.transaction() as tx:
                tx.append("other", [event()])
                tx.append_fresh("s", [event(n=1)], expected)
                tx.append("other", [event()])

        with pytest.raises(WrongExpectedVersion, match="'s'") as raised:
            appends()
        assert (raised.value.stream, raised.value.expected) == ("s", expected)
        assert raised.value.actual in (2, None)
        assert list(store.read_all()) == before
        assert store.append("s", [event(n=9)], 2)[0].position == 3

    # -- idempotency -------------------------------------------------------------------------

    @pytest.mark.parametrize("expected", [NO_STREAM, 2, STREAM_EXISTS, ANY])
    def test_a_repeated_batch_is_an_idempotent_no_op(
        self, store: EventStore, expected: Expected
    ) -> None:
        batch = [event(n=1), event(n=2)]
        first = store.append("s", batch, NO_STREAM)
        assert store.append("s", batch, expected) == first
        assert store.append("elsewhere", batch[1:]) == first[1:]
        assert store.head() == 2
        assert store.read_stream("elsewhere") == []

    def test_a_repeated_single_event_is_a_no_op_whatever_the_version_or_origin(
        self, store: EventStore
    ) -> None:
        """A single event at an exact version is the one INSERT that checks the version
        (SQLite: a refused row is an IntegrityError, as a stored id is): its id stored
        already is the idempotent no-op, never WrongExpectedVersion, whether the stream is
        still at that version, has moved on, or is found by a right or wrong origin."""
        (first,) = store.append("s", [once := event(n=1)], NO_STREAM)
        (second,) = store.append("s", [again := event(n=2)], 1)
        store.append("s", [event(n=3)], 2)
        (other,) = store.append("t", [event(n=4)], NO_STREAM)
        with store.transaction() as tx:
            for new_stream in (NO_STREAM, 0):  # 0: SQLite's INSERT of a first event
                assert tx.append("s", [once], new_stream) == [first]
                with pytest.raises(WrongExpectedVersion):
                    tx.append("s", [event(n=5)], new_stream)
            for version in (1, 2, 3):
                for origin in (None, first.position, other.position):
                    assert tx.append("s", [again], version, origin) == [second]
            assert tx.append("t", [once], 1, other.position) == [first]  # stored elsewhere
            with pytest.raises(WrongExpectedVersion):  # a new event, stale: refused
                tx.append("s", [event(n=5)], 2, first.position)
        assert versions(store.read_stream("s")) == [1, 2, 3]
        assert store.head() == 4
        assert store.verify() == 4

    @pytest.mark.parametrize("stored_at", [0, 1, 2])
    def test_a_partly_stored_batch_raises_and_writes_nothing(
        self, store: EventStore, stored_at: int
    ) -> None:
        old = event(n=0)
        before = store.append("s", [old])
        batch = [event(n=1), event(n=2)]
        batch.insert(stored_at, old)
        with pytest.raises(DuplicateEventId):
            store.append("s", batch, 1)
        assert list(store.read_all()) == before

    def test_a_batch_repeating_one_id_raises_and_writes_nothing(self, store: EventStore) -> None:
        twice = event()
        with pytest.raises(DuplicateEventId):
            store.append("s", [twice, twice])
        assert store.head() == 0

    # -- transactions ------------------------------------------------------------------------

    def test_a_transaction_commits_several_appends_together(self, store: EventStore) -> None:
        with store.transaction() as tx:
            tx.append("a", [event()], NO_STREAM)
            tx.append("b", [event(), event()], NO_STREAM)
            tx.append("a", [event()], 1)  # sees its own uncommitted append
        assert positions(list(store.read_all())) == [1, 2, 3, 4]
        assert versions(store.read_stream("a")) == [1, 2]
        assert store.verify() == 4

    def test_an_exception_inside_a_transaction_writes_nothing(self, store: EventStore) -> None:
        before = store.append("s", [event()])

        def append_then_fail() -> None:
            with store.transaction() as tx:
                tx.append("s", [event()], 1)
                store.append("t", [event()])  # joins the open transaction
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            append_then_fail()
        assert list(store.read_all()) == before
        # The chain continues from the last committed row, not the rolled-back ones.
        assert positions(store.append("s", [event()], 1)) == [2]
        assert store.verify() == 2

    def test_a_rejected_append_leaves_the_rest_of_its_transaction(self, store: EventStore) -> None:
        stored = event()
        store.append("s", [stored])
        with store.transaction() as tx:
            tx.append("a", [event()], NO_STREAM)
            with pytest.raises(WrongExpectedVersion):
                tx.append("a", [event()], NO_STREAM)
            with pytest.raises(DuplicateEventId):
                tx.append("b", [event(), event(), stored])
            tx.append("c", [event()], NO_STREAM)
        assert [e.stream for e in store.read_all()] == ["s", "a", "c"]
        assert store.verify() == 3

    # -- read_all ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("count", "batch_size"), [(0, 3), (1, 1), (5, 1), (6, 3), (7, 3), (6, 2), (3, 5)]
    )
    def test_read_all_pages_through_every_event(
        self, store: EventStore, count: int, batch_size: int
    ) -> None:
        for n in range(count):
            store.append(f"s-{n % 2}", [event(n=n)])
        assert positions(list(store.read_all(batch_size=batch_size))) == list(range(1, count + 1))

    def test_read_all_after_and_until_a_position(self, store: EventStore) -> None:
        store.append("s", [event(n=n) for n in range(7)])
        assert positions(list(store.read_all(3))) == [4, 5, 6, 7]
        assert list(store.read_all(7)) == []
        assert positions(list(store.read_all(until_position=4))) == [1, 2, 3, 4]
        assert positions(list(store.read_all(2, until_position=4, batch_size=2))) == [3, 4]
        assert positions(list(store.read_all(0, until_position=6, batch_size=3))) == list(
            range(1, 7)
        )
        assert list(store.read_all(4, until_position=2)) == []
        assert positions(list(store.read_all(5, until_position=99))) == [6, 7]

    def test_read_all_filters_by_type(self, store: EventStore) -> None:
        kinds = ["Opened", "Closed", "Locked", "Opened", "Closed", "Opened"]
        for kind in kinds:
            store.append("door", [event(kind)])
        assert positions(list(store.read_all(types=["Opened"]))) == [1, 4, 6]
        assert positions(list(store.read_all(types={"Closed", "Locked"}, batch_size=1))) == [
            2,
            3,
            5,
        ]
        assert positions(list(store.read_all(1, types=iter(["Opened"]), until_position=5))) == [4]
        assert list(store.read_all(types=[])) == []
        assert list(store.read_all(types=["Unknown"])) == []

    @property_settings
    @given(
        kinds=st.lists(st.sampled_from("ABC"), max_size=12),
        after=st.integers(0, 13),
        until=st.none() | st.integers(0, 13),
        wanted=st.none() | st.sets(st.sampled_from("ABD")),
        batch_size=st.integers(1, 4),
    )
    def test_read_all_equals_filtering_the_whole_log(
        self,
        make_store: StoreFactory,
        kinds: list[str],
        after: int,
        until: int | None,
        wanted: set[str] | None,
        batch_size: int,
    ) -> None:
        with make_store() as store:
            for kind in kinds:
                store.append("s", [event(kind)])
            everything = list(store.read_all())
            expected = [
                e
                for e in everything
                if e.position > after
                and (until is None or e.position <= until)
                and (wanted is None or e.type in wanted)
            ]
            assert list(store.read_all(after, wanted, until, batch_size)) == expected

    # -- time and hash chain -----------------------------------------------------------------

    def test_recorded_at_comes_from_the_clock_and_never_decreases(
        self, make_store: StoreFactory
    ) -> None:
        clock = SteppingClock(5_000_000, 3_000_000, 4_000_000, 9_000_000)
        store = make_store(clock)
        times = [store.append("s", [event()])[0].recorded_at for _ in range(4)]
        assert times == [5_000_000, 5_000_000, 5_000_000, 9_000_000]
        assert store.verify() == 4

    def test_every_hash_follows_from_its_row_and_the_previous_hash(self, store: EventStore) -> None:
        store.append("a", [event(n=1), event(n=2)])
        store.append("b", [event("Other", 3)])
        events = list(store.read_all())
        first = events[0]
        assert first.hash == chain_hash(
            GENESIS_HASH,
            1,
            "a",
            1,
            first.event_id,
            first.type,
            first.data,
            first.metadata,
            first.recorded_at,
        )
        previous = GENESIS_HASH
        for e in events:
            assert rehash(previous, e) == e.hash
            previous = e.hash
        assert len({e.hash for e in events}) == 3
        assert store.verify() == 3

    def test_the_chain_depends_only_on_the_contents(self, make_store: StoreFactory) -> None:
        batch = [event(n=1), event("Other", 2)]
        hashes = []
        for _ in range(2):
            with make_store(SteppingClock(1_700_000_000_000_000)) as store:
                hashes.append([e.hash for e in store.append("s", batch)])
        assert hashes[0] == hashes[1]

    @property_settings
    @given(
        plan=st.lists(
            st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 3), st.booleans()),
            min_size=1,
            max_size=15,
        )
    )
    def test_positions_and_versions_stay_gap_free(
        self, make_store: StoreFactory, plan: list[tuple[str, int, bool]]
    ) -> None:
        with make_store() as store:
            stream_versions: dict[str, int] = {}
            for stream, size, exact in plan:
                current = stream_versions.get(stream, 0)
                store.append(stream, [event() for _ in range(size)], current if exact else ANY)
                stream_versions[stream] = current + size
            total = sum(stream_versions.values())
            assert positions(list(store.read_all(batch_size=2))) == list(range(1, total + 1))
            for stream, last in stream_versions.items():
                assert versions(store.read_stream(stream)) == list(range(1, last + 1))
            assert store.head() == total
            assert store.verify() == total

    def test_before_commit_actions_run_once_at_commit_and_never_on_rollback(
        self, store: EventStore
    ) -> None:
        ran: list[int] = []
        with store.transaction() as tx:
            tx.append("s", [event(n=1)])
            tx.before_commit(lambda: ran.append(tx.head_row().position))
            with store.transaction() as joined:  # joins: its action waits for the outer commit
                joined.append("s", [event(n=2)])
                joined.before_commit(lambda: ran.append(-1))
            assert ran == []
        assert ran == [2, -1]  # in order, inside the transaction (it sees both appends)
        def roll_back() -> None:
            with store.transaction() as tx:
                tx.before_commit(lambda: ran.append(99))
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            roll_back()
        assert ran == [2, -1]

    def test_a_failing_before_commit_action_rolls_the_transaction_back(
        self, store: EventStore
    ) -> None:
        def fail() -> None:
            raise RuntimeError("refused")

        def append_then_fail() -> None:
            with store.transaction() as tx:
                tx.append("s", [event()])
                tx.before_commit(fail)

        with pytest.raises(RuntimeError):
            append_then_fail()
        assert store.head() == 0
        store.append("s", [event()])  # the store is usable afterwards
        assert store.head() == 1

    # -- copying a log between stores (migration) -------------------------------------------

    def test_a_copied_log_is_the_same_log(self, make_store: StoreFactory) -> None:
        with make_store() as source, make_store() as target:
            source.append("a", [event(n=1), event(n=2)])
            source.append("b", [event("Other", 3)])
            with target.transaction() as tx:
                tx.copy_in(list(source.read_all()))
            assert list(target.read_all()) == list(source.read_all())
            assert target.verify() == 3
            later = target.append("a", [event(n=4)], 2)  # and it goes on from there
            assert (later[0].position, later[0].version) == (4, 3)
            assert target.verify() == 4

    def test_a_copy_continues_from_the_head_a_page_at_a_time(
        self, make_store: StoreFactory
    ) -> None:
        with make_store() as source, make_store() as target:
            for n in range(7):
                source.append(f"s-{n % 3}", [event(n=n)])
            for page in source.read_pages(batch_size=3):
                with target.transaction() as tx:
                    tx.copy_in(page)
            assert list(target.read_all()) == list(source.read_all())

    def test_a_copy_that_arrives_changed_or_out_of_place_writes_nothing(
        self, make_store: StoreFactory
    ) -> None:
        with make_store() as source, make_store() as target:
            source.append("a", [event(n=1), event(n=2), event(n=3)])
            events = list(source.read_all())
            changed = events[1]._replace(data=b'{"n":20}')
            for copy in ([events[0], changed, events[2]], events[1:], [events[0], events[2]]):
                with pytest.raises(CorruptLog), target.transaction() as tx:
                    tx.copy_in(copy)
                assert target.head() == 0
            with target.transaction() as tx:
                tx.copy_in(events[:1])
            with pytest.raises(CorruptLog), target.transaction() as tx:
                tx.copy_in(events[:1])  # again: it does not follow the head any more
            assert list(target.read_all()) == events[:1]

    # -- waiting for changes -----------------------------------------------------------------

    def test_wait_for_change_returns_at_once_when_events_exist(self, store: EventStore) -> None:
        store.append("s", [event(), event()])
        started = time.monotonic()
        assert store.wait_for_change(1, timeout=10) is True
        assert store.wait_for_change(0, timeout=10) is True
        assert time.monotonic() - started < 1

    def test_wait_for_change_gives_up_after_the_timeout(self, store: EventStore) -> None:
        store.append("s", [event()])
        started = time.monotonic()
        assert store.wait_for_change(1, timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2

    def test_wait_for_change_wakes_when_another_thread_appends(self, store: EventStore) -> None:
        store.append("s", [event()])
        results: list[bool] = []
        woke = threading.Event()

        def follow() -> None:
            results.append(store.wait_for_change(1, timeout=10))
            woke.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert not woke.wait(0.2), "wait_for_change returned before anything was appended"
        appended_at = time.monotonic()
        store.append("s", [event()])
        assert woke.wait(5)
        assert time.monotonic() - appended_at < 2  # woken by the append, not the timeout
        follower.join()
        assert results == [True]

    # --- doorbells ----------------------------------------------------------------------

    def test_a_doorbell_wakes_for_its_own_bells_once_their_ring_commits(
            self, store: EventStore) -> None:
        door = store.doorbell(["work", "worker:w1"])
        try:
            assert door.wait(0.05) is False  # nothing rang yet
            with store.transaction() as tx:
                tx.append("s", [event()])
                tx.ring(["other", "worker:w2"])  # not its bells: it sleeps through
            assert door.wait(0.2) is False
            with store.transaction() as tx:
                tx.append("s", [event()])
                tx.ring(["worker:w1"])
            assert door.wait(30) is True
            assert door.wait(0.05) is False  # each ring wakes it once
            door.listen(["other"])
            with store.transaction() as tx:
                tx.ring(["other"])  # a ring needs no event
            assert door.wait(30) is True
        finally:
            door.close()

    def test_a_rolled_back_transaction_rings_nothing(self, store: EventStore) -> None:
        door = store.doorbell(["work"])
        try:
            with contextlib.suppress(RuntimeError), store.transaction() as tx:
                tx.append("s", [event()])
                tx.ring(["work"])
                raise RuntimeError("rolled back")
            assert door.wait(0.2) is False
        finally:
            door.close()

    def test_a_doorbell_wakes_when_another_thread_rings(self, store: EventStore) -> None:
        door = store.doorbell(["work"])
        woke = threading.Event()

        def follow() -> None:
            if door.wait(30):
                woke.set()

        try:
            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            with store.transaction() as tx:
                tx.append("s", [event()])
                tx.ring(["work"])
            assert woke.wait(30)
            follower.join()
        finally:
            door.close()
